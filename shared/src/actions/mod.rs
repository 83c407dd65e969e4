//! The action catalogue: every operation type opsqueue knows, parsed from
//! `(type, payload)` into a typed [`Action`] at the edge. The API refuses
//! what does not parse, so nothing invalid is stored; the worker parses the
//! stored payload again and hands drivers only typed actions.
//!
//! Each action also says which resource it serializes on, whether it is safe
//! to re-run after a worker was lost mid-way, and its default timeout.

pub mod diag;

use serde_json::Value;

/// One entry of the catalogue, for docs, errors and the OpenAPI document.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ActionInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub summary: &'static str,
}

/// Every operation type, in the order the docs list them.
pub fn catalogue() -> Vec<ActionInfo> {
    diag::CATALOGUE.to_vec()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Diag(diag::DiagAction),
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

impl Action {
    pub fn parse(kind: &str, payload: Value) -> Result<Action, ActionError> {
        let family = kind.split('.').next().unwrap_or_default();
        match family {
            diag::FAMILY => diag::DiagAction::parse(kind, payload).map(Action::Diag),
            _ => Err(ActionError::UnknownType(kind.chars().take(80).collect())),
        }
    }

    /// `family.verb`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Diag(a) => a.kind(),
        }
    }

    pub fn family(&self) -> &'static str {
        match self {
            Action::Diag(_) => diag::FAMILY,
        }
    }

    /// The normalized payload, as stored and as the worker will parse it.
    pub fn payload(&self) -> Value {
        match self {
            Action::Diag(a) => a.payload(),
        }
    }

    /// Operations on one resource run one at a time, in the order accepted.
    pub fn resource(&self) -> Option<String> {
        match self {
            Action::Diag(a) => a.resource(),
        }
    }

    /// Whether the reaper may run it again after its worker was lost mid-way.
    pub fn rerun_safe(&self) -> bool {
        match self {
            Action::Diag(a) => a.rerun_safe(),
        }
    }

    pub fn default_timeout_secs(&self) -> i64 {
        match self {
            Action::Diag(_) => 300,
        }
    }
}
