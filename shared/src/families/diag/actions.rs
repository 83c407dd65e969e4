//! The `diag` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::DiagConfig;
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};

pub const FAMILY: &str = "diag";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "diag.noop",
        summary: "Does nothing and completes.",
    },
    ActionInfo {
        kind: "diag.sleep",
        summary: "Sleeps {seconds} (in-process, or as a `sleep` child process with child: true).",
    },
    ActionInfo {
        kind: "diag.fail",
        summary: "Fails with {message}; {retryable} says whether a retry may help.",
    },
];

crate::name_type!(
    /// Groups diag operations on one resource, `diag:<key>`.
    DiagKey, "diag key", max = 64, extra = "._-"
);

/// The longest a diag.sleep may ask for: one day.
pub const MAX_SLEEP_SECS: f64 = 86_400.0;
pub const MAX_MESSAGE_LEN: usize = 1_000;

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Common {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<DiagKey>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub rerun_safe: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noop {
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sleep {
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub child: bool,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fail {
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DiagAction {
    Noop(Noop),
    Sleep(Sleep),
    Fail(Fail),
}

impl FamilyAction for DiagAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = DiagConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        // `deny_unknown_fields` does not work through `flatten`, so the known
        // fields are checked here.
        let known: &[&str] = match kind {
            "diag.noop" => &["key", "rerun_safe"],
            "diag.sleep" => &["seconds", "child", "key", "rerun_safe"],
            "diag.fail" => &["message", "retryable", "key", "rerun_safe"],
            _ => return Err(ActionError::UnknownType(kind.to_owned())),
        };
        let value = if value.is_null() {
            Value::Object(Default::default())
        } else {
            value
        };
        let Some(fields) = value.as_object() else {
            return Err(ActionError::invalid(
                kind,
                "the payload must be a JSON object",
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ActionError::invalid(
                kind,
                format!("unknown field `{unknown}`, expected one of {known:?}"),
            ));
        }
        match kind {
            "diag.noop" => Ok(DiagAction::Noop(payload(kind, value)?)),
            "diag.sleep" => {
                let sleep: Sleep = payload(kind, value)?;
                if !(0.0..=MAX_SLEEP_SECS).contains(&sleep.seconds) {
                    return Err(ActionError::invalid(
                        kind,
                        format!("seconds must be between 0 and {MAX_SLEEP_SECS}"),
                    ));
                }
                Ok(DiagAction::Sleep(sleep))
            }
            _ => {
                let fail: Fail = payload(kind, value)?;
                if fail.message.len() > MAX_MESSAGE_LEN {
                    return Err(ActionError::invalid(
                        kind,
                        format!("message must be at most {MAX_MESSAGE_LEN} bytes"),
                    ));
                }
                Ok(DiagAction::Fail(fail))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            DiagAction::Noop(_) => "diag.noop",
            DiagAction::Sleep(_) => "diag.sleep",
            DiagAction::Fail(_) => "diag.fail",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            DiagAction::Noop(a) => serde_json::to_value(a),
            DiagAction::Sleep(a) => serde_json::to_value(a),
            DiagAction::Fail(a) => serde_json::to_value(a),
        };
        value.expect("diag payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        self.common().key.as_ref().map(|key| format!("diag:{key}"))
    }

    fn rerun_safe(&self) -> bool {
        self.common().rerun_safe
    }
}

impl DiagAction {
    fn common(&self) -> &Common {
        match self {
            DiagAction::Noop(a) => &a.common,
            DiagAction::Sleep(a) => &a.common,
            DiagAction::Fail(a) => &a.common,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    #[test]
    fn a_sleep_parses_and_normalizes_its_payload() {
        let action = Action::parse("diag.sleep", json!({"seconds": 1.5, "key": "k1"})).unwrap();
        assert_eq!(action.kind(), "diag.sleep");
        assert_eq!(action.resource().as_deref(), Some("diag:k1"));
        assert!(action.rerun_safe());
        assert_eq!(action.payload(), json!({"seconds": 1.5, "key": "k1"}));
        let again = Action::parse(action.kind(), action.payload()).unwrap();
        assert_eq!(again, action);
    }

    #[test]
    fn bad_diag_payloads_are_refused_with_the_reason() {
        let cases = [
            ("diag.sleep", json!({})),
            ("diag.sleep", json!({"seconds": "1"})),
            ("diag.sleep", json!({"seconds": -1})),
            ("diag.sleep", json!({"seconds": 1e9})),
            ("diag.noop", json!({"bogus": 1})),
            ("diag.noop", json!({"key": "-x"})),
            ("diag.noop", json!({"key": "a;rm -rf /"})),
            ("diag.noop", json!([1, 2])),
            ("diag.fail", json!({"message": "x".repeat(1001)})),
        ];
        for (kind, payload) in cases {
            let err = Action::parse(kind, payload.clone()).unwrap_err();
            assert!(
                matches!(err, ActionError::InvalidPayload { .. }),
                "{kind} {payload}: {err:?}"
            );
        }
        assert!(matches!(
            Action::parse("diag.explode", json!({})),
            Err(ActionError::UnknownType(_))
        ));
        assert!(matches!(
            Action::parse("nope.noop", json!({})),
            Err(ActionError::UnknownType(_))
        ));
    }

    #[test]
    fn a_missing_payload_is_an_empty_one() {
        let action = Action::parse("diag.noop", Value::Null).unwrap();
        assert_eq!(action.payload(), json!({}));
        assert_eq!(action.resource(), None);
    }
}
