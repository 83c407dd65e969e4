//! The driver seam: how a typed [`Action`] becomes effects on the host.
//!
//! A driver serves one family (`diag`, `pm2`, `systemd`, …), one file per
//! family. It implements the narrow [`Driver`] trait: pick its own actions
//! out of [`Action`] and execute one with a [`Context`], returning an
//! [`Outcome`] (`changed` plus a JSON object) or a classified
//! [`DriverError`] (retryable or not). Everything else (parsing the stored
//! payload, timeouts, cancellation, retries and backoff, fencing, logs,
//! counters) is the executor's, so a driver never writes to the store and
//! never decides its own fate. Optional abilities live in small extra traits
//! ([`Probe`]), registered beside the driver.
//!
//! Invariants a driver keeps:
//! - every program runs through [`Context::run`] (no shell; the process group
//!   dies on timeout or cancel);
//! - it watches [`Context::cancelled`] in any wait of its own and then
//!   returns promptly (any error will do: the executor knows why it stopped);
//! - an action whose target already is in the desired state completes with
//!   `changed: false`, not an error.
//!
//! The [`Registry`] maps a family to its driver; the worker registers the
//! families it has in `workers.drivers`. An operation whose family has no
//! driver here fails with `no_driver`.

pub mod caddy;
pub mod cloudpanel;
pub mod diag;
pub mod pm2;
pub mod proxmox;
pub mod script;
pub mod systemd;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use opsqueue_shared::{Action, Config, OperationError, Store};
use serde_json::{Map, Value};

use crate::context::Context;

/// Error codes drivers and the runner share; a driver adds its own
/// (`pm2_not_found`, `unit_not_allowed`, …).
pub mod codes {
    /// The program does not exist (or is not on `PATH`): permanent.
    pub const COMMAND_NOT_FOUND: &str = "command_not_found";
    /// The program could not be started for another reason.
    pub const SPAWN_FAILED: &str = "spawn_failed";
    /// A command's own timeout passed: retryable.
    pub const COMMAND_TIMEOUT: &str = "command_timeout";
    /// A command exited non-zero (see [`crate::runner::CommandOutput::check`]).
    pub const COMMAND_FAILED: &str = "command_failed";
    /// Reading or writing a command's pipes failed: retryable.
    pub const COMMAND_IO: &str = "command_io";
    /// The driver saw its operation's cancellation.
    pub const CANCELLED: &str = opsqueue_shared::operation::codes::CANCELLED;
    /// The driver was handed an action of another family (a registry bug).
    pub const WRONG_FAMILY: &str = "wrong_family";
    /// `diag.fail`.
    pub const DIAG_FAILURE: &str = "diag_failure";
}

/// What a successful action did. The stored result is `result` with
/// `changed` added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub changed: bool,
    pub result: Map<String, Value>,
}

impl Outcome {
    /// Something on the host changed.
    pub fn changed() -> Self {
        Self {
            changed: true,
            result: Map::new(),
        }
    }

    /// The target already was in the desired state (or the action only read).
    pub fn unchanged() -> Self {
        Self::default()
    }

    /// Adds a field to the result.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.result.insert(key.to_owned(), value);
        self
    }

    /// The stored result: a JSON object that always has `changed`.
    pub fn into_result(self) -> Value {
        let mut result = self.result;
        result.insert("changed".into(), Value::Bool(self.changed));
        Value::Object(result)
    }
}

/// Why an action failed, and whether running it again could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DriverError {
    pub code: Cow<'static, str>,
    pub message: String,
    pub retryable: bool,
}

impl DriverError {
    /// A transient failure (a daemon not answering, a timeout): the executor
    /// retries it with backoff while attempts remain.
    pub fn retryable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure another attempt cannot fix (unknown process, invalid unit).
    pub fn permanent(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The driver noticed its operation was asked to stop.
    pub fn cancelled() -> Self {
        Self::permanent(codes::CANCELLED, "stopped before it finished")
    }

    pub fn wrong_family(driver: &str, action: &Action) -> Self {
        Self::permanent(
            codes::WRONG_FAMILY,
            format!("the {driver} driver cannot run {}", action.kind()),
        )
    }

    pub fn into_operation_error(self) -> OperationError {
        OperationError {
            code: self.code.into_owned(),
            message: self.message,
            retryable: self.retryable,
        }
    }
}

/// One family's driver.
///
/// ```ignore
/// impl Driver for Pm2 {
///     type Action = Pm2Action;
///     const FAMILY: &'static str = "pm2";
///
///     fn select(action: &Action) -> Option<&Pm2Action> {
///         match action {
///             Action::Pm2(a) => Some(a),
///             _ => None,
///         }
///     }
///
///     async fn execute(&self, action: &Pm2Action, ctx: &Context) -> Result<Outcome, DriverError> {
///         let Pm2Action::Restart(name) = action else { todo!() };
///         let spec = CommandSpec::from_argv(&self.pm2).unwrap().args(["restart", name.as_str()]);
///         ctx.run(spec).await?.check()?;
///         Ok(Outcome::changed().with("name", name))
///     }
/// }
/// ```
pub trait Driver: Send + Sync + 'static {
    /// The family's typed actions (from `opsqueue_shared::actions`).
    type Action: Send + Sync;

    /// The `family` of `family.verb`.
    const FAMILY: &'static str;

    /// This family's action out of the catalogue's enum, `None` for others.
    fn select(action: &Action) -> Option<&Self::Action>;

    /// Executes one action. Called once per attempt; the executor owns
    /// timeout, cancellation, retry and the record of the outcome.
    fn execute(
        &self,
        action: &Self::Action,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outcome, DriverError>> + Send;
}

/// An optional ability: a driver that can check at start that its program or
/// endpoint is there (`pm2 --version`, Caddy's admin API). The worker logs
/// the answer; a failed probe does not stop the worker (operations will fail
/// with the driver's own error, which says more).
pub trait Probe: Driver {
    /// A short description of what was found (a version, an address).
    fn probe(&self, ctx: &Context) -> impl Future<Output = Result<String, DriverError>> + Send;
}

/// The longest a start-up probe may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The boxed future of a type-erased driver call.
pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, DriverError>> + Send + 'a>>;
type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<String, DriverError>> + Send + 'a>>;

/// [`Driver`] with the types erased, so the registry can hold any family.
trait Erased: Send + Sync {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a>;
    fn probe<'a>(&'a self, _ctx: &'a Context) -> Option<ProbeFuture<'a>> {
        None
    }
}

struct Plain<D>(D);
struct Probed<D>(D);

fn dispatch<'a, D: Driver>(
    driver: &'a D,
    action: &'a Action,
    ctx: &'a Context,
) -> DriverFuture<'a> {
    match D::select(action) {
        Some(typed) => Box::pin(driver.execute(typed, ctx)),
        None => {
            let error = DriverError::wrong_family(D::FAMILY, action);
            Box::pin(async move { Err(error) })
        }
    }
}

impl<D: Driver> Erased for Plain<D> {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a> {
        dispatch(&self.0, action, ctx)
    }
}

impl<D: Probe> Erased for Probed<D> {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a> {
        dispatch(&self.0, action, ctx)
    }

    fn probe<'a>(&'a self, ctx: &'a Context) -> Option<ProbeFuture<'a>> {
        Some(Box::pin(self.0.probe(ctx)))
    }
}

/// The drivers of one worker, by family.
#[derive(Clone, Default)]
pub struct Registry {
    drivers: BTreeMap<&'static str, Arc<dyn Erased>>,
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

    /// The drivers this worker's configuration enables. `diag` is always
    /// there; issue 4's families join here when configured. Drivers that
    /// check what opsqueue manages read `store` (never write it).
    pub fn from_config(config: &Config, store: &Store) -> std::io::Result<Self> {
        let mut registry = Self::new();
        registry.register(diag::Diag::new(config)?);
        if config.caddy.enabled {
            registry.register_probed(caddy::Caddy::new(config, store));
        }
        if config.systemd.enabled {
            registry.register_probed(systemd::Systemd::new(config, store));
        }
        if config.proxmox.enabled {
            registry.register(proxmox::Proxmox::new(config, store));
        }
        if config.pm2.enabled {
            registry.register(pm2::Pm2::new(config));
        }
        if config.scripts.enabled {
            registry.register(script::Scripts::new(config));
        }
        if config.cloudpanel.enabled {
            registry.register(cloudpanel::Cloudpanel::new(config));
        }
        Ok(registry)
    }

    /// Adds (or replaces) the driver of `D::FAMILY`.
    pub fn register<D: Driver>(&mut self, driver: D) -> &mut Self {
        self.drivers.insert(D::FAMILY, Arc::new(Plain(driver)));
        self
    }

    /// Adds a driver that can also [`Probe`].
    pub fn register_probed<D: Probe>(&mut self, driver: D) -> &mut Self {
        self.drivers.insert(D::FAMILY, Arc::new(Probed(driver)));
        self
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

    /// Probes every driver that can, each for at most [`PROBE_TIMEOUT`] (a
    /// hung program or endpoint must not hold up the worker's start);
    /// `(family, answer)` for each.
    pub async fn probe_all(
        &self,
        ctx: &Context,
    ) -> Vec<(&'static str, Result<String, DriverError>)> {
        let mut answers = Vec::new();
        for (family, driver) in &self.drivers {
            if let Some(probe) = driver.probe(ctx) {
                let answer = tokio::time::timeout(PROBE_TIMEOUT, probe)
                    .await
                    .unwrap_or_else(|_| {
                        Err(DriverError::retryable(
                            "probe_timeout",
                            format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
                        ))
                    });
                answers.push((*family, answer));
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_result_always_says_whether_it_changed_anything() {
        assert_eq!(
            Outcome::unchanged().into_result(),
            json!({"changed": false})
        );
        assert_eq!(
            Outcome::changed().with("pid", 42).into_result(),
            json!({"changed": true, "pid": 42})
        );
        // A driver cannot forge `changed` through the map.
        assert_eq!(
            Outcome::unchanged().with("changed", true).into_result(),
            json!({"changed": false})
        );
    }

    #[test]
    fn driver_errors_say_whether_a_retry_can_help() {
        let e = DriverError::retryable("daemon_down", "pm2 did not answer");
        assert!(e.retryable);
        assert_eq!(e.to_string(), "daemon_down: pm2 did not answer");
        let e = DriverError::permanent(String::from("unknown_process"), "no web1")
            .into_operation_error();
        assert_eq!(e, OperationError::new("unknown_process", "no web1", false));
    }
}
