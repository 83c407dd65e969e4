//! The `systemd` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::SystemdConfig;
use super::names::{
    AccountName, Description, EnvName, EnvValue, ExecStart, Hardening, RestartPolicy, ServiceType,
    UnitName, first_match,
};
use crate::families::family::{ActionError, ActionInfo, FamilyAction, Reach, payload};
use crate::names::AbsolutePath;

pub const FAMILY: &str = "systemd";

/// The `kind` under which units are observed and managed.
pub const UNIT_KIND: &str = "unit";

pub(super) const CATALOGUE: &[ActionInfo] = &[
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

/// Refuses a unit the configuration denies (whatever else says it may be
/// touched); `Ok(())` does not mean allowed, only not denied.
pub fn check_not_denied(config: &SystemdConfig, unit: &UnitName) -> Result<(), String> {
    match first_match(&config.deny, unit) {
        Some(pattern) => Err(format!(
            "{unit} is out of reach: it matches the [systemd] deny pattern {pattern:?}"
        )),
        None => Ok(()),
    }
}

/// Whether the configuration's `allow` patterns name `unit` (and no `deny`
/// pattern does). A unit opsqueue installed is also allowed; that takes
/// the store, see the worker's driver and the API's routes.
pub fn allowed_by_config(config: &SystemdConfig, unit: &UnitName) -> bool {
    check_not_denied(config, unit).is_ok() && first_match(&config.allow, unit).is_some()
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
    /// `EnvironmentFile=`: variables read from a file at start (keeps
    /// secrets out of the world-readable unit file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_file: Option<AbsolutePath>,
    /// `ReadWritePaths=`: kept writable under any hardening preset (under
    /// `strict` the working directory is writable too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_write_paths: Vec<AbsolutePath>,
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
        if self.read_write_paths.len() > 16 {
            return Err("read_write_paths may hold at most 16 paths".into());
        }
        if self.read_write_paths.iter().any(|p| p.as_str() == "/") {
            return Err("read_write_paths must not hold / (that undoes the sandbox)".into());
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
    type Section = SystemdConfig;

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

    fn check_config(&self, config: &SystemdConfig) -> Result<(), ActionError> {
        match self.unit() {
            Some(unit) => {
                check_not_denied(config, unit).map_err(|m| ActionError::invalid(self.kind(), m))
            }
            None => Ok(()),
        }
    }

    /// A denied unit is out of reach on every route; an install needs no
    /// more, the actions on an existing unit also need an `allow` pattern
    /// or a unit opsqueue installed on `target`.
    fn reach(&self, config: &SystemdConfig, target: &str) -> Reach {
        let Some(unit) = self.unit() else {
            return Reach::Open;
        };
        if let Err(message) = check_not_denied(config, unit) {
            return Reach::Denied(message);
        }
        if matches!(self, SystemdAction::Install(_)) || allowed_by_config(config, unit) {
            return Reach::Open;
        }
        Reach::IfManaged {
            kind: UNIT_KIND,
            name: unit.to_string(),
            refusal: format!(
                "{unit} is neither matched by a [systemd] allow pattern nor installed by opsqueue on {target}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use crate::families::systemd::{MAX_ARGS, UnitPattern};
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
            &config.systemd,
            &UnitName::parse("sshd").unwrap()
        ));
        assert!(allowed_by_config(
            &config.systemd,
            &UnitName::parse("web").unwrap()
        ));
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
            with("read_write_paths", json!(["/"])),
            with("read_write_paths", json!(["relative"])),
            with("environment_file", json!("/etc/../shadow")),
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
