//! The proxmox family's name types: node and guest ids, hosts, API tokens
//! and pinned certificates.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a registered node (a UUID given by the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Uuid);

impl NodeId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for NodeId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for NodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self).map_err(|_| {
            format!(
                "invalid node id {:?}: expected a UUID",
                s.chars().take(80).collect::<String>()
            )
        })
    }
}

impl TryFrom<String> for NodeId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A guest id: PVE allows 100 to 999 999 999, unique across a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct VmId(u32);

impl VmId {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 999_999_999;

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for VmId {
    type Error = String;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if (u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&value) {
            Ok(Self(value as u32))
        } else {
            Err(format!(
                "invalid vmid {value}: must be between {} and {}",
                Self::MIN,
                Self::MAX
            ))
        }
    }
}

impl From<VmId> for u32 {
    fn from(id: VmId) -> u32 {
        id.0
    }
}

impl FromStr for VmId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid vmid {:?}: expected a number between {} and {}",
                s.chars().take(20).collect::<String>(),
                Self::MIN,
                Self::MAX
            ));
        }
        Self::try_from(s.parse::<u64>().map_err(|e| e.to_string())?)
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

crate::name_type!(
    /// A registered node's name (`lab`, `pve-prod.1`): unique among the
    /// registered nodes, shown in answers and log lines and looked up by the
    /// client; letters, digits and `._-`, starting with a letter or digit.
    NodeName, "node name", max = 100, extra = "._-"
);

crate::name_type!(
    /// A PVE cluster node's name (`pve1`): a DNS label.
    PveNodeName, "Proxmox node name", max = 63, extra = "-"
);

/// QEMU VM or LXC container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    /// The path segment and `/cluster/resources` type: `qemu` or `lxc`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }

    /// The dashboard's `resource_type`: `vm` or `lxc`.
    pub fn resource_type(self) -> &'static str {
        match self {
            GuestType::Qemu => "vm",
            GuestType::Lxc => "lxc",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "qemu" => Some(GuestType::Qemu),
            "lxc" => Some(GuestType::Lxc),
            _ => None,
        }
    }
}

/// A host name or an IP address to reach a PVE API at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Host(String);

impl Host {
    pub fn parse(value: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            Err(format!(
                "invalid host {:?}: {why}",
                value.chars().take(80).collect::<String>()
            ))
        };
        if value.parse::<IpAddr>().is_ok() {
            return Ok(Self(value.to_owned()));
        }
        if value.is_empty() || value.len() > 253 {
            return refuse("must be 1 to 253 bytes");
        }
        for label in value.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return refuse(
                    "expected an IP address or a DNS name (letters, digits, '-' and dots)",
                );
            }
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As it goes into a URL: IPv6 in brackets.
    pub fn for_url(&self) -> String {
        match self.0.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.0.clone(),
        }
    }
}

crate::parsed_string!(Host, String);

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `USER@REALM!TOKENID`, as PVE names an API token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    pub fn parse(value: &str) -> Result<Self, String> {
        let refuse = || {
            Err(format!(
                "invalid token id {:?}: expected USER@REALM!TOKENID, e.g. root@pam!monitoring",
                value.chars().take(80).collect::<String>()
            ))
        };
        if value.len() > 256 {
            return refuse();
        }
        let Some((user_realm, token)) = value.split_once('!') else {
            return refuse();
        };
        let Some((user, realm)) = user_realm.rsplit_once('@') else {
            return refuse();
        };
        let word = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        let user_ok = !user.is_empty()
            && user
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b":=!@/\\\"'`".contains(&b));
        if !(user_ok && word(realm) && word(token)) {
            return refuse();
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::parsed_string!(TokenId, String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An API token's secret. Its `Debug` never shows it; it has no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenSecret(String);

impl TokenSecret {
    pub fn parse(value: &str) -> Result<Self, String> {
        // Never echo the value: it is a secret even when malformed.
        if value.is_empty() || value.len() > 256 {
            return Err("invalid token secret: must be 1 to 256 bytes".into());
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("invalid token secret: must be printable ASCII without spaces".into());
        }
        if value == crate::secret::MASK {
            return Err("invalid token secret: \"***\" is the mask, not a secret".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

crate::parsed_string!(TokenSecret, String);

/// A PEM certificate to trust instead of the system roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaCert(String);

impl CaCert {
    pub const MAX_LEN: usize = 64 * 1024;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() > Self::MAX_LEN {
            return Err(format!("ca_cert must be at most {} bytes", Self::MAX_LEN));
        }
        if !value.contains("-----BEGIN CERTIFICATE-----")
            || !value.contains("-----END CERTIFICATE-----")
        {
            return Err("ca_cert must be a PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::parsed_string!(CaCert, String);
