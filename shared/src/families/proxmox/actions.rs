//! The `proxmox` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::ProxmoxConfig;
use super::names::{CaCert, GuestType, Host, NodeId, PveNodeName, TokenId, TokenSecret, VmId};
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};

pub const FAMILY: &str = "proxmox";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "proxmox.test_connection",
        summary: "Connects to an unsaved node configuration; the result says {connected, version}.",
    },
    ActionInfo {
        kind: "proxmox.node.test",
        summary: "Connects to a registered node {node}; the result says {connected, version}.",
    },
    ActionInfo {
        kind: "proxmox.refresh",
        summary: "Observes the guests of registered node {node} (or of every node), for the resource reads.",
    },
    ActionInfo {
        kind: "proxmox.guest.start",
        summary: "Starts guest {vmid} of node {node}.",
    },
    ActionInfo {
        kind: "proxmox.guest.stop",
        summary: "Stops guest {vmid} at once (power off); {force} also overrules a running shutdown.",
    },
    ActionInfo {
        kind: "proxmox.guest.shutdown",
        summary: "Shuts guest {vmid} down cleanly within {timeout}; {force} stops it after that.",
    },
    ActionInfo {
        kind: "proxmox.guest.reboot",
        summary: "Reboots a running guest {vmid} (the `restart` route).",
    },
    ActionInfo {
        kind: "proxmox.guest.suspend",
        summary: "Suspends (pauses) a running guest {vmid}.",
    },
    ActionInfo {
        kind: "proxmox.guest.resume",
        summary: "Resumes a suspended guest {vmid}.",
    },
    ActionInfo {
        kind: "proxmox.guest.migrate",
        summary: "Migrates guest {vmid} to PVE node {target}; QEMU {online}, LXC {restart}.",
    },
];

pub const DEFAULT_PORT: u16 = 8006;
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;
pub const MAX_TIMEOUT_SECS: u32 = 600;
/// The longest shutdown or reboot `timeout` a caller may give PVE.
pub const MAX_GUEST_TIMEOUT_SECS: u32 = 86_400;

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECS
}
fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// How to reach one PVE API: what a registered node stores, and what
/// `proxmox.test_connection` carries. The dashboard's field names
/// (`api_token_id`, `api_token_secret`, `ssl_verify`, `timeout`) are
/// accepted as aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub host: Host,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(alias = "api_token_id")]
    pub token_id: TokenId,
    #[serde(alias = "api_token_secret")]
    pub token_secret: TokenSecret,
    /// Verify the server's certificate (against `ca_cert` when given, else
    /// the system roots). Default true.
    #[serde(default = "yes", alias = "ssl_verify")]
    pub verify_tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<CaCert>,
    /// Per request, in seconds (1..=600, default 30).
    #[serde(default = "default_timeout", alias = "timeout")]
    pub timeout_secs: u32,
}

impl Connection {
    /// Range checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("port must be between 1 and 65535".into());
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
            ));
        }
        Ok(())
    }

    /// `https://host:port/api2/json`.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}/api2/json", self.host.for_url(), self.port)
    }
}

/// `proxmox.node.test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRef {
    pub node: NodeId,
}

/// `proxmox.refresh`: one node, or every registered node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}

/// The guest every guest action names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestRef {
    pub node: NodeId,
    pub vmid: VmId,
    /// What the caller (or the API, from the last observation) believes the
    /// guest is; the worker refuses to act if PVE says otherwise (a vmid
    /// reused by another kind of guest). Absent: whatever PVE says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_type: Option<GuestType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    #[serde(flatten)]
    pub guest: GuestRef,
    /// Also abort a shutdown task still running (PVE's `overrule-shutdown`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    #[serde(flatten)]
    pub guest: GuestRef,
    /// Seconds PVE waits for the guest to power off (PVE's default: 60 for
    /// VMs, 60 for containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Stop the guest if it has not powered off by then (`forceStop`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reboot {
    #[serde(flatten)]
    pub guest: GuestRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migrate {
    #[serde(flatten)]
    pub guest: GuestRef,
    /// The PVE node to move the guest to.
    pub target: PveNodeName,
    /// QEMU: live-migrate a running VM (PVE refuses a running VM without it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub online: bool,
    /// LXC: shut a running container down, move it and start it again
    /// (PVE refuses a running container without it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
}

/// A power or migration action on one guest.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestAction {
    Start(GuestRef),
    Stop(Stop),
    Shutdown(Shutdown),
    Reboot(Reboot),
    Suspend(GuestRef),
    Resume(GuestRef),
    Migrate(Migrate),
}

impl GuestAction {
    pub fn guest(&self) -> &GuestRef {
        match self {
            GuestAction::Start(g) | GuestAction::Suspend(g) | GuestAction::Resume(g) => g,
            GuestAction::Stop(a) => &a.guest,
            GuestAction::Shutdown(a) => &a.guest,
            GuestAction::Reboot(a) => &a.guest,
            GuestAction::Migrate(a) => &a.guest,
        }
    }

    /// The verb of `proxmox.guest.<verb>`, which is also PVE's
    /// `status/<verb>` for all but `migrate`.
    pub fn verb(&self) -> &'static str {
        match self {
            GuestAction::Start(_) => "start",
            GuestAction::Stop(_) => "stop",
            GuestAction::Shutdown(_) => "shutdown",
            GuestAction::Reboot(_) => "reboot",
            GuestAction::Suspend(_) => "suspend",
            GuestAction::Resume(_) => "resume",
            GuestAction::Migrate(_) => "migrate",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProxmoxAction {
    TestConnection(Connection),
    NodeTest(NodeRef),
    Refresh(Refresh),
    Guest(GuestAction),
}

const GUEST_FIELDS: &[&str] = &["node", "vmid", "guest_type"];

fn known_fields(verb: &str) -> Option<&'static [&'static str]> {
    Some(match verb {
        "start" | "suspend" | "resume" => &[],
        "stop" => &["force"],
        "shutdown" => &["timeout", "force"],
        "reboot" => &["timeout"],
        "migrate" => &["target", "online", "restart"],
        _ => return None,
    })
}

fn object(kind: &str, value: Value) -> Result<Map<String, Value>, ActionError> {
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(fields) => Ok(fields),
        _ => Err(ActionError::invalid(
            kind,
            "the payload must be a JSON object",
        )),
    }
}

fn parse_guest(kind: &str, verb: &str, value: Value) -> Result<GuestAction, ActionError> {
    let extra = known_fields(verb).ok_or_else(|| ActionError::UnknownType(kind.to_owned()))?;
    let fields = object(kind, value)?;
    // `deny_unknown_fields` does not work through `flatten`.
    if let Some(unknown) = fields
        .keys()
        .find(|k| !GUEST_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        let known: Vec<&str> = GUEST_FIELDS.iter().chain(extra).copied().collect();
        return Err(ActionError::invalid(
            kind,
            format!("unknown field `{unknown}`, expected one of {known:?}"),
        ));
    }
    let value = Value::Object(fields);
    let check_timeout = |timeout: Option<u32>| match timeout {
        Some(t) if t > MAX_GUEST_TIMEOUT_SECS => Err(ActionError::invalid(
            kind,
            format!("timeout must be at most {MAX_GUEST_TIMEOUT_SECS}"),
        )),
        _ => Ok(()),
    };
    Ok(match verb {
        "start" => GuestAction::Start(payload(kind, value)?),
        "suspend" => GuestAction::Suspend(payload(kind, value)?),
        "resume" => GuestAction::Resume(payload(kind, value)?),
        "stop" => GuestAction::Stop(payload(kind, value)?),
        "shutdown" => {
            let shutdown: Shutdown = payload(kind, value)?;
            check_timeout(shutdown.timeout)?;
            GuestAction::Shutdown(shutdown)
        }
        "reboot" => {
            let reboot: Reboot = payload(kind, value)?;
            check_timeout(reboot.timeout)?;
            GuestAction::Reboot(reboot)
        }
        _ => {
            let migrate: Migrate = payload(kind, value)?;
            match migrate.guest.guest_type {
                Some(GuestType::Qemu) if migrate.restart => {
                    return Err(ActionError::invalid(
                        kind,
                        "restart applies to containers; a VM migrates live with online",
                    ));
                }
                Some(GuestType::Lxc) if migrate.online => {
                    return Err(ActionError::invalid(
                        kind,
                        "containers cannot migrate live; use restart",
                    ));
                }
                _ => {}
            }
            GuestAction::Migrate(migrate)
        }
    })
}

impl FamilyAction for ProxmoxAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = ProxmoxConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        match kind {
            "proxmox.test_connection" => {
                let connection: Connection = payload(kind, Value::Object(object(kind, value)?))?;
                connection
                    .check()
                    .map_err(|e| ActionError::invalid(kind, e))?;
                Ok(ProxmoxAction::TestConnection(connection))
            }
            "proxmox.node.test" => Ok(ProxmoxAction::NodeTest(payload(
                kind,
                Value::Object(object(kind, value)?),
            )?)),
            "proxmox.refresh" => Ok(ProxmoxAction::Refresh(payload(
                kind,
                Value::Object(object(kind, value)?),
            )?)),
            _ => match kind.strip_prefix("proxmox.guest.") {
                Some(verb) => parse_guest(kind, verb, value).map(ProxmoxAction::Guest),
                None => Err(ActionError::UnknownType(kind.to_owned())),
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ProxmoxAction::TestConnection(_) => "proxmox.test_connection",
            ProxmoxAction::NodeTest(_) => "proxmox.node.test",
            ProxmoxAction::Refresh(_) => "proxmox.refresh",
            ProxmoxAction::Guest(action) => match action {
                GuestAction::Start(_) => "proxmox.guest.start",
                GuestAction::Stop(_) => "proxmox.guest.stop",
                GuestAction::Shutdown(_) => "proxmox.guest.shutdown",
                GuestAction::Reboot(_) => "proxmox.guest.reboot",
                GuestAction::Suspend(_) => "proxmox.guest.suspend",
                GuestAction::Resume(_) => "proxmox.guest.resume",
                GuestAction::Migrate(_) => "proxmox.guest.migrate",
            },
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            ProxmoxAction::TestConnection(a) => serde_json::to_value(a),
            ProxmoxAction::NodeTest(a) => serde_json::to_value(a),
            ProxmoxAction::Refresh(a) => serde_json::to_value(a),
            ProxmoxAction::Guest(action) => match action {
                GuestAction::Start(a) | GuestAction::Suspend(a) | GuestAction::Resume(a) => {
                    serde_json::to_value(a)
                }
                GuestAction::Stop(a) => serde_json::to_value(a),
                GuestAction::Shutdown(a) => serde_json::to_value(a),
                GuestAction::Reboot(a) => serde_json::to_value(a),
                GuestAction::Migrate(a) => serde_json::to_value(a),
            },
        };
        value.expect("proxmox payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        match self {
            ProxmoxAction::TestConnection(_) | ProxmoxAction::NodeTest(_) => None,
            ProxmoxAction::Refresh(Refresh { node: Some(node) }) => {
                Some(format!("proxmox:{node}:refresh"))
            }
            ProxmoxAction::Refresh(Refresh { node: None }) => Some("proxmox:refresh".into()),
            ProxmoxAction::Guest(action) => {
                let guest = action.guest();
                Some(format!("proxmox:{}:{}", guest.node, guest.vmid))
            }
        }
    }

    /// Every action first reads the guest's state (and a re-run resumes the
    /// task its earlier attempt recorded), so re-running is safe, except a
    /// reboot: the state cannot tell whether one already happened.
    fn rerun_safe(&self) -> bool {
        !matches!(self, ProxmoxAction::Guest(GuestAction::Reboot(_)))
    }

    fn default_timeout_secs(&self) -> i64 {
        match self {
            ProxmoxAction::TestConnection(_) | ProxmoxAction::NodeTest(_) => 120,
            ProxmoxAction::Refresh(_) => 300,
            ProxmoxAction::Guest(GuestAction::Migrate(_)) => 3600,
            ProxmoxAction::Guest(_) => 900,
        }
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        match self {
            ProxmoxAction::TestConnection(_) => &["token_secret"],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    const NODE: &str = "01933b6e-8f4c-7d2a-9a51-3c2f1e0d4b5a";

    #[test]
    fn a_guest_action_serializes_on_the_guest_wherever_it_lives() {
        let action = Action::parse(
            "proxmox.guest.migrate",
            json!({"node": NODE, "vmid": 100, "target": "pve2", "online": true}),
        )
        .unwrap();
        assert_eq!(
            action.resource().as_deref(),
            Some(format!("proxmox:{NODE}:100").as_str())
        );
        let start =
            Action::parse("proxmox.guest.start", json!({"node": NODE, "vmid": 100})).unwrap();
        assert_eq!(start.resource(), action.resource());
        assert!(action.rerun_safe());
        let again = Action::parse(action.kind(), action.payload()).unwrap();
        assert_eq!(again, action);
    }

    #[test]
    fn a_reboot_is_not_safe_to_run_twice() {
        let reboot =
            Action::parse("proxmox.guest.reboot", json!({"node": NODE, "vmid": 100})).unwrap();
        assert!(!reboot.rerun_safe());
    }

    #[test]
    fn an_unsaved_token_secret_is_a_secret_field_and_dashboard_names_are_accepted() {
        let action = Action::parse(
            "proxmox.test_connection",
            json!({"host": "192.168.1.100", "api_token_id": "root@pam!monitoring",
                   "api_token_secret": "s3cr3t-uuid", "ssl_verify": false, "timeout": 5}),
        )
        .unwrap();
        assert_eq!(action.secret_fields(), ["token_secret"]);
        assert_eq!(
            action.payload(),
            json!({"host": "192.168.1.100", "port": 8006, "token_id": "root@pam!monitoring",
                   "token_secret": "s3cr3t-uuid", "verify_tls": false, "timeout_secs": 5})
        );
        assert!(!format!("{action:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_proxmox_payloads_are_refused() {
        let cases = [
            ("proxmox.guest.start", json!({"node": NODE, "vmid": 99})),
            (
                "proxmox.guest.start",
                json!({"node": NODE, "vmid": 1_000_000_000u64}),
            ),
            ("proxmox.guest.start", json!({"node": NODE, "vmid": "100"})),
            ("proxmox.guest.start", json!({"node": "pve1", "vmid": 100})),
            (
                "proxmox.guest.start",
                json!({"node": NODE, "vmid": 100, "force": true}),
            ),
            (
                "proxmox.guest.start",
                json!({"node": NODE, "vmid": 100, "guest_type": "kvm"}),
            ),
            ("proxmox.guest.stop", json!({"node": NODE})),
            ("proxmox.guest.migrate", json!({"node": NODE, "vmid": 100})),
            (
                "proxmox.guest.migrate",
                json!({"node": NODE, "vmid": 100, "target": "-x"}),
            ),
            (
                "proxmox.guest.migrate",
                json!({"node": NODE, "vmid": 100, "target": "a;b"}),
            ),
            (
                "proxmox.guest.migrate",
                json!({"node": NODE, "vmid": 100, "target": "pve2", "guest_type": "lxc", "online": true}),
            ),
            (
                "proxmox.guest.shutdown",
                json!({"node": NODE, "vmid": 100, "timeout": 100_000}),
            ),
            ("proxmox.node.test", json!({"node": NODE, "extra": 1})),
            ("proxmox.refresh", json!([])),
            (
                "proxmox.test_connection",
                json!({"host": "a b", "token_id": "root@pam!x", "token_secret": "s"}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve.lan", "token_id": "root", "token_secret": "s"}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve.lan", "token_id": "root@pam!x", "token_secret": "a b"}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve.lan", "token_id": "root@pam!x", "token_secret": "s", "port": 0}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve.lan", "token_id": "root@pam!x", "token_secret": "s", "ca_cert": "nope"}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve.lan", "token_id": "root@pam!x"}),
            ),
        ];
        for (kind, payload) in cases {
            let err = Action::parse(kind, payload.clone()).unwrap_err();
            assert!(
                matches!(err, ActionError::InvalidPayload { .. }),
                "{kind} {payload}: {err:?}"
            );
        }
        assert!(matches!(
            Action::parse("proxmox.guest.explode", json!({})),
            Err(ActionError::UnknownType(_))
        ));
    }

    #[test]
    fn hosts_and_token_ids_take_what_pve_uses() {
        for good in ["192.168.1.100", "::1", "pve1", "pve1.example.org"] {
            assert!(Host::parse(good).is_ok(), "{good}");
        }
        assert_eq!(Host::parse("::1").unwrap().for_url(), "[::1]");
        for bad in ["", "a b", "-pve", "pve..lan", "pve/x", "pve:8006"] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        for good in ["root@pam!ci", "ops@pve!dash-board_1", "a.b@ldap.corp!t"] {
            assert!(TokenId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "root@pam",
            "root!ci",
            "root@pam!",
            "ro=ot@pam!ci",
            "root@pam!c i",
        ] {
            assert!(TokenId::parse(bad).is_err(), "{bad}");
        }
        let err = TokenSecret::parse("has space").unwrap_err();
        assert!(!err.contains("has space"));
    }
}
