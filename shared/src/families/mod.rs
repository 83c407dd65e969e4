//! The families, one folder each, and the one list that names them.
//!
//! A family folder holds everything opsqueue knows of one kind of host
//! object that is not host access: its name types, its typed actions (parsed
//! from `(type, payload)` at the edge, so nothing invalid is stored; the
//! worker parses the stored payload again and hands drivers only typed
//! actions), its typed routes as data, its config section and its default
//! refresh. Its driver lives in the worker, in `worker/src/drivers/<family>/`.
//!
//! [`families!`](crate::families) is the one list. This module builds
//! [`Action`] (a typed action of any family), [`FAMILIES`] and the
//! catalogue from it; `config.rs` builds the configuration's sections; the
//! worker builds its driver registry. Adding a family: its folder here, its
//! driver folder, one line in the list.

pub mod family;
pub mod route;

pub mod caddy;
pub mod cloudpanel;
pub mod diag;
pub mod migration;
pub mod pm2;
pub mod pocketbase;
pub mod proxmox;
pub mod script;
pub mod systemd;

use serde_json::Value;

pub use family::{ActionError, ActionInfo, Family, FamilyAction, FamilySection, Reach};

/// A family's action type taken out of [`Action`]: implemented for every
/// family by the one list, so a driver names its action type and nothing
/// else.
pub trait SelectAction: FamilyAction {
    /// This family's action, `None` for another family's.
    fn select(action: &Action) -> Option<&Self>;
}

/// The one list of families: `module: Variant(ActionType, SectionType)
/// [config section]`. It hands the list to `$callback!`, a macro that
/// builds something per family (the [`Action`] enum here, the config
/// sections in `config.rs`, the worker's driver registry).
#[macro_export]
macro_rules! families {
    ($callback:ident) => {
        $callback! {
            diag: Diag(DiagAction, DiagConfig) [diag],
            proxmox: Proxmox(ProxmoxAction, ProxmoxConfig) [proxmox],
            systemd: Systemd(SystemdAction, SystemdConfig) [systemd],
            caddy: Caddy(CaddyAction, CaddyConfig) [caddy],
            pm2: Pm2(Pm2Action, Pm2Config) [pm2],
            script: Script(ScriptAction, ScriptsConfig) [scripts],
            cloudpanel: Cloudpanel(CloudpanelAction, CloudpanelConfig) [cloudpanel],
            pocketbase: Pocketbase(PocketbaseAction, PocketbaseConfig) [pocketbase],
            migration: Migration(MigrationAction, MigrationConfig) [migration],
        }
    };
}

macro_rules! actions {
    ($($module:ident: $variant:ident($action:ident, $section:ident) [$field:ident]),+ $(,)?) => {
        /// A typed action of any family.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Action {
            $($variant($module::$action),)+
        }

        /// Every family, in the order the docs list them.
        pub static FAMILIES: &[&Family] = &[$(&$module::DECLARATION,)+];

        impl Action {
            pub fn parse(kind: &str, payload: Value) -> Result<Action, ActionError> {
                let family = kind.split('.').next().unwrap_or_default();
                $(if family == <$module::$action as FamilyAction>::FAMILY {
                    return <$module::$action as FamilyAction>::parse(kind, payload).map(Action::$variant);
                })+
                Err(ActionError::UnknownType(kind.chars().take(80).collect()))
            }

            fn inner(&self) -> &dyn Describe {
                match self {
                    $(Action::$variant(a) => a,)+
                }
            }

            /// The family's declaration.
            pub fn declaration(&self) -> &'static Family {
                match self {
                    $(Action::$variant(_) => &$module::DECLARATION,)+
                }
            }
        }

        $(impl SelectAction for $module::$action {
            fn select(action: &Action) -> Option<&Self> {
                #[allow(unreachable_patterns)]
                match action {
                    Action::$variant(action) => Some(action),
                    _ => None,
                }
            }
        })+
    };
}

families!(actions);

/// Every operation type, in the order the docs list them.
pub fn catalogue() -> Vec<ActionInfo> {
    FAMILIES
        .iter()
        .flat_map(|family| family.catalogue.iter().copied())
        .collect()
}

/// [`FamilyAction`] without its associated items, so [`Action`] can reach
/// any family's methods through one reference.
trait Describe {
    fn kind(&self) -> &'static str;
    fn payload(&self) -> Value;
    fn resource(&self) -> Option<String>;
    fn rerun_safe(&self) -> bool;
    fn default_timeout_secs(&self) -> i64;
    fn secret_fields(&self) -> &'static [&'static str];
}

impl<T: FamilyAction> Describe for T {
    fn kind(&self) -> &'static str {
        FamilyAction::kind(self)
    }
    fn payload(&self) -> Value {
        FamilyAction::payload(self)
    }
    fn resource(&self) -> Option<String> {
        FamilyAction::resource(self)
    }
    fn rerun_safe(&self) -> bool {
        FamilyAction::rerun_safe(self)
    }
    fn default_timeout_secs(&self) -> i64 {
        FamilyAction::default_timeout_secs(self)
    }
    fn secret_fields(&self) -> &'static [&'static str] {
        FamilyAction::secret_fields(self)
    }
}

impl Action {
    /// `family.verb`.
    pub fn kind(&self) -> &'static str {
        self.inner().kind()
    }

    /// The `family` of `family.verb`.
    pub fn family(&self) -> &'static str {
        self.declaration().name
    }

    /// The normalized payload, as stored and as the worker will parse it.
    pub fn payload(&self) -> Value {
        self.inner().payload()
    }

    /// Operations on one resource run one at a time, in the order accepted.
    pub fn resource(&self) -> Option<String> {
        self.inner().resource()
    }

    /// Whether the reaper may run it again after its worker was lost mid-way.
    pub fn rerun_safe(&self) -> bool {
        self.inner().rerun_safe()
    }

    pub fn default_timeout_secs(&self) -> i64 {
        self.inner().default_timeout_secs()
    }

    /// Payload fields stored apart and never shown (see `FamilyAction`).
    pub fn secret_fields(&self) -> &'static [&'static str] {
        self.inner().secret_fields()
    }
}

/// The family named `name`.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|family| family.name == name)
}
