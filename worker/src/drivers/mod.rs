//! The driver registry: which family's driver runs an operation.
//!
//! A driver serves one family (`diag`, `pm2`, `systemd`, …), one folder per
//! family under `drivers/`, each with a `driver(config, link)` that builds
//! it. The [`Registry`] holds the drivers a worker's configuration enables,
//! driven by the one list of families (`opsqueue_shared::families!`); the
//! worker registers the families it has in `workers.drivers`. An operation
//! whose family has no driver here fails with `no_driver`. What a driver is
//! and returns is `driver.rs`.

pub mod caddy;
pub mod cloudpanel;
pub mod diag;
pub mod driver;
pub mod migration;
pub mod pm2;
pub mod pocketbase;
pub mod proxmox;
pub mod script;
pub mod systemd;

use std::collections::BTreeMap;

use opsqueue_shared::families::FamilySection;
use opsqueue_shared::{Action, Config};

use crate::context::Context;
use crate::link::Link;
use driver::{AnyDriver, Driver, DriverError, DriverFuture, Probe};

/// Builds the registry of the families a configuration enables, from the
/// one list of families: each family's driver folder has a `driver`.
macro_rules! registry_from_config {
    ($($module:ident: $variant:ident($action:ident, $section:ident) [$field:ident]),+ $(,)?) => {
        impl Registry {
            /// The drivers this worker's configuration enables (`diag`
            /// always). Drivers that check what opsqueue manages read it
            /// through `link` (never write it).
            pub fn from_config(config: &Config, link: &Link) -> std::io::Result<Self> {
                let mut registry = Self::new();
                $(if config.$field.enabled() {
                    registry.add($module::driver(config, link)?);
                })+
                Ok(registry)
            }
        }
    };
}

opsqueue_shared::families!(registry_from_config);

/// The drivers of one worker, by family.
#[derive(Clone, Default)]
pub struct Registry {
    drivers: BTreeMap<&'static str, AnyDriver>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.drivers.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the driver of its family.
    pub fn add(&mut self, driver: AnyDriver) -> &mut Self {
        self.drivers.insert(driver.family(), driver);
        self
    }

    /// Adds (or replaces) the driver of `D::FAMILY`.
    pub fn register<D: Driver>(&mut self, driver: D) -> &mut Self {
        self.add(AnyDriver::plain(driver))
    }

    /// Adds a driver that can also [`Probe`].
    pub fn register_probed<D: Probe>(&mut self, driver: D) -> &mut Self {
        self.add(AnyDriver::probed(driver))
    }

    /// The families served, for `workers.drivers`.
    pub fn families(&self) -> Vec<String> {
        self.drivers.keys().map(|f| (*f).to_owned()).collect()
    }

    pub fn has(&self, family: &str) -> bool {
        self.drivers.contains_key(family)
    }

    /// The driver call for `action`, or `None` if its family has no driver.
    pub fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> Option<DriverFuture<'a>> {
        Some(self.drivers.get(action.family())?.execute(action, ctx))
    }

    /// Probes every driver that can (see [`AnyDriver::probe`]);
    /// `(family, answer)` for each.
    pub async fn probe_all(
        &self,
        ctx: &Context,
    ) -> Vec<(&'static str, Result<String, DriverError>)> {
        let mut answers = Vec::new();
        for (family, driver) in &self.drivers {
            if let Some(answer) = driver.probe(ctx).await {
                answers.push((*family, answer));
            }
        }
        answers
    }
}
