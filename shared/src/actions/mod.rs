//! The action catalogue: every operation type opsqueue knows, parsed from
//! `(type, payload)` into a typed [`Action`] at the edge. The API refuses
//! what does not parse, so nothing invalid is stored; the worker parses the
//! stored payload again and hands drivers only typed actions.
//!
//! Each action also says which resource it serializes on, whether it is safe
//! to re-run after a worker was lost mid-way, and its default timeout.

pub mod caddy;
pub mod cloudpanel;
pub mod diag;
pub mod pm2;
pub mod proxmox;
pub mod script;
pub mod systemd;

use serde_json::Value;

/// One entry of the catalogue, for docs, errors and the OpenAPI document.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ActionInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub summary: &'static str,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("unknown operation type {0:?}")]
    UnknownType(String),
    #[error("invalid payload for {kind}: {message}")]
    InvalidPayload { kind: String, message: String },
}

impl ActionError {
    pub fn invalid(kind: &str, message: impl std::fmt::Display) -> Self {
        ActionError::InvalidPayload {
            kind: kind.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Deserializes a payload struct, naming the type in the error.
pub(crate) fn payload<T: serde::de::DeserializeOwned>(
    kind: &str,
    payload: Value,
) -> Result<T, ActionError> {
    serde_json::from_value(payload).map_err(|e| ActionError::invalid(kind, e))
}

/// What every family's action type tells the catalogue.
pub trait FamilyAction: Sized {
    /// The `family` of `family.verb`.
    const FAMILY: &'static str;
    /// The family's entries, for docs and the OpenAPI document.
    const CATALOGUE: &'static [ActionInfo];

    /// Parses `payload` for `kind` (which starts with `FAMILY.`).
    fn parse(kind: &str, payload: Value) -> Result<Self, ActionError>;
    fn kind(&self) -> &'static str;
    /// The normalized payload, as stored and as the worker will parse it.
    fn payload(&self) -> Value;
    /// Operations on one resource run one at a time, in the order accepted.
    fn resource(&self) -> Option<String>;
    /// Whether the reaper may run it again after its worker was lost mid-way.
    fn rerun_safe(&self) -> bool;
    fn default_timeout_secs(&self) -> i64 {
        300
    }
    /// Top-level payload fields that are secrets (passwords, token
    /// secrets): stored apart and shown as `"***"` in every answer.
    fn secret_fields(&self) -> &'static [&'static str] {
        &[]
    }
    /// Checks what only the configuration can tell (a path inside a
    /// configured base directory, a unit the configuration allows). The API
    /// calls it before it stores an operation, the worker again before it
    /// runs one (each with its own configuration).
    fn check_config(&self, _config: &crate::Config) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Declares [`Action`] over the families: adding a family is one line here.
macro_rules! families {
    ($($variant:ident($module:ident::$ty:ident)),+ $(,)?) => {
        /// A typed action of any family.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Action {
            $($variant($module::$ty),)+
        }

        /// Every operation type, in the order the docs list them.
        pub fn catalogue() -> Vec<ActionInfo> {
            let mut all = Vec::new();
            $(all.extend_from_slice(<$module::$ty as FamilyAction>::CATALOGUE);)+
            all
        }

        impl Action {
            pub fn parse(kind: &str, payload: Value) -> Result<Action, ActionError> {
                let family = kind.split('.').next().unwrap_or_default();
                $(if family == <$module::$ty as FamilyAction>::FAMILY {
                    return <$module::$ty as FamilyAction>::parse(kind, payload).map(Action::$variant);
                })+
                Err(ActionError::UnknownType(kind.chars().take(80).collect()))
            }

            fn inner(&self) -> &dyn Describe {
                match self {
                    $(Action::$variant(a) => a,)+
                }
            }

            pub fn family(&self) -> &'static str {
                match self {
                    $(Action::$variant(_) => <$module::$ty as FamilyAction>::FAMILY,)+
                }
            }
        }
    };
}

families!(
    Diag(diag::DiagAction),
    Proxmox(proxmox::ProxmoxAction),
    Systemd(systemd::SystemdAction),
    Caddy(caddy::CaddyAction),
    Pm2(pm2::Pm2Action),
    Script(script::ScriptAction),
    Cloudpanel(cloudpanel::CloudpanelAction),
);

/// [`FamilyAction`] without its associated items, so [`Action`] can reach
/// any family's methods through one reference.
trait Describe {
    fn kind(&self) -> &'static str;
    fn payload(&self) -> Value;
    fn resource(&self) -> Option<String>;
    fn rerun_safe(&self) -> bool;
    fn default_timeout_secs(&self) -> i64;
    fn secret_fields(&self) -> &'static [&'static str];
    fn check_config(&self, config: &crate::Config) -> Result<(), ActionError>;
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
    fn check_config(&self, config: &crate::Config) -> Result<(), ActionError> {
        FamilyAction::check_config(self, config)
    }
}

impl Action {
    /// `family.verb`.
    pub fn kind(&self) -> &'static str {
        self.inner().kind()
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

    /// What only the configuration can refuse (see `FamilyAction`).
    pub fn check_config(&self, config: &crate::Config) -> Result<(), ActionError> {
        self.inner().check_config(config)
    }
}
