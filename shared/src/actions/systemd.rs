//! The `systemd` family: unit management (the Pockestrator's), parsed into
//! types at the edge.
//!
//! - `systemd.start|stop|restart|reload|enable|disable|status {unit}`;
//! - `systemd.logs {unit, lines?, since?}`: journal lines of a unit;
//! - `systemd.unit.install {unit, exec_start, …}`: a service unit rendered
//!   from a spec (never from caller-written unit text), verified, written
//!   atomically to `[systemd] unit_dir`, optionally enabled and started;
//! - `systemd.unit.remove {unit}`: stopped, disabled, its file deleted;
//! - `systemd.refresh {}`: observes every unit the driver may touch.
//!
//! Who may be touched: a unit matched by a `[systemd] deny` pattern never
//! (checked here, against the configuration, before anything is stored);
//! otherwise one matched by an `allow` pattern, or one opsqueue installed
//! itself (the worker checks `managed_objects`). Every unit action's
//! resource is `systemd:<unit>`, so actions on one unit run in order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ActionError, ActionInfo, FamilyAction, payload};
use crate::names::{AbsolutePath, NameError, check_name};

pub const FAMILY: &str = "systemd";

/// The `kind` under which units are observed and managed.
pub const UNIT_KIND: &str = "unit";

const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "systemd.start",
        summary: "Starts {unit}; changed: false when it is already active.",
    },
    ActionInfo {
        kind: "systemd.stop",
        summary: "Stops {unit}; changed: false when it is already inactive.",
    },
    ActionInfo {
        kind: "systemd.restart",
        summary: "Restarts {unit} (starts it when inactive).",
    },
    ActionInfo {
        kind: "systemd.reload",
        summary: "Reloads an active {unit}'s configuration (its ExecReload).",
    },
    ActionInfo {
        kind: "systemd.enable",
        summary: "Enables {unit} at boot; changed: false when it already is.",
    },
    ActionInfo {
        kind: "systemd.disable",
        summary: "Disables {unit} at boot; changed: false when it already is.",
    },
    ActionInfo {
        kind: "systemd.status",
        summary: "Observes {unit}'s state (active, sub, load and file states, main pid).",
    },
    ActionInfo {
        kind: "systemd.logs",
        summary: "The last {lines} journal lines of {unit} (default 100), optionally {since} a time.",
    },
    ActionInfo {
        kind: "systemd.unit.install",
        summary: "Renders a service unit from a spec, verifies it, writes it atomically, reloads systemd; optionally {enable} and {start}.",
    },
    ActionInfo {
        kind: "systemd.unit.remove",
        summary: "Stops, disables and deletes a unit opsqueue installed.",
    },
    ActionInfo {
        kind: "systemd.refresh",
        summary: "Observes every unit the driver may touch (allowed or installed by opsqueue).",
    },
];

/// Unit types a name may end with.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "target",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
];

/// Longest unit name systemd accepts (`UNIT_NAME_MAX` minus the NUL).
const MAX_UNIT_NAME: usize = 255;

/// A unit name such as `web.service` or `pb@site1.service`: letters, digits
/// and `._-@:`, a known type suffix (a name without one gets `.service`, as
/// systemctl does), at most one `@`. No backslash escapes, so units whose
/// names need them (most mounts and devices) cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(String);

impl UnitName {
    pub const WHAT: &'static str = "unit name";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_name(Self::WHAT, value, MAX_UNIT_NAME, "._-@:")?;
        let refuse = |reason: &str| NameError {
            what: Self::WHAT,
            value: value.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        let has_type = value
            .rsplit_once('.')
            .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix));
        let name = if has_type {
            value.to_owned()
        } else {
            format!("{value}.service")
        };
        if name.len() > MAX_UNIT_NAME {
            return Err(refuse("must be at most 255 bytes"));
        }
        let (prefix, _) = name.rsplit_once('.').expect("a type suffix");
        if prefix.is_empty() {
            return Err(refuse("has no name before its type"));
        }
        if name.matches('@').count() > 1 || prefix.starts_with('@') {
            return Err(refuse("may hold one '@' (template@instance), not first"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `service`, `timer`, …
    pub fn unit_type(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(_, t)| t)
    }

    /// `web@.service` (a template, which cannot run itself).
    pub fn is_template(&self) -> bool {
        self.0.contains("@.")
    }
}

impl TryFrom<String> for UnitName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        Self::parse(&value)
    }
}

impl From<UnitName> for String {
    fn from(name: UnitName) -> String {
        name.0
    }
}

impl std::fmt::Display for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pattern over unit names for `[systemd] allow` and `deny`: the unit
/// name characters plus `*` (any run) and `?` (one character), matched
/// against the whole name (`pb-*.service`, `web@*.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPattern(String);

impl UnitPattern {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError {
            what: "unit pattern",
            value: value.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if value.is_empty() || value.len() > MAX_UNIT_NAME {
            return Err(refuse("must be 1 to 255 bytes"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@:*?".contains(c))
        {
            return Err(refuse("allowed are letters, digits, \"._-@:\" and * ?"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn matches(&self, unit: &UnitName) -> bool {
        glob_match(self.0.as_bytes(), unit.as_str().as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*` and `?` over bytes, iteratively (backtracking to the last `*`).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which of `patterns` (as configured) matches `unit`, if any.
pub fn first_match<'a>(patterns: &'a [String], unit: &UnitName) -> Option<&'a str> {
    patterns
        .iter()
        .map(String::as_str)
        .find(|pattern| UnitPattern::parse(pattern).is_ok_and(|compiled| compiled.matches(unit)))
}

/// Refuses a unit the configuration denies (whatever else says it may be
/// touched); `Ok(())` does not mean allowed, only not denied.
pub fn check_not_denied(config: &crate::Config, unit: &UnitName) -> Result<(), String> {
    match first_match(&config.systemd.deny, unit) {
        Some(pattern) => Err(format!(
            "{unit} is out of reach: it matches the [systemd] deny pattern {pattern:?}"
        )),
        None => Ok(()),
    }
}

/// Whether the configuration's `allow` patterns name `unit` (and no `deny`
/// pattern does). A unit opsqueue installed is also allowed; that takes
/// the store, see the worker's driver and the API's routes.
pub fn allowed_by_config(config: &crate::Config, unit: &UnitName) -> bool {
    check_not_denied(config, unit).is_ok() && first_match(&config.systemd.allow, unit).is_some()
}

/// Text that goes on one line of a unit file: printable, no control
/// characters, no backslash (a line continuation), at most `max` bytes.
fn check_line_text(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let refuse = |reason: String| NameError {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.len() > max {
        return Err(refuse(format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(
            "must not contain control characters (newlines, NUL, …)".into(),
        ));
    }
    if value.contains('\\') {
        return Err(refuse("must not contain a backslash".into()));
    }
    Ok(())
}

/// A unit's `Description=`: one printable line, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);

impl Description {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Description {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        check_line_text("description", &value, 256)?;
        if value.trim().is_empty() {
            return Err(NameError {
                what: "description",
                value,
                reason: "must not be blank".into(),
            });
        }
        Ok(Self(value))
    }
}

impl From<Description> for String {
    fn from(d: Description) -> String {
        d.0
    }
}

/// The most arguments `exec_start` may have, and the longest one.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_LEN: usize = 4096;

/// `ExecStart=` as an argument vector: the program as an absolute path in
/// plain form, then arguments of any printable text (spaces, quotes, `$`,
/// `%` and `;` included: the renderer quotes them for systemd, and no shell
/// ever sees them). No control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ExecStart {
    program: AbsolutePath,
    args: Vec<String>,
}

impl ExecStart {
    pub fn program(&self) -> &AbsolutePath {
        &self.program
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }
}

impl TryFrom<Vec<String>> for ExecStart {
    type Error = NameError;

    fn try_from(argv: Vec<String>) -> Result<Self, NameError> {
        let refuse = |reason: String| NameError {
            what: "exec_start",
            value: format!("{:?}", argv.iter().take(3).collect::<Vec<_>>())
                .chars()
                .take(80)
                .collect(),
            reason,
        };
        if argv.len() > MAX_ARGS {
            return Err(refuse(format!("may have at most {MAX_ARGS} elements")));
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(refuse("must name a program".into()));
        };
        let program = AbsolutePath::parse(program)?;
        for arg in args {
            if arg.len() > MAX_ARG_LEN {
                return Err(refuse(format!(
                    "an argument must be at most {MAX_ARG_LEN} bytes"
                )));
            }
            if arg.chars().any(char::is_control) {
                return Err(refuse(
                    "an argument must not contain control characters (newlines, NUL, …)".into(),
                ));
            }
        }
        Ok(Self {
            program,
            args: args.to_vec(),
        })
    }
}

impl From<ExecStart> for Vec<String> {
    fn from(exec: ExecStart) -> Vec<String> {
        std::iter::once(String::from(exec.program))
            .chain(exec.args)
            .collect()
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        let valid = !value.is_empty()
            && value.len() <= 128
            && !value.starts_with(|c: char| c.is_ascii_digit())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(NameError {
                what: "environment variable name",
                value: value.chars().take(80).collect(),
                reason:
                    "must be letters, digits and '_', not starting with a digit, at most 128 bytes"
                        .into(),
            });
        }
        Ok(Self(value))
    }
}

impl From<EnvName> for String {
    fn from(name: EnvName) -> String {
        name.0
    }
}

/// An environment variable's value: printable, no control characters, at
/// most 4096 bytes (quoted by the renderer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvValue(String);

impl EnvValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvValue {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        if value.len() > MAX_ARG_LEN || value.chars().any(char::is_control) {
            return Err(NameError {
                what: "environment value",
                value: value.chars().take(80).collect(),
                reason: format!("must be printable and at most {MAX_ARG_LEN} bytes"),
            });
        }
        Ok(Self(value))
    }
}

impl From<EnvValue> for String {
    fn from(value: EnvValue) -> String {
        value.0
    }
}

crate::name_type!(
    /// A user or group name for `User=` / `Group=`.
    AccountName, "user or group name", max = 32, extra = "_-"
);

/// `Type=` of a rendered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    Simple,
    /// Like simple, but start fails when the program cannot be executed.
    #[default]
    Exec,
    Notify,
    Oneshot,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Exec => "exec",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
        }
    }
}

/// `Restart=` of a rendered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnSuccess,
    #[default]
    OnFailure,
    OnAbnormal,
    OnWatchdog,
    OnAbort,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnSuccess => "on-success",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::OnAbnormal => "on-abnormal",
            RestartPolicy::OnWatchdog => "on-watchdog",
            RestartPolicy::OnAbort => "on-abort",
            RestartPolicy::Always => "always",
        }
    }
}

/// A sandboxing preset for a rendered service (the directives are listed in
/// the README and in the worker's renderer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hardening {
    /// No sandboxing directives.
    None,
    /// No privilege gain, private /tmp, read-only /usr /boot /etc, kernel
    /// modules and cgroups protected: fits almost any service.
    #[default]
    Basic,
    /// `basic` plus a read-only file system except the working directory,
    /// read-only homes, private devices, read-only kernel tunables, no new
    /// namespaces, no capabilities, a system-call filter and no W+X memory
    /// (breaks JIT runtimes such as node).
    Strict,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `{unit}`: the payload of the one-unit actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitRef {
    pub unit: UnitName,
}

/// The most journal lines one `systemd.logs` returns.
pub const MAX_LOG_LINES: u32 = 10_000;
pub const DEFAULT_LOG_LINES: u32 = 100;

/// `systemd.logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub unit: UnitName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

impl Logs {
    pub fn lines(&self) -> u32 {
        self.lines.unwrap_or(DEFAULT_LOG_LINES)
    }
}

/// `systemd.unit.install`: the spec a service unit is rendered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// A `.service`, not a template.
    pub unit: UnitName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    pub exec_start: ExecStart,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<AbsolutePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AccountName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AccountName>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<EnvName, EnvValue>,
    #[serde(rename = "type", default, skip_serializing_if = "is_default")]
    pub service_type: ServiceType,
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: RestartPolicy,
    /// Seconds between a stop and an automatic restart (0 to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub hardening: Hardening,
    /// The target that pulls it in when enabled; default
    /// `multi-user.target` (`default.target` for a user manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_by: Option<UnitName>,
    /// Enable it at boot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable: bool,
    /// Start it (restart it when it runs and its file changed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub start: bool,
}

/// The longest `RestartSec=` accepted.
pub const MAX_RESTART_SEC: u32 = 3600;

impl UnitSpec {
    fn check(&self) -> Result<(), String> {
        if self.unit.unit_type() != "service" || self.unit.as_str().contains('@') {
            return Err(format!(
                "unit must be a plain .service (not a template), got {}",
                self.unit
            ));
        }
        if let Some(target) = &self.wanted_by
            && target.unit_type() != "target"
        {
            return Err(format!("wanted_by must be a .target, got {target}"));
        }
        if self.restart_sec.is_some_and(|s| s > MAX_RESTART_SEC) {
            return Err(format!(
                "restart_sec must be between 0 and {MAX_RESTART_SEC}"
            ));
        }
        if self.environment.len() > 128 {
            return Err("environment may hold at most 128 variables".into());
        }
        Ok(())
    }
}

/// `systemd.refresh`: no fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {}

/// What `systemctl` does to one unit in the simple actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitVerb {
    Start,
    Stop,
    Restart,
    Reload,
    Enable,
    Disable,
    Status,
}

impl UnitVerb {
    pub const ALL: [UnitVerb; 7] = [
        UnitVerb::Start,
        UnitVerb::Stop,
        UnitVerb::Restart,
        UnitVerb::Reload,
        UnitVerb::Enable,
        UnitVerb::Disable,
        UnitVerb::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnitVerb::Start => "start",
            UnitVerb::Stop => "stop",
            UnitVerb::Restart => "restart",
            UnitVerb::Reload => "reload",
            UnitVerb::Enable => "enable",
            UnitVerb::Disable => "disable",
            UnitVerb::Status => "status",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            UnitVerb::Start => "systemd.start",
            UnitVerb::Stop => "systemd.stop",
            UnitVerb::Restart => "systemd.restart",
            UnitVerb::Reload => "systemd.reload",
            UnitVerb::Enable => "systemd.enable",
            UnitVerb::Disable => "systemd.disable",
            UnitVerb::Status => "systemd.status",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|verb| verb.kind() == kind)
    }

    /// The verbs a caller may name in `POST /api/v1/systemd/units/{unit}/{verb}`.
    pub fn from_route(verb: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .filter(|v| *v != UnitVerb::Status)
            .find(|v| v.as_str() == verb)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SystemdAction {
    Unit(UnitVerb, UnitRef),
    Logs(Logs),
    Install(Box<UnitSpec>),
    Remove(UnitRef),
    Refresh(Refresh),
}

impl SystemdAction {
    /// The unit the action is about (none for a refresh).
    pub fn unit(&self) -> Option<&UnitName> {
        match self {
            SystemdAction::Unit(_, r) | SystemdAction::Remove(r) => Some(&r.unit),
            SystemdAction::Logs(l) => Some(&l.unit),
            SystemdAction::Install(spec) => Some(&spec.unit),
            SystemdAction::Refresh(_) => None,
        }
    }
}

impl FamilyAction for SystemdAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        let action = match kind {
            "systemd.logs" => {
                let logs: Logs = payload(kind, value)?;
                if !(1..=MAX_LOG_LINES).contains(&logs.lines()) {
                    return Err(ActionError::invalid(
                        kind,
                        format!("lines must be between 1 and {MAX_LOG_LINES}"),
                    ));
                }
                SystemdAction::Logs(logs)
            }
            "systemd.unit.install" => {
                let spec: UnitSpec = payload(kind, value)?;
                spec.check().map_err(|m| ActionError::invalid(kind, m))?;
                SystemdAction::Install(Box::new(spec))
            }
            "systemd.unit.remove" => SystemdAction::Remove(payload(kind, value)?),
            "systemd.refresh" => {
                let value = if value.is_null() {
                    Value::Object(Default::default())
                } else {
                    value
                };
                SystemdAction::Refresh(payload(kind, value)?)
            }
            _ => match UnitVerb::from_kind(kind) {
                Some(verb) => SystemdAction::Unit(verb, payload(kind, value)?),
                None => return Err(ActionError::UnknownType(kind.to_owned())),
            },
        };
        Ok(action)
    }

    fn kind(&self) -> &'static str {
        match self {
            SystemdAction::Unit(verb, _) => verb.kind(),
            SystemdAction::Logs(_) => "systemd.logs",
            SystemdAction::Install(_) => "systemd.unit.install",
            SystemdAction::Remove(_) => "systemd.unit.remove",
            SystemdAction::Refresh(_) => "systemd.refresh",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            SystemdAction::Unit(_, r) | SystemdAction::Remove(r) => serde_json::to_value(r),
            SystemdAction::Logs(l) => serde_json::to_value(l),
            SystemdAction::Install(spec) => serde_json::to_value(spec),
            SystemdAction::Refresh(r) => serde_json::to_value(r),
        };
        value.expect("systemd payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        match self.unit() {
            Some(unit) => Some(format!("systemd:{unit}")),
            None => Some("systemd:refresh".into()),
        }
    }

    /// A restart or reload run twice interrupts the service twice; every
    /// other action finds the host in the desired state the second time.
    fn rerun_safe(&self) -> bool {
        !matches!(
            self,
            SystemdAction::Unit(UnitVerb::Restart | UnitVerb::Reload, _)
        )
    }

    fn check_config(&self, config: &crate::Config) -> Result<(), ActionError> {
        if !config.systemd.enabled {
            return Err(ActionError::invalid(
                self.kind(),
                "the systemd family is disabled; set [systemd] enabled = true \
                 (OPSQUEUE_SYSTEMD__ENABLED=true)",
            ));
        }
        match self.unit() {
            Some(unit) => {
                check_not_denied(config, unit).map_err(|m| ActionError::invalid(self.kind(), m))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Action;
    use serde_json::json;

    fn enabled() -> crate::Config {
        let mut config = crate::Config::default();
        config.systemd.enabled = true;
        config
    }

    #[test]
    fn a_unit_name_gets_a_type_and_refuses_what_a_shell_or_systemctl_would_misread() {
        assert_eq!(UnitName::parse("web").unwrap().as_str(), "web.service");
        assert_eq!(UnitName::parse("web.timer").unwrap().as_str(), "web.timer");
        assert_eq!(
            UnitName::parse("pb@site-1.service").unwrap().as_str(),
            "pb@site-1.service"
        );
        assert!(UnitName::parse("pb@.service").unwrap().is_template());
        for bad in [
            "",
            "-x.service",
            "--all",
            "a b.service",
            "a;b.service",
            "a$(x).service",
            "a`b`.service",
            "a\nb.service",
            "a\0b.service",
            "../etc.service",
            "a..b.service",
            "a/b.service",
            "a\\x2db.mount",
            "a@b@c.service",
            "*.service",
            "ä.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(UnitName::parse(&format!("{}.service", "x".repeat(250))).is_err());
    }

    #[test]
    fn patterns_match_whole_names_with_wildcards() {
        let unit = |s: &str| UnitName::parse(s).unwrap();
        let pattern = |s: &str| UnitPattern::parse(s).unwrap();
        assert!(pattern("pb-*.service").matches(&unit("pb-app1.service")));
        assert!(!pattern("pb-*.service").matches(&unit("xpb-app1.service")));
        assert!(!pattern("pb-*.service").matches(&unit("pb-app1.timer")));
        assert!(pattern("web?.service").matches(&unit("web1.service")));
        assert!(!pattern("web?.service").matches(&unit("web12.service")));
        assert!(pattern("*").matches(&unit("sshd.service")));
        assert!(pattern("*a*b*").matches(&unit("xaxxbx.service")));
        assert!(pattern("sshd.service").matches(&unit("sshd")));
        assert!(UnitPattern::parse("a b").is_err());
        assert!(UnitPattern::parse("").is_err());
    }

    #[test]
    fn sshd_stays_out_of_reach_by_default_even_when_everything_is_allowed() {
        let mut config = enabled();
        let sshd = Action::parse("systemd.restart", json!({"unit": "sshd.service"})).unwrap();
        assert!(sshd.check_config(&config).is_err());
        config.systemd.allow = vec!["*".into()];
        assert!(sshd.check_config(&config).is_err());
        assert!(!allowed_by_config(
            &config,
            &UnitName::parse("sshd").unwrap()
        ));
        assert!(allowed_by_config(&config, &UnitName::parse("web").unwrap()));
        let ssh = Action::parse("systemd.stop", json!({"unit": "ssh"})).unwrap();
        assert!(ssh.check_config(&config).is_err());
        let own = Action::parse("systemd.stop", json!({"unit": "opsqueue-worker"})).unwrap();
        assert!(own.check_config(&config).is_err());
    }

    #[test]
    fn the_family_is_refused_while_disabled() {
        let action = Action::parse("systemd.start", json!({"unit": "web"})).unwrap();
        assert!(action.check_config(&crate::Config::default()).is_err());
        assert!(action.check_config(&enabled()).is_ok());
    }

    #[test]
    fn unit_actions_serialize_on_their_unit_and_say_whether_a_rerun_is_safe() {
        let start = Action::parse("systemd.start", json!({"unit": "web"})).unwrap();
        assert_eq!(start.resource().as_deref(), Some("systemd:web.service"));
        assert_eq!(start.payload(), json!({"unit": "web.service"}));
        assert!(start.rerun_safe());
        let restart = Action::parse("systemd.restart", json!({"unit": "web"})).unwrap();
        assert!(!restart.rerun_safe());
        let refresh = Action::parse("systemd.refresh", Value::Null).unwrap();
        assert_eq!(refresh.payload(), json!({}));
    }

    #[test]
    fn an_install_spec_parses_normalizes_and_round_trips() {
        let spec = json!({
            "unit": "pb-app1",
            "description": "PocketBase app1",
            "exec_start": ["/opt/pb/app1/pocketbase", "serve", "--http", "127.0.0.1:8090"],
            "working_directory": "/opt/pb/app1",
            "environment": {"PB_ENV": "production", "QUOTE": "a \"b\" $c 100%"},
            "restart": "always",
            "hardening": "strict",
            "enable": true,
            "start": true
        });
        let action = Action::parse("systemd.unit.install", spec).unwrap();
        assert_eq!(
            action.resource().as_deref(),
            Some("systemd:pb-app1.service")
        );
        assert_eq!(action.payload()["unit"], "pb-app1.service");
        assert_eq!(
            Action::parse(action.kind(), action.payload()).unwrap(),
            action
        );
        assert!(action.rerun_safe());
    }

    #[test]
    fn bad_install_specs_are_refused_with_the_reason() {
        let base =
            json!({"unit": "web.service", "exec_start": ["/usr/bin/python3", "-m", "http.server"]});
        assert!(Action::parse("systemd.unit.install", base.clone()).is_ok());
        let with = |key: &str, value: Value| {
            let mut spec = base.clone();
            spec[key] = value;
            spec
        };
        let cases = [
            with("unit", json!("web.timer")),
            with("unit", json!("web@.service")),
            with("unit", json!("web@x.service")),
            with("exec_start", json!([])),
            with("exec_start", json!(["python3", "-m"])),
            with("exec_start", json!(["/usr/bin/../bin/sh"])),
            with("exec_start", json!(["/bin/sh", "-c", "echo\nrm -rf /"])),
            with("exec_start", json!(["/bin/sh", "a\0b"])),
            with("exec_start", json!(["/bin/sh; rm -rf /"])),
            with("description", json!("two\nlines")),
            with("description", json!("trailing \\")),
            with("working_directory", json!("relative")),
            with("working_directory", json!("/srv/../etc")),
            with("user", json!("-root")),
            with("user", json!("a b")),
            with("environment", json!({"1BAD": "x"})),
            with("environment", json!({"A-B": "x"})),
            with("environment", json!({"A": "x\ny"})),
            with("restart", json!("sometimes")),
            with("restart_sec", json!(100_000)),
            with("hardening", json!("paranoid")),
            with("wanted_by", json!("web.service")),
            with("type", json!("forking")),
            with("bogus", json!(1)),
        ];
        for spec in cases {
            assert!(
                matches!(
                    Action::parse("systemd.unit.install", spec.clone()),
                    Err(ActionError::InvalidPayload { .. })
                ),
                "{spec} was accepted"
            );
        }
        let too_many: Vec<String> = std::iter::once("/bin/true".to_owned())
            .chain((0..MAX_ARGS).map(|i| i.to_string()))
            .collect();
        assert!(
            Action::parse("systemd.unit.install", with("exec_start", json!(too_many))).is_err()
        );
    }

    #[test]
    fn bad_unit_payloads_are_refused() {
        for (kind, payload) in [
            ("systemd.start", json!({})),
            ("systemd.start", json!({"unit": "-x"})),
            ("systemd.start", json!({"unit": "web", "extra": 1})),
            ("systemd.logs", json!({"unit": "web", "lines": 0})),
            ("systemd.logs", json!({"unit": "web", "lines": 10_001})),
            ("systemd.logs", json!({"unit": "web", "since": "yesterday"})),
            ("systemd.refresh", json!({"x": 1})),
            ("systemd.unit.remove", json!({"unit": "a|b"})),
        ] {
            assert!(
                Action::parse(kind, payload.clone()).is_err(),
                "{kind} {payload} was accepted"
            );
        }
        assert!(matches!(
            Action::parse("systemd.explode", json!({"unit": "web"})),
            Err(ActionError::UnknownType(_))
        ));
    }
}
