//! The `pm2` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::Pm2Config;
use super::settings::{LogDateFormat, MemorySize};
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};
use crate::names::{AbsolutePath, NameError};

pub const FAMILY: &str = "pm2";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "pm2.start",
        summary: "Starts app {name}: created from the spec (script, interpreter, cwd, args, env, instances) when absent, started when stopped, left alone when online.",
    },
    ActionInfo {
        kind: "pm2.update",
        summary: "Changes app {name}'s settings (instances, env, args, autorestart, max_memory_restart, log_date_format) through pm2's reload, and puts the previous ones back if the app does not come up with them.",
    },
    ActionInfo {
        kind: "pm2.stop",
        summary: "Stops app {name}.",
    },
    ActionInfo {
        kind: "pm2.restart",
        summary: "Restarts app {name} (a stopped app is started).",
    },
    ActionInfo {
        kind: "pm2.reload",
        summary: "Reloads app {name}: zero-downtime in cluster mode, a restart in fork mode.",
    },
    ActionInfo {
        kind: "pm2.delete",
        summary: "Deletes app {name} from pm2's list.",
    },
    ActionInfo {
        kind: "pm2.list",
        summary: "Observes every app (name, status, pid, cpu, memory, restarts; never the environment).",
    },
    ActionInfo {
        kind: "pm2.describe",
        summary: "Observes app {name}.",
    },
    ActionInfo {
        kind: "pm2.logs",
        summary: "Reads the last {lines} lines (default 100) of app {name}'s stdout and stderr logs.",
    },
    ActionInfo {
        kind: "pm2.flush",
        summary: "Empties app {name}'s log files.",
    },
];

crate::name_type!(
    /// A pm2 app name: letters, digits and `._-`, not all digits (pm2 would
    /// read it as an id) and not `all`.
    ProcessNameText, "process name", max = 64, extra = "._-"
);

/// A pm2 app name; see [`ProcessNameText`] for the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessName(ProcessNameText);

impl ProcessName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let name = ProcessNameText::parse(value)?;
        let refuse = |reason: &str| NameError::new(ProcessNameText::WHAT, value, reason);
        if value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "must not be all digits (pm2 would read it as an id)",
            ));
        }
        if value.eq_ignore_ascii_case("all") {
            return Err(refuse("\"all\" names every app for pm2"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "A pm2 app name: letters, digits and `._-`, a letter or digit first, no `..`, \
             not all digits (pm2 would read an id) and not `all`",
            format!(
                "^(?![Aa][Ll][Ll]$)(?![0-9]+$){}",
                &crate::names::name_pattern("._-")[1..]
            ),
            ProcessNameText::MAX,
        )
    }
}

crate::name_schema!(ProcessName);

impl TryFrom<String> for ProcessName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProcessName> for String {
    fn from(name: ProcessName) -> String {
        name.0.into()
    }
}

impl std::fmt::Display for ProcessName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Interpreters pm2 may be told by name; anything else is an absolute path.
pub const INTERPRETERS: &[&str] = &["node", "bun", "python3", "python", "bash", "sh", "none"];

/// `--interpreter`: one of [`INTERPRETERS`] or an absolute path to a
/// program (`/usr/bin/python3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Interpreter(String);

impl Interpreter {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if INTERPRETERS.contains(&value) {
            return Ok(Self(value.to_owned()));
        }
        if value.starts_with('/') {
            return AbsolutePath::parse(value).map(|p| Self(p.into()));
        }
        Err(NameError::new(
            "interpreter",
            value,
            format!("must be one of {INTERPRETERS:?} or an absolute path"),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "`node`, `bun`, `python3`, `python`, `bash`, `sh`, `none`, or an absolute path",
            format!(
                "^(?:{}|{})$",
                INTERPRETERS.join("|"),
                AbsolutePath::pattern()
            ),
            AbsolutePath::MAX,
        )
    }
}

crate::name_schema!(Interpreter);

impl TryFrom<String> for Interpreter {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Interpreter> for String {
    fn from(interpreter: Interpreter) -> String {
        interpreter.0
    }
}

/// The most arguments an app may be given, and the longest one.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 1024;

/// One argument for the app (after `--`). No shell ever reads it, so any
/// printable text is literal; control characters (newline, NUL) are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppArg(String);

impl AppArg {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("argument", value, reason);
        if value.chars().count() > MAX_ARG_LEN {
            return Err(refuse("is over 1024 characters"));
        }
        if value.chars().any(char::is_control) {
            return Err(refuse("must not hold control characters (newline, NUL, …)"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some("Any text without control characters"))
            .pattern(Some(NO_CONTROL_CHARACTERS))
            .max_length(Some(MAX_ARG_LEN))
            .into()
    }
}

crate::name_schema!(AppArg);

/// What `char::is_control` refuses, as a pattern: none of U+0000–U+001F
/// and U+007F–U+009F.
pub const NO_CONTROL_CHARACTERS: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

impl TryFrom<String> for AppArg {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AppArg> for String {
    fn from(arg: AppArg) -> String {
        arg.0
    }
}

/// Variables an app may not set: they steer pm2 itself or the programs the
/// worker runs for it (pm2's CLI gets the app's environment).
pub const RESERVED_ENV: &[&str] = &["PATH", "NODE_OPTIONS", "PM2_*", "LD_*"];

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128
/// bytes, none of [`RESERVED_ENV`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: String| NameError::new("environment variable name", value, reason);
        if value.is_empty() || value.len() > 128 {
            return Err(refuse("must be 1 to 128 bytes".into()));
        }
        if !value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(refuse("must start with a letter or '_'".into()));
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(refuse("may hold only letters, digits and '_'".into()));
        }
        let reserved = RESERVED_ENV
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => value == *pattern,
            });
        if reserved {
            return Err(refuse(format!("is reserved ({RESERVED_ENV:?})")));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let reserved: Vec<String> = RESERVED_ENV
            .iter()
            .map(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => prefix.to_owned(),
                None => format!("{pattern}$"),
            })
            .collect();
        crate::names::string_schema(
            "An environment variable name: letters, digits and `_`, not a digit first; \
             not PATH, NODE_OPTIONS, PM2_* or LD_*",
            format!("^(?!{})[A-Za-z_][A-Za-z0-9_]*$", reserved.join("|")),
            128,
        )
    }
}

crate::name_schema!(EnvName);

impl TryFrom<String> for EnvName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EnvName> for String {
    fn from(name: EnvName) -> String {
        name.0
    }
}

/// Limits on an app's environment.
pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_VALUE_LEN: usize = 4096;

/// The longest `wait_ready` wait, and the most cluster instances.
pub const MAX_LISTEN_TIMEOUT_MS: u64 = 3_600_000;
pub const MAX_INSTANCES: u32 = 64;
pub const MAX_LOG_LINES: u32 = 1_000;
pub const DEFAULT_LOG_LINES: u32 = 100;

/// An optional field that, when sent, holds a value: `null` is refused as
/// the schema says (absent is the way to leave it out).
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An instance count: a whole number as the schema's `integer` counts one
/// (JSON Schema takes `3.0` for an integer, so the parser does too).
fn whole_count<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("invalid value: {number}, expected a whole number"))
        })
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `pm2.start`: with a `script`, the spec to create the app from when it is
/// absent; without one, only an existing app is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub name: ProcessName,
    /// The program or script to run, inside `[pm2] base_dir`.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub script: Option<AbsolutePath>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub interpreter: Option<Interpreter>,
    /// The working directory, inside `[pm2] base_dir`; default: the
    /// script's directory.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub cwd: Option<AbsolutePath>,
    /// The directory the app keeps its state in (a SQLite database, files
    /// it writes), inside `[pm2] base_dir`: what a migration moves.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub state_dir: Option<AbsolutePath>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AppArg>,
    /// Secret field: stored apart, shown as `"***"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, String>,
    /// More than one runs the app in cluster mode (node only).
    #[serde(
        default,
        deserialize_with = "whole_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub instances: Option<u32>,
    /// Wait until the app signals `ready` (`process.send('ready')`), up to
    /// `listen_timeout_ms`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait_ready: bool,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen_timeout_ms: Option<u64>,
    /// Whether pm2 restarts the app when it exits (default true).
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub autorestart: Option<bool>,
    /// pm2 restarts the app when its memory is above this.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_restart: Option<MemorySize>,
    /// The timestamp pm2 puts before each of the app's log lines.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_date_format: Option<LogDateFormat>,
}

impl Start {
    /// The spec's schema, with its rules across fields: the spec fields
    /// need `script`, `listen_timeout_ms` needs `wait_ready: true`, and
    /// more than one instance needs a node app.
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
        let spec_fields = [
            "interpreter",
            "cwd",
            "state_dir",
            "args",
            "env",
            "instances",
            "wait_ready",
            "listen_timeout_ms",
            "autorestart",
            "max_memory_restart",
            "log_date_format",
        ];
        let mut rules = utoipa::openapi::extensions::Extensions::default();
        rules.insert(
            "dependentRequired".into(),
            serde_json::Value::Object(
                spec_fields
                    .iter()
                    .map(|field| {
                        let needs = if *field == "listen_timeout_ms" {
                            serde_json::json!(["script", "wait_ready"])
                        } else {
                            serde_json::json!(["script"])
                        };
                        ((*field).to_owned(), needs)
                    })
                    .collect(),
            ),
        );
        rules.insert(
            "allOf".into(),
            serde_json::json!([
                {"if": {"required": ["listen_timeout_ms"]},
                 "then": {"properties": {"wait_ready": {"const": true}}}},
                {"if": {"required": ["wait_ready"], "properties": {"wait_ready": {"const": true}}},
                 "then": {"required": ["script"]}},
                {"if": {"required": ["instances"], "properties": {"instances": {"minimum": 2}}},
                 "then": {"properties": {"interpreter": {"const": "node"}}}},
            ]),
        );
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("name", ProcessName::schema())
            .required("name")
            .property("script", AbsolutePath::schema())
            .property("interpreter", Interpreter::schema())
            .property("cwd", AbsolutePath::schema())
            .property("state_dir", AbsolutePath::schema())
            .property(
                "args",
                ArrayBuilder::new()
                    .items(AppArg::schema())
                    .max_items(Some(MAX_ARGS)),
            )
            .property("env", env_schema())
            .property(
                "instances",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_INSTANCES)),
            )
            .property(
                "wait_ready",
                ObjectBuilder::new().schema_type(Type::Boolean),
            )
            .property(
                "listen_timeout_ms",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_LISTEN_TIMEOUT_MS)),
            )
            .property(
                "autorestart",
                ObjectBuilder::new().schema_type(Type::Boolean),
            )
            .property("max_memory_restart", MemorySize::schema())
            .property("log_date_format", LogDateFormat::schema())
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .extensions(Some(rules))
            .into()
    }

    /// Whether the payload carries a spec to create the app from.
    pub fn has_spec(&self) -> bool {
        self.script.is_some()
    }

    fn check(&self) -> Result<(), String> {
        let spec_given = self.interpreter.is_some()
            || self.cwd.is_some()
            || self.state_dir.is_some()
            || !self.args.is_empty()
            || !self.env.is_empty()
            || self.instances.is_some()
            || self.wait_ready
            || self.listen_timeout_ms.is_some()
            || self.autorestart.is_some()
            || self.max_memory_restart.is_some()
            || self.log_date_format.is_some();
        if self.script.is_none() && spec_given {
            return Err(
                "a spec (interpreter, cwd, state_dir, args, env, instances, wait_ready, autorestart, \
                 max_memory_restart, log_date_format) needs a script"
                    .into(),
            );
        }
        check_args(&self.args)?;
        check_env(&self.env)?;
        match self.instances {
            Some(n) if !(1..=MAX_INSTANCES).contains(&n) => {
                return Err(format!("instances must be between 1 and {MAX_INSTANCES}"));
            }
            Some(n)
                if n > 1
                    && self
                        .interpreter
                        .as_ref()
                        .is_some_and(|i| i.as_str() != "node") =>
            {
                return Err("more than one instance (cluster mode) is for node apps only".into());
            }
            _ => {}
        }
        match self.listen_timeout_ms {
            Some(_) if !self.wait_ready => {
                return Err("listen_timeout_ms goes with wait_ready".into());
            }
            Some(ms) if !(1..=MAX_LISTEN_TIMEOUT_MS).contains(&ms) => {
                return Err(format!(
                    "listen_timeout_ms must be between 1 and {MAX_LISTEN_TIMEOUT_MS}"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

crate::name_schema!(Start);

fn check_args(args: &[AppArg]) -> Result<(), String> {
    if args.len() > MAX_ARGS {
        return Err(format!("at most {MAX_ARGS} args"));
    }
    Ok(())
}

fn check_env(env: &BTreeMap<EnvName, String>) -> Result<(), String> {
    if env.len() > MAX_ENV_VARS {
        return Err(format!("at most {MAX_ENV_VARS} environment variables"));
    }
    if let Some((name, _)) = env
        .iter()
        .find(|(_, v)| v.chars().count() > MAX_ENV_VALUE_LEN || v.contains('\0'))
    {
        return Err(format!(
            "env {name}: a value must be at most {MAX_ENV_VALUE_LEN} characters and hold no NUL",
            name = name.as_str()
        ));
    }
    Ok(())
}

/// The schema of an app's `env`: names as [`EnvName`], values any text
/// without NUL.
fn env_schema() -> utoipa::openapi::ObjectBuilder {
    use utoipa::openapi::{ObjectBuilder, Type};
    let env_value = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[^\\u0000]*$"))
        .max_length(Some(MAX_ENV_VALUE_LEN))
        .description(Some("Any text without NUL"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("Secret: stored apart, shown as \"***\""))
        .property_names(Some(crate::names::inline(EnvName::schema())))
        .additional_properties(Some(env_value))
        .max_properties(Some(MAX_ENV_VARS))
}

/// The settings `pm2.update` may change.
pub const UPDATE_SETTINGS: &[&str] = &[
    "instances",
    "env",
    "args",
    "autorestart",
    "max_memory_restart",
    "log_date_format",
];

/// `pm2.update`: new settings for an existing app; what is absent is left
/// as it is. `env` sets (adds or overwrites) the variables it names, as
/// pm2's `--update-env` does: pm2 cannot remove a variable from a running
/// app. `args` replaces the whole argument list (`[]`: none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub name: ProcessName,
    #[serde(
        default,
        deserialize_with = "whole_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub instances: Option<u32>,
    /// Secret field: stored apart, shown as `"***"`.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<BTreeMap<EnvName, String>>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Vec<AppArg>>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub autorestart: Option<bool>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_restart: Option<MemorySize>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_date_format: Option<LogDateFormat>,
}

impl Update {
    /// The body's schema: at least one setting, each as the parser takes it.
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "New settings; what is absent is left as it is (at least one setting)",
            ))
            .property("name", ProcessName::schema())
            .required("name")
            .property(
                "instances",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("How many processes (pm2 scale)"))
                    .minimum(Some(1))
                    .maximum(Some(MAX_INSTANCES)),
            )
            .property(
                "env",
                env_schema().description(Some(
                    "Variables to set (added or overwritten; pm2 cannot remove one). \
                     Secret: stored apart, shown as \"***\"",
                )),
            )
            .property(
                "args",
                ArrayBuilder::new()
                    .description(Some("The whole new argument list"))
                    .items(AppArg::schema())
                    .max_items(Some(MAX_ARGS)),
            )
            .property(
                "autorestart",
                ObjectBuilder::new().schema_type(Type::Boolean),
            )
            .property("max_memory_restart", MemorySize::schema())
            .property("log_date_format", LogDateFormat::schema())
            .min_properties(Some(2))
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }

    fn check(&self) -> Result<(), String> {
        let given = self.instances.is_some()
            || self.env.is_some()
            || self.args.is_some()
            || self.autorestart.is_some()
            || self.max_memory_restart.is_some()
            || self.log_date_format.is_some();
        if !given {
            return Err(format!(
                "nothing to change: give at least one of {}",
                UPDATE_SETTINGS.join(", ")
            ));
        }
        if let Some(n) = self.instances
            && !(1..=MAX_INSTANCES).contains(&n)
        {
            return Err(format!("instances must be between 1 and {MAX_INSTANCES}"));
        }
        check_args(self.args.as_deref().unwrap_or_default())?;
        self.env.as_ref().map_or(Ok(()), check_env)
    }
}

crate::name_schema!(Update);

/// An action on one app by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub name: ProcessName,
}

/// `pm2.list` takes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {}

/// `pm2.logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub name: ProcessName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
}

impl Logs {
    pub fn lines(&self) -> u32 {
        self.lines.unwrap_or(DEFAULT_LOG_LINES)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pm2Action {
    Start(Start),
    Update(Update),
    Stop(Named),
    Restart(Named),
    Reload(Named),
    Delete(Named),
    List(List),
    Describe(Named),
    Logs(Logs),
    Flush(Named),
}

impl Pm2Action {
    /// The app the action is about; `None` for `pm2.list`.
    pub fn name(&self) -> Option<&ProcessName> {
        match self {
            Pm2Action::Start(a) => Some(&a.name),
            Pm2Action::Update(a) => Some(&a.name),
            Pm2Action::Stop(a)
            | Pm2Action::Restart(a)
            | Pm2Action::Reload(a)
            | Pm2Action::Delete(a)
            | Pm2Action::Describe(a)
            | Pm2Action::Flush(a) => Some(&a.name),
            Pm2Action::Logs(a) => Some(&a.name),
            Pm2Action::List(_) => None,
        }
    }
}

/// Whether `path` is inside `base`; the error names the field.
fn inside_base(field: &str, path: &AbsolutePath, base: &std::path::Path) -> Result<(), String> {
    if path.is_inside(base) {
        Ok(())
    } else {
        Err(format!(
            "{field} {path} is outside the configured base directory {} ([pm2] base_dir)",
            base.display()
        ))
    }
}

impl FamilyAction for Pm2Action {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = Pm2Config;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        let value = if value.is_null() {
            Value::Object(Default::default())
        } else {
            value
        };
        let action = match kind {
            "pm2.start" => {
                let start: Start = payload(kind, value)?;
                start.check().map_err(|m| ActionError::invalid(kind, m))?;
                Pm2Action::Start(start)
            }
            "pm2.update" => {
                let update: Update = payload(kind, value)?;
                update.check().map_err(|m| ActionError::invalid(kind, m))?;
                Pm2Action::Update(update)
            }
            "pm2.stop" => Pm2Action::Stop(payload(kind, value)?),
            "pm2.restart" => Pm2Action::Restart(payload(kind, value)?),
            "pm2.reload" => Pm2Action::Reload(payload(kind, value)?),
            "pm2.delete" => Pm2Action::Delete(payload(kind, value)?),
            "pm2.list" => Pm2Action::List(payload(kind, value)?),
            "pm2.describe" => Pm2Action::Describe(payload(kind, value)?),
            "pm2.logs" => {
                let logs: Logs = payload(kind, value)?;
                if !(1..=MAX_LOG_LINES).contains(&logs.lines()) {
                    return Err(ActionError::invalid(
                        kind,
                        format!("lines must be between 1 and {MAX_LOG_LINES}"),
                    ));
                }
                Pm2Action::Logs(logs)
            }
            "pm2.flush" => Pm2Action::Flush(payload(kind, value)?),
            _ => return Err(ActionError::UnknownType(kind.to_owned())),
        };
        Ok(action)
    }

    fn kind(&self) -> &'static str {
        match self {
            Pm2Action::Start(_) => "pm2.start",
            Pm2Action::Update(_) => "pm2.update",
            Pm2Action::Stop(_) => "pm2.stop",
            Pm2Action::Restart(_) => "pm2.restart",
            Pm2Action::Reload(_) => "pm2.reload",
            Pm2Action::Delete(_) => "pm2.delete",
            Pm2Action::List(_) => "pm2.list",
            Pm2Action::Describe(_) => "pm2.describe",
            Pm2Action::Logs(_) => "pm2.logs",
            Pm2Action::Flush(_) => "pm2.flush",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            Pm2Action::Start(a) => serde_json::to_value(a),
            Pm2Action::Update(a) => serde_json::to_value(a),
            Pm2Action::Stop(a)
            | Pm2Action::Restart(a)
            | Pm2Action::Reload(a)
            | Pm2Action::Delete(a)
            | Pm2Action::Describe(a)
            | Pm2Action::Flush(a) => serde_json::to_value(a),
            Pm2Action::List(a) => serde_json::to_value(a),
            Pm2Action::Logs(a) => serde_json::to_value(a),
        };
        value.expect("pm2 payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        self.name().map(|name| format!("pm2:{name}"))
    }

    fn rerun_safe(&self) -> bool {
        !matches!(
            self,
            Pm2Action::Restart(_) | Pm2Action::Reload(_) | Pm2Action::Update(_)
        )
    }

    fn default_timeout_secs(&self) -> i64 {
        match self {
            Pm2Action::Start(start) if start.wait_ready => {
                let wait = start.listen_timeout_ms.unwrap_or(3_000) / 1000;
                300 + wait as i64
            }
            _ => 300,
        }
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        match self {
            Pm2Action::Start(_) | Pm2Action::Update(_) => &["env"],
            _ => &[],
        }
    }

    fn check_config(&self, config: &Pm2Config) -> Result<(), ActionError> {
        let Pm2Action::Start(start) = self else {
            return Ok(());
        };
        let base = &config.base_dir;
        let mut checked = Ok(());
        if let Some(script) = &start.script {
            checked = checked.and_then(|()| inside_base("script", script, base));
        }
        if let Some(cwd) = &start.cwd {
            checked = checked.and_then(|()| inside_base("cwd", cwd, base));
        }
        if let Some(state_dir) = &start.state_dir {
            checked = checked.and_then(|()| inside_base("state_dir", state_dir, base));
        }
        checked.map_err(|m| ActionError::invalid(self.kind(), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::families::Action;
    use serde_json::json;

    fn start(payload: Value) -> Result<Action, ActionError> {
        Action::parse("pm2.start", payload)
    }

    #[test]
    fn a_start_spec_parses_and_keeps_its_env_apart() {
        let action = start(json!({
            "name": "web1", "script": "/srv/app/server.js", "cwd": "/srv/app",
            "interpreter": "node", "args": ["--port", "8080"], "env": {"API_TOKEN": "s3cret"},
            "instances": 2,
        }))
        .unwrap();
        assert_eq!(action.kind(), "pm2.start");
        assert_eq!(action.resource().as_deref(), Some("pm2:web1"));
        assert!(action.rerun_safe());
        assert_eq!(action.secret_fields(), ["env"]);
        assert_eq!(
            Action::parse("pm2.start", action.payload()).unwrap(),
            action
        );
        assert!(
            action.check_config(&Config::default()).is_err(),
            "pm2 is off by default"
        );
        let mut config = Config::default();
        config.pm2.enabled = true;
        assert!(action.check_config(&config).is_ok());
        let list = Action::parse("pm2.list", Value::Null).unwrap();
        assert_eq!(list.resource(), None);
        assert_eq!(list.payload(), json!({}));
    }

    #[test]
    fn the_start_schema_names_every_field_the_spec_has() {
        let full = start(json!({
            "name": "w", "script": "/srv/x.js", "interpreter": "node", "cwd": "/srv", "state_dir": "/srv/state",
            "args": ["a"], "env": {"A": "1"}, "instances": 2, "wait_ready": true,
            "listen_timeout_ms": 10, "autorestart": false, "max_memory_restart": "150M",
            "log_date_format": "YYYY-MM-DD HH:mm Z",
        }))
        .unwrap();
        let schema = serde_json::to_value(Start::schema()).unwrap();
        let mut documented: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let payload = full.payload();
        let mut fields: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        fields.sort_unstable();
        assert_eq!(documented, fields);
        assert_eq!(schema["required"], json!(["name"]));
        assert_eq!(schema["additionalProperties"], json!(false));
    }

    #[test]
    fn restart_and_reload_are_not_re_run_after_a_lost_worker_and_the_rest_are() {
        for kind in ["pm2.restart", "pm2.reload"] {
            let action = Action::parse(kind, json!({"name": "web1"})).unwrap();
            assert!(!action.rerun_safe(), "{kind} would interrupt the app twice");
        }
        for kind in ["pm2.stop", "pm2.delete", "pm2.describe", "pm2.flush"] {
            let action = Action::parse(kind, json!({"name": "web1"})).unwrap();
            assert!(action.rerun_safe(), "{kind}");
        }
        let logs = Action::parse("pm2.logs", json!({"name": "web1", "lines": 5})).unwrap();
        assert!(logs.rerun_safe());
        assert!(Action::parse("pm2.list", json!({})).unwrap().rerun_safe());
        let start = start(json!({"name": "web1"})).unwrap();
        assert!(start.rerun_safe(), "a start finds the app online");
    }

    #[test]
    fn names_pm2_would_misread_are_refused() {
        for bad in [
            "", "-x", "--all", "all", "ALL", "0", "42", "a b", "a;b", "a|b", "$(id)", "a`b`",
            "a\nb", "a\0b", "..", "../x", "a..b", "a/b", "ä",
        ] {
            assert!(
                Action::parse("pm2.stop", json!({"name": bad})).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(Action::parse("pm2.stop", json!({"name": "x".repeat(65)})).is_err());
        assert!(Action::parse("pm2.stop", json!({"name": "web-1.v2_x"})).is_ok());
        assert!(Action::parse("pm2.stop", json!({"name": "2web"})).is_ok());
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases = [
            json!({"name": "w", "script": "server.js"}),
            json!({"name": "w", "script": "/srv/../etc/passwd"}),
            json!({"name": "w", "script": "/srv/a b.js"}),
            json!({"name": "w", "script": "/srv/a;rm.js"}),
            json!({"name": "w", "script": "/srv/x.js", "cwd": "relative"}),
            json!({"name": "w", "script": "/srv/x.js", "interpreter": "perl -e"}),
            json!({"name": "w", "script": "/srv/x.js", "interpreter": "-x"}),
            json!({"name": "w", "script": "/srv/x.js", "args": ["a\nb"]}),
            json!({"name": "w", "script": "/srv/x.js", "args": ["a\u{0}b"]}),
            json!({"name": "w", "script": "/srv/x.js", "args": ["x".repeat(1025)]}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"PATH": "/tmp"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"PM2_HOME": "/tmp"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"LD_PRELOAD": "/x.so"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"A-B": "1"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"1A": "1"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"A B": "1"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"A": "a\u{0}b"}}),
            json!({"name": "w", "script": "/srv/x.js", "env": {"A": 1}}),
            json!({"name": "w", "script": "/srv/x.js", "instances": 0}),
            json!({"name": "w", "script": "/srv/x.py", "interpreter": "python3", "instances": 2}),
            json!({"name": "w", "script": "/srv/x.js", "listen_timeout_ms": 10}),
            json!({"name": "w", "env": {"A": "1"}}),
            json!({"name": "w", "script": "/srv/x.js", "unknown": 1}),
        ];
        for payload in cases {
            assert!(
                matches!(
                    start(payload.clone()),
                    Err(ActionError::InvalidPayload { .. })
                ),
                "{payload} was accepted"
            );
        }
        assert!(Action::parse("pm2.logs", json!({"name": "w", "lines": 0})).is_err());
        assert!(Action::parse("pm2.logs", json!({"name": "w", "lines": 1001})).is_err());
        assert!(Action::parse("pm2.list", json!({"name": "w"})).is_err());
        assert!(Action::parse("pm2.explode", json!({})).is_err());
    }

    #[test]
    fn an_update_needs_one_setting_keeps_its_env_apart_and_refuses_what_start_refuses() {
        let full = Action::parse(
            "pm2.update",
            json!({"name": "web", "instances": 3, "env": {"TOKEN": "s3cret"}, "args": [],
                   "autorestart": false, "max_memory_restart": "1G", "log_date_format": "HH:mm"}),
        )
        .unwrap();
        assert_eq!(full.kind(), "pm2.update");
        assert_eq!(full.resource().as_deref(), Some("pm2:web"));
        assert_eq!(full.secret_fields(), ["env"]);
        assert!(!full.rerun_safe(), "a cut-short update is not re-run");
        assert_eq!(Action::parse("pm2.update", full.payload()).unwrap(), full);
        let schema = serde_json::to_value(Update::schema()).unwrap();
        let mut documented: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = UPDATE_SETTINGS.to_vec();
        fields.push("name");
        documented.sort_unstable();
        fields.sort_unstable();
        assert_eq!(documented, fields);
        assert_eq!(schema["minProperties"], 2, "the name and one setting");
        let whole = Action::parse("pm2.update", json!({"name": "web", "instances": 3.0})).unwrap();
        assert_eq!(whole.payload()["instances"], 3, "3.0 is the integer 3");

        for payload in [
            json!({"name": "web"}),
            json!({"name": "web", "instances": 0}),
            json!({"name": "web", "instances": 65}),
            json!({"name": "web", "instances": null}),
            json!({"name": "web", "instances": 2.5}),
            json!({"name": "web", "instances": -1}),
            json!({"name": "web", "env": {"PATH": "/tmp"}}),
            json!({"name": "web", "env": {"A": "a\u{0}b"}}),
            json!({"name": "web", "args": ["a\nb"]}),
            json!({"name": "web", "args": "one"}),
            json!({"name": "web", "autorestart": "yes"}),
            json!({"name": "web", "max_memory_restart": "150"}),
            json!({"name": "web", "max_memory_restart": 157_286_400}),
            json!({"name": "web", "log_date_format": "-x"}),
            json!({"name": "web", "script": "/srv/x.js"}),
            json!({"name": "all", "args": []}),
        ] {
            assert!(
                matches!(
                    Action::parse("pm2.update", payload.clone()),
                    Err(ActionError::InvalidPayload { .. })
                ),
                "{payload} was accepted"
            );
        }
    }

    #[test]
    fn paths_outside_the_base_directory_are_refused_by_the_configuration() {
        let mut config = Config::default();
        config.pm2.enabled = true;
        config.pm2.base_dir = "/srv/apps".into();
        let inside = start(json!({"name": "w", "script": "/srv/apps/w/x.js"})).unwrap();
        assert!(inside.check_config(&config).is_ok());
        for payload in [
            json!({"name": "w", "script": "/srv/apps2/x.js"}),
            json!({"name": "w", "script": "/etc/x.js"}),
            json!({"name": "w", "script": "/srv/apps/x.js", "cwd": "/tmp"}),
        ] {
            let action = start(payload.clone()).unwrap();
            assert!(action.check_config(&config).is_err(), "{payload} passed");
        }
    }
}
