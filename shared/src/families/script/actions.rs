//! The `script` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::ScriptsConfig;
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};
use crate::names::NameError;

pub const FAMILY: &str = "script";

pub(super) const CATALOGUE: &[ActionInfo] = &[ActionInfo {
    kind: "script.run",
    summary: "Runs executable {name} from the scripts directory with {args}; the operation reaches it in the environment and as JSON on stdin, its exit status decides, JSON on its last stdout line is the result.",
}];

crate::name_type!(
    /// A script's file name in the scripts directory.
    ScriptName, "script name", max = 128, extra = "._-"
);

/// An argument replaced by the operation's id when the script runs.
pub const OPERATION_ID_ARG: &str = "{operation_id}";
pub const MAX_ARGS: usize = 32;
pub const MAX_ARG_LEN: usize = 1024;
/// The largest `input`, serialized.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
const ARG_PUNCTUATION: &str = "._-+=:,@/%";

/// One argument: letters, digits and `._-+=:,@/%` (so no spaces, quotes or
/// shell metacharacters, in case a script hands it to a shell), never
/// `..`; or exactly [`OPERATION_ID_ARG`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScriptArg(String);

impl ScriptArg {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value == OPERATION_ID_ARG {
            return Ok(Self(value.to_owned()));
        }
        let refuse = |reason: String| NameError::new("script argument", value, reason);
        if value.is_empty() || value.len() > MAX_ARG_LEN {
            return Err(refuse(format!("must be 1 to {MAX_ARG_LEN} bytes")));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ARG_PUNCTUATION.contains(*c)))
        {
            return Err(refuse(format!(
                "contains {bad:?}; allowed are letters, digits and {ARG_PUNCTUATION:?}"
            )));
        }
        if value.contains("..") {
            return Err(refuse("must not contain \"..\"".into()));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the worker replaces it by the operation's id.
    pub fn is_operation_id(&self) -> bool {
        self.0 == OPERATION_ID_ARG
    }
}

crate::parsed_string!(ScriptArg);

/// `script.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub name: ScriptName,
    #[serde(default)]
    pub args: Vec<ScriptArg>,
    /// Free-form data for the script (a JSON object), on its stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScriptAction {
    Run(Run),
}

impl FamilyAction for ScriptAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = ScriptsConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        if kind != "script.run" {
            return Err(ActionError::UnknownType(kind.to_owned()));
        }
        let run: Run = payload(kind, value)?;
        if run.args.len() > MAX_ARGS {
            return Err(ActionError::invalid(
                kind,
                format!("at most {MAX_ARGS} args"),
            ));
        }
        if let Some(input) = &run.input {
            if !input.is_object() {
                return Err(ActionError::invalid(kind, "input must be a JSON object"));
            }
            if input.to_string().len() > MAX_INPUT_BYTES {
                return Err(ActionError::invalid(
                    kind,
                    format!("input must be at most {MAX_INPUT_BYTES} bytes"),
                ));
            }
        }
        Ok(ScriptAction::Run(run))
    }

    fn kind(&self) -> &'static str {
        "script.run"
    }

    fn payload(&self) -> Value {
        let ScriptAction::Run(run) = self;
        serde_json::to_value(run).expect("script payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        let ScriptAction::Run(run) = self;
        Some(format!("script:{}", run.name))
    }

    fn rerun_safe(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    #[test]
    fn a_run_parses_with_the_operation_id_placeholder() {
        let action = Action::parse(
            "script.run",
            json!({"name": "manage_site.sh", "args": ["create", "{operation_id}"],
                   "input": {"domain": "example.com"}}),
        )
        .unwrap();
        assert_eq!(action.resource().as_deref(), Some("script:manage_site.sh"));
        assert!(!action.rerun_safe());
        let mut config = crate::Config::default();
        assert!(
            action.check_config(&config).is_err(),
            "scripts are off by default"
        );
        config.scripts.enabled = true;
        assert!(action.check_config(&config).is_ok());
        assert_eq!(
            Action::parse("script.run", action.payload()).unwrap(),
            action
        );
    }

    #[test]
    fn names_and_args_a_shell_or_a_path_would_misread_are_refused() {
        for name in [
            "", "-x", "../x", "a/b", "/bin/sh", "..", "a..sh", "a b", "a;b", "a\nb", "a\0b",
            "$(id)",
        ] {
            assert!(
                Action::parse("script.run", json!({"name": name})).is_err(),
                "name {name:?} was accepted"
            );
        }
        assert!(Action::parse("script.run", json!({"name": "x".repeat(129)})).is_err());
        for arg in [
            "",
            "a b",
            "a;b",
            "$(id)",
            "`id`",
            "a|b",
            "a>b",
            "a\nb",
            "a\0b",
            "../etc",
            "'q'",
            "{operation_id}x",
        ] {
            assert!(
                Action::parse("script.run", json!({"name": "s.sh", "args": [arg]})).is_err(),
                "arg {arg:?} was accepted"
            );
        }
        let long = "x".repeat(MAX_ARG_LEN + 1);
        for payload in [
            json!({"name": "s.sh", "args": [long]}),
            json!({"name": "s.sh", "args": vec!["a"; MAX_ARGS + 1]}),
            json!({"name": "s.sh", "input": [1]}),
            json!({"name": "s.sh", "input": {"x": "y".repeat(MAX_INPUT_BYTES)}}),
            json!({"name": "s.sh", "unknown": 1}),
        ] {
            assert!(
                Action::parse("script.run", payload.clone()).is_err(),
                "{payload}"
            );
        }
        assert!(
            Action::parse(
                "script.run",
                json!({"name": "s.sh", "args": ["--force", "a=b", "/srv/x"]})
            )
            .is_ok()
        );
    }
}
