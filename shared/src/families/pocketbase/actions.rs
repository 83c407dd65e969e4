//! The `pocketbase` family's typed actions: the steps only this family can
//! do (the rest of a deploy is `systemd.*` and `caddy.*` steps, see
//! `workflows.rs`), parsed from `(type, payload)` with their resource,
//! re-run safety and reach.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::PocketbaseConfig;
use super::names::{Email, HttpsUrl, Password, SecretValue, ServiceName, Sha256Hex, Version};
use crate::families::family::{ActionError, ActionInfo, FamilyAction, Reach, payload};
use crate::families::systemd::{DEFAULT_LOG_LINES, Description, EnvName, MAX_LOG_LINES};
use crate::names::{AbsolutePath, Domain, Port};

pub const FAMILY: &str = "pocketbase";

/// The kind under which services are managed (their record) and observed
/// (their runtime state).
pub const SERVICE_KIND: &str = "service";
/// The kind under which the last journal read of a service is kept.
pub const LOGS_KIND: &str = "logs";
/// The kind under which cached versions are managed.
pub const VERSION_KIND: &str = "version";
/// The kind (and name) of the last system validation.
pub const SYSTEM_KIND: &str = "system";
pub const SYSTEM_NAME: &str = "checks";

/// The lowest port a service may listen on: it runs unprivileged.
pub const MIN_PORT: u16 = 1024;

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "pocketbase.check",
        summary: "Create's first step: {name} unused, {port} free, {domain} not served by another site, {version} cached; fails service_invalid listing what is wrong.",
    },
    ActionInfo {
        kind: "pocketbase.validate",
        summary: "What create would refuse, checked on the host; the result is {valid, errors, warnings}. Changes nothing.",
    },
    ActionInfo {
        kind: "pocketbase.system.validate",
        summary: "Checks systemd, Caddy's admin API, the base and versions directories and useradd; the result is {valid, checks}, also kept for GET system/health.",
    },
    ActionInfo {
        kind: "pocketbase.home.create",
        summary: "Creates the service user pb-{name} and {base_dir}/{name} with pb_data (0750) and the environment file; records the service.",
    },
    ActionInfo {
        kind: "pocketbase.home.remove",
        summary: "Removes {base_dir}/{name} (its pb_data moved to {base_dir}/.trash with {keep_data}) and the service user; forgets the service.",
    },
    ActionInfo {
        kind: "pocketbase.binary.install",
        summary: "Copies {version}'s binary from the version cache to {base_dir}/{name}/pocketbase; records the version.",
    },
    ActionInfo {
        kind: "pocketbase.superuser.upsert",
        summary: "Creates or updates the superuser {email} with `pocketbase superuser upsert` (the password never logged).",
    },
    ActionInfo {
        kind: "pocketbase.health",
        summary: "Waits until GET http://127.0.0.1:{port}/api/health answers 200 (up to [pocketbase] health_timeout_secs).",
    },
    ActionInfo {
        kind: "pocketbase.verify",
        summary: "Checks that Caddy serves {domain} to the service: GET /api/health at [pocketbase] proxy_url with that Host.",
    },
    ActionInfo {
        kind: "pocketbase.status",
        summary: "Observes {name}: unit state, main pid, memory, CPU, Caddy route, health.",
    },
    ActionInfo {
        kind: "pocketbase.start",
        summary: "Starts {name}'s unit and observes it; changed: false when it runs.",
    },
    ActionInfo {
        kind: "pocketbase.stop",
        summary: "Stops {name}'s unit and observes it; changed: false when it is stopped.",
    },
    ActionInfo {
        kind: "pocketbase.restart",
        summary: "Restarts {name}'s unit and observes it.",
    },
    ActionInfo {
        kind: "pocketbase.logs",
        summary: "Reads the last {lines} journal lines of {name} (default 100), optionally {since} a time; kept for GET …/logs.",
    },
    ActionInfo {
        kind: "pocketbase.backup",
        summary: "Upgrade's first change: copies pb_data and the binary of a stopped {name} to {base_dir}/{name}/.backup.",
    },
    ActionInfo {
        kind: "pocketbase.restore",
        summary: "Undoes an upgrade: puts back pb_data, the binary and the recorded version from the backup.",
    },
    ActionInfo {
        kind: "pocketbase.version.install",
        summary: "Puts {version} in the version cache from an https {url} or a local {path} (a binary or a release .zip), checked against its mandatory {sha256}.",
    },
    ActionInfo {
        kind: "pocketbase.refresh",
        summary: "Observes every service opsqueue manages (the monitor's refresh-pocketbase).",
    },
];

fn is_false(b: &bool) -> bool {
    !*b
}

/// A service as a caller describes it: the create request (the seed's
/// `project_name` and `pocketbase_version` are accepted as aliases), and
/// what `pocketbase.validate` checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(alias = "project_name")]
    pub name: ServiceName,
    pub port: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
    #[serde(alias = "pocketbase_version")]
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_email: Option<Email>,
    /// A secret (see [`SECRETS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_password: Option<Password>,
    /// The service's environment; a secret (see [`SECRETS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, SecretValue>,
}

/// The secret fields of a [`ServiceSpec`]: stored apart, shown as `***`.
pub const SECRETS: &[&str] = &["superuser_password", "env"];

impl ServiceSpec {
    /// What serde cannot say: the field at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.port.get() < MIN_PORT {
            return Err((
                "port",
                format!(
                    "must be between {MIN_PORT} and 65535 (the service runs unprivileged), got {}",
                    self.port
                ),
            ));
        }
        if self.superuser_email.is_some() != self.superuser_password.is_some() {
            return Err((
                "superuser_password",
                "superuser_email and superuser_password go together".into(),
            ));
        }
        if self.env.len() > 128 {
            return Err(("env", "may hold at most 128 variables".into()));
        }
        Ok(())
    }

    /// What the service's record keeps of it (no secrets).
    pub fn record(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "port": self.port,
            "domain": self.domain,
            "version": self.version,
            "description": self.description,
        })
    }
}

/// `{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub name: ServiceName,
}

/// `pocketbase.home.remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeRemove {
    pub name: ServiceName,
    /// Move pb_data to `{base_dir}/.trash/{name}-{timestamp}` instead of
    /// deleting it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_data: bool,
}

/// `pocketbase.binary.install`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryInstall {
    pub name: ServiceName,
    pub version: Version,
}

/// `pocketbase.superuser.upsert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Superuser {
    pub name: ServiceName,
    pub email: Email,
    /// A secret.
    pub password: Password,
}

/// `pocketbase.health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub name: ServiceName,
    pub port: Port,
}

/// `pocketbase.verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub name: ServiceName,
    pub domain: Domain,
}

/// `pocketbase.logs`: the unit's journal, with the systemd family's bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub name: ServiceName,
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

/// `pocketbase.version.install`: exactly one of `url` and `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSource {
    pub version: Version,
    pub sha256: Sha256Hex,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpsUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<AbsolutePath>,
}

/// The payload of the actions over everything: no fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// What the control actions do to a service's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceVerb {
    Start,
    Stop,
    Restart,
    Status,
}

impl ServiceVerb {
    const ALL: [ServiceVerb; 4] = [Self::Start, Self::Stop, Self::Restart, Self::Status];

    pub fn kind(self) -> &'static str {
        match self {
            Self::Start => "pocketbase.start",
            Self::Stop => "pocketbase.stop",
            Self::Restart => "pocketbase.restart",
            Self::Status => "pocketbase.status",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PocketbaseAction {
    Check(Box<ServiceSpec>),
    Validate(Box<ServiceSpec>),
    SystemValidate(NoFields),
    HomeCreate(Box<ServiceSpec>),
    HomeRemove(HomeRemove),
    BinaryInstall(BinaryInstall),
    SuperuserUpsert(Superuser),
    Health(Health),
    Verify(Verify),
    Service(ServiceVerb, ServiceRef),
    Logs(Logs),
    Backup(ServiceRef),
    Restore(ServiceRef),
    VersionInstall(VersionSource),
    Refresh(NoFields),
}

fn spec(kind: &str, value: Value) -> Result<Box<ServiceSpec>, ActionError> {
    let spec: ServiceSpec = payload(kind, value)?;
    spec.check()
        .map_err(|(field, message)| ActionError::InvalidPayload {
            kind: kind.to_owned(),
            message,
            field: Some(field.to_owned()),
        })?;
    Ok(Box::new(spec))
}

impl PocketbaseAction {
    /// The service the action is about, if one.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Self::Check(s) | Self::Validate(s) | Self::HomeCreate(s) => Some(&s.name),
            Self::HomeRemove(r) => Some(&r.name),
            Self::BinaryInstall(b) => Some(&b.name),
            Self::SuperuserUpsert(s) => Some(&s.name),
            Self::Health(h) => Some(&h.name),
            Self::Verify(v) => Some(&v.name),
            Self::Service(_, r) | Self::Backup(r) | Self::Restore(r) => Some(&r.name),
            Self::Logs(l) => Some(&l.name),
            Self::SystemValidate(_) | Self::VersionInstall(_) | Self::Refresh(_) => None,
        }
    }
}

impl FamilyAction for PocketbaseAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = PocketbaseConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        let empty = |value: Value| {
            if value.is_null() {
                Value::Object(Default::default())
            } else {
                value
            }
        };
        let action = match kind {
            "pocketbase.check" => Self::Check(spec(kind, value)?),
            "pocketbase.validate" => Self::Validate(spec(kind, value)?),
            "pocketbase.system.validate" => Self::SystemValidate(payload(kind, empty(value))?),
            "pocketbase.home.create" => Self::HomeCreate(spec(kind, value)?),
            "pocketbase.home.remove" => Self::HomeRemove(payload(kind, value)?),
            "pocketbase.binary.install" => Self::BinaryInstall(payload(kind, value)?),
            "pocketbase.superuser.upsert" => Self::SuperuserUpsert(payload(kind, value)?),
            "pocketbase.health" => Self::Health(payload(kind, value)?),
            "pocketbase.verify" => Self::Verify(payload(kind, value)?),
            "pocketbase.logs" => {
                let logs: Logs = payload(kind, value)?;
                if !(1..=MAX_LOG_LINES).contains(&logs.lines()) {
                    return Err(ActionError::InvalidPayload {
                        kind: kind.to_owned(),
                        message: format!("must be between 1 and {MAX_LOG_LINES}"),
                        field: Some("lines".into()),
                    });
                }
                Self::Logs(logs)
            }
            "pocketbase.backup" => Self::Backup(payload(kind, value)?),
            "pocketbase.restore" => Self::Restore(payload(kind, value)?),
            "pocketbase.version.install" => {
                let source: VersionSource = payload(kind, value)?;
                if source.url.is_some() == source.path.is_some() {
                    return Err(ActionError::invalid(
                        kind,
                        "give exactly one of url (https) and path",
                    ));
                }
                Self::VersionInstall(source)
            }
            "pocketbase.refresh" => Self::Refresh(payload(kind, empty(value))?),
            _ => match ServiceVerb::ALL.into_iter().find(|v| v.kind() == kind) {
                Some(verb) => Self::Service(verb, payload(kind, value)?),
                None => return Err(ActionError::UnknownType(kind.to_owned())),
            },
        };
        Ok(action)
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Check(_) => "pocketbase.check",
            Self::Validate(_) => "pocketbase.validate",
            Self::SystemValidate(_) => "pocketbase.system.validate",
            Self::HomeCreate(_) => "pocketbase.home.create",
            Self::HomeRemove(_) => "pocketbase.home.remove",
            Self::BinaryInstall(_) => "pocketbase.binary.install",
            Self::SuperuserUpsert(_) => "pocketbase.superuser.upsert",
            Self::Health(_) => "pocketbase.health",
            Self::Verify(_) => "pocketbase.verify",
            Self::Service(verb, _) => verb.kind(),
            Self::Logs(_) => "pocketbase.logs",
            Self::Backup(_) => "pocketbase.backup",
            Self::Restore(_) => "pocketbase.restore",
            Self::VersionInstall(_) => "pocketbase.version.install",
            Self::Refresh(_) => "pocketbase.refresh",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            Self::Check(s) | Self::Validate(s) | Self::HomeCreate(s) => serde_json::to_value(s),
            Self::HomeRemove(r) => serde_json::to_value(r),
            Self::BinaryInstall(b) => serde_json::to_value(b),
            Self::SuperuserUpsert(s) => serde_json::to_value(s),
            Self::Health(h) => serde_json::to_value(h),
            Self::Verify(v) => serde_json::to_value(v),
            Self::Service(_, r) | Self::Backup(r) | Self::Restore(r) => serde_json::to_value(r),
            Self::Logs(l) => serde_json::to_value(l),
            Self::VersionInstall(v) => serde_json::to_value(v),
            Self::SystemValidate(n) | Self::Refresh(n) => serde_json::to_value(n),
        };
        value.expect("pocketbase payloads always serialize")
    }

    /// The changes to one service run one at a time; the creation of
    /// every service's home, one at a time across services (so two
    /// creates checked at once cannot both claim a port or domain); reads
    /// and waits run beside anything.
    fn resource(&self) -> Option<String> {
        match self {
            Self::Validate(_)
            | Self::SystemValidate(_)
            | Self::Health(_)
            | Self::Verify(_)
            | Self::Logs(_)
            | Self::Service(ServiceVerb::Status, _) => None,
            Self::VersionInstall(v) => Some(format!("pocketbase:version:{}", v.version)),
            Self::Refresh(_) => Some("pocketbase:refresh".into()),
            // One at a time across services: each looks again at the ports
            // and domains the others' records claimed (see the driver).
            Self::HomeCreate(_) => Some("pocketbase:homes".into()),
            other => other.service().map(|name| format!("pocketbase:{name}")),
        }
    }

    /// A restart run twice interrupts the service twice; every other
    /// action looks before it changes anything and finds its work done.
    fn rerun_safe(&self) -> bool {
        !matches!(self, Self::Service(ServiceVerb::Restart, _))
    }

    fn default_timeout_secs(&self) -> i64 {
        match self {
            Self::VersionInstall(_) => 900,
            _ => 300,
        }
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        match self {
            Self::Check(_) | Self::Validate(_) | Self::HomeCreate(_) => SECRETS,
            Self::SuperuserUpsert(_) => &["password"],
            _ => &[],
        }
    }

    /// The actions on a service that must exist answer `404` on a typed
    /// route when opsqueue manages no such service on the target.
    fn reach(&self, _config: &PocketbaseConfig, target: &str) -> Reach {
        match self {
            Self::Service(..) | Self::Logs(_) => {
                let name = self.service().expect("these name a service");
                Reach::IfExists {
                    kind: SERVICE_KIND,
                    name: name.to_string(),
                    missing: format!("opsqueue manages no PocketBase service {name:?} on {target}"),
                }
            }
            _ => Reach::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    fn create() -> Value {
        json!({"name": "my-app", "port": 8090, "domain": "my-app.example.com", "version": "0.40.6",
               "superuser_email": "admin@example.com", "superuser_password": "correct horse",
               "env": {"PB_ENCRYPTION": "s3cret"}})
    }

    #[test]
    fn a_service_spec_parses_with_the_seed_s_names_and_keeps_secrets_apart() {
        let action = Action::parse("pocketbase.check", create()).unwrap();
        assert_eq!(action.resource().as_deref(), Some("pocketbase:my-app"));
        assert_eq!(action.secret_fields(), SECRETS);
        let seed = json!({"project_name": "my-app", "port": 8090, "pocketbase_version": "0.29.0"});
        let parsed = Action::parse("pocketbase.validate", seed).unwrap();
        assert_eq!(parsed.payload()["name"], "my-app");
        assert_eq!(parsed.payload()["version"], "0.29.0");
        assert_eq!(
            Action::parse(action.kind(), action.payload()).unwrap(),
            action
        );
        let (stored, secrets) =
            crate::secret::split_secrets(action.payload(), action.secret_fields());
        assert_eq!(stored["superuser_password"], "***");
        assert_eq!(stored["env"], "***");
        assert!(!stored.to_string().contains("correct horse"));
        assert!(secrets.unwrap().to_string().contains("s3cret"));
    }

    #[test]
    fn hostile_names_ports_domains_and_versions_are_refused_naming_the_field() {
        let with = |key: &str, value: Value| {
            let mut body = create();
            body[key] = value;
            body
        };
        for (body, field) in [
            (with("name", json!("../etc")), "name"),
            (with("name", json!("a;rm -rf /")), "name"),
            (with("name", json!("Upper")), "name"),
            (with("port", json!(80)), "port"),
            (with("port", json!(70000)), "port"),
            (with("port", json!("8090; x")), "port"),
            (with("domain", json!("a b.example.com")), "domain"),
            (with("domain", json!("-x.example.com")), "domain"),
            (with("version", json!("../../bin")), "version"),
            (with("version", json!("v1")), "version"),
            (
                with("superuser_email", json!("not-an-email")),
                "superuser_email",
            ),
            (
                with("superuser_password", Value::Null),
                "superuser_password",
            ),
            (with("env", json!({"A-B": "x"})), "env.A-B"),
            (with("env", json!({"A": "line\nbreak"})), "env.A"),
            (with("extra", json!(1)), "extra"),
        ] {
            let refused = Action::parse("pocketbase.check", body.clone()).unwrap_err();
            assert!(!refused.to_string().contains("line\nbreak"), "{refused}");
            let got = refused.field().unwrap_or_default();
            assert!(
                got == field || (field == "extra" && refused.to_string().contains("extra")),
                "{body}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_control_and_read_actions_need_a_managed_service_on_typed_routes() {
        let config = PocketbaseConfig::default();
        let stop = Action::parse("pocketbase.stop", json!({"name": "web"})).unwrap();
        let Action::Pocketbase(inner) = &stop else {
            panic!("a pocketbase action")
        };
        assert!(matches!(
            inner.reach(&config, "local"),
            Reach::IfExists { .. }
        ));
        assert!(
            !Action::parse("pocketbase.restart", json!({"name": "web"}))
                .unwrap()
                .rerun_safe()
        );
        assert!(stop.rerun_safe());
        let install = Action::parse(
            "pocketbase.version.install",
            json!({"version": "0.40.6", "sha256": "a".repeat(64), "url": "https://x.example/pb.zip", "path": "/tmp/pb"}),
        );
        assert!(install.is_err());
        let install = Action::parse(
            "pocketbase.version.install",
            json!({"version": "0.40.6", "url": "https://x.example/pb.zip"}),
        );
        assert!(install.is_err(), "a download without a checksum");
    }
}
