//! What a family is: the contract every folder under `families/` fills in.
//!
//! A family (`pm2`, `systemd`, `caddy`, …) declares, in its own folder:
//! - its typed actions, through [`FamilyAction`] (parse a payload, name the
//!   resource, say whether a re-run is safe, check against its config section);
//! - its config section, through [`FamilySection`] (whether it is enabled,
//!   its own checks, the cron of its default refresh);
//! - one [`Family`] value: its name, its catalogue, its typed routes (as
//!   data, see [`crate::families::route`]) and its default refresh.
//!
//! The one list in `families/mod.rs` ties these together; nothing here knows
//! any particular family.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::route::Route;

/// One entry of the catalogue, for docs, errors and the OpenAPI document.
#[derive(Debug, Clone, Copy, Serialize)]
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
    InvalidPayload {
        kind: String,
        message: String,
        /// Where in the payload, when known (`seconds`, `env.PATH`).
        field: Option<String>,
    },
}

impl ActionError {
    pub fn invalid(kind: &str, message: impl std::fmt::Display) -> Self {
        ActionError::InvalidPayload {
            kind: kind.to_owned(),
            message: message.to_string(),
            field: None,
        }
    }

    /// The payload field at fault, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ActionError::InvalidPayload { field, .. } => field.as_deref(),
            ActionError::UnknownType(_) => None,
        }
    }
}

/// Deserializes a payload struct, naming the type in the error and the
/// field at fault (`seconds`, `steps[0].name`) when serde can tell.
pub fn payload<T: DeserializeOwned>(kind: &str, payload: Value) -> Result<T, ActionError> {
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        ActionError::InvalidPayload {
            kind: kind.to_owned(),
            message: e.into_inner().to_string(),
            field: (path != ".").then_some(path),
        }
    })
}

/// Whether a typed route may act on the object an action names (see
/// [`FamilyAction::reach`]). `POST /api/v1/operations` does not ask: there,
/// only [`FamilyAction::check_config`] refuses, and the worker decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    /// Nothing to check.
    Open,
    /// Refused (`403 forbidden`) with this message.
    Denied(String),
    /// Allowed only when opsqueue manages `name` (of the family's `kind`) on
    /// the operation's target; otherwise refused (`403`) with `refusal`.
    IfManaged {
        kind: &'static str,
        name: String,
        refusal: String,
    },
    /// Acts on `name` (of the family's `kind`), which must be managed on
    /// the operation's target; otherwise `404 not_found` with `missing`.
    IfExists {
        kind: &'static str,
        name: String,
        missing: String,
    },
}

/// What every family's action type tells the catalogue.
pub trait FamilyAction: Sized {
    /// The `family` of `family.verb`.
    const FAMILY: &'static str;
    /// The family's entries, for docs and the OpenAPI document.
    const CATALOGUE: &'static [ActionInfo];
    /// The family's config section (`[pm2]`, `[systemd]`, …).
    type Section: FamilySection;

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
    /// Checks what only the family's configuration can tell (a path inside
    /// a configured base directory, a unit the configuration allows), once
    /// the family is known to be enabled. The API calls it before it stores
    /// an operation, the worker again before it runs one (each with its own
    /// configuration).
    fn check_config(&self, _section: &Self::Section) -> Result<(), ActionError> {
        Ok(())
    }
    /// Whether a typed route may act on what this action names on `target`
    /// (the systemd family's allow and deny patterns, for one).
    fn reach(&self, _section: &Self::Section, _target: &str) -> Reach {
        Reach::Open
    }
}

/// A family's config section: `[pm2]`, `[systemd]`, …
pub trait FamilySection: std::fmt::Debug + Send + Sync {
    /// Whether workers load the driver, the API accepts the family's
    /// operations and the monitor keeps its default refresh.
    fn enabled(&self) -> bool;
    /// The six-field cron of the default refresh schedule (for a family
    /// whose [`Family::refresh`] names one).
    fn refresh_cron(&self) -> Option<&str> {
        None
    }
    /// The section's own checks; a message without the section's name.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A family as the API, the worker and the monitor see it.
#[derive(Debug)]
pub struct Family {
    /// The `family` of `family.verb`.
    pub name: &'static str,
    /// Its config section (`[scripts]` for the `script` family).
    pub section: &'static str,
    /// One line for the OpenAPI document's tag.
    pub description: &'static str,
    pub catalogue: &'static [ActionInfo],
    /// The typed routes the API serves for it.
    pub routes: &'static [Route],
    /// What its typed routes refuse with `403` (see [`Reach`]), for the
    /// OpenAPI document; `None` for a family whose actions are always in reach.
    pub reach: Option<&'static str>,
    /// The operation type of its default refresh schedule
    /// (`refresh-<family>`, payload `{}`), if it observes the host.
    pub refresh: Option<&'static str>,
}

impl Family {
    /// The refusal of an operation of a disabled family.
    pub fn disabled(&self, kind: &str) -> ActionError {
        ActionError::invalid(
            kind,
            format!(
                "the {name} family is disabled; set [{section}] enabled = true \
                 (OPSQUEUE_{env}__ENABLED=true)",
                name = self.name,
                section = self.section,
                env = self.section.to_ascii_uppercase(),
            ),
        )
    }
}

/// A section's check that `argv` names a program (`["pm2"]`, `["sudo", "pm2"]`).
pub fn check_program(key: &str, argv: &[String]) -> Result<(), String> {
    if argv.is_empty() {
        return Err(format!("{key} must name a program"));
    }
    Ok(())
}

/// A section's check that a timeout is at least a second.
pub fn check_timeout(key: &str, secs: u64) -> Result<(), String> {
    if secs == 0 {
        return Err(format!("{key} must be at least 1"));
    }
    Ok(())
}
