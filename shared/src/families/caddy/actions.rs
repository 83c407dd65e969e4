//! The `caddy` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::CaddyConfig;
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};
use crate::names::{Domain, NameError, Port};

pub const FAMILY: &str = "caddy";

/// The `kind` under which sites are observed and managed.
pub const SITE_KIND: &str = "site";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "caddy.site.add",
        summary: "Proxies {domain} to the local {upstream} (host:port); changed: false when it already does.",
    },
    ActionInfo {
        kind: "caddy.site.remove",
        summary: "Removes the site of {domain}; changed: false when there is none.",
    },
    ActionInfo {
        kind: "caddy.list",
        summary: "Observes the sites Caddy serves, for the site reads.",
    },
    ActionInfo {
        kind: "caddy.validate",
        summary: "Compares the managed sites with Caddy's live configuration; reports missing, drifted and duplicated sites.",
    },
    ActionInfo {
        kind: "caddy.reload",
        summary: "Re-applies every managed site to Caddy (after a restart) and observes the result.",
    },
];

/// The host part of an upstream: an IP address on this host or a private
/// network, or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    Ip(IpAddr),
    Localhost,
}

/// Whether `ip` is on this host or a private network (loopback, RFC 1918,
/// IPv6 unique-local or link-local): the places a local upstream lives.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Where a site's requests go: `host:port`, e.g. `127.0.0.1:8090`,
/// `[::1]:8090`, `localhost:8090` or `10.0.0.5:8080`. The port is checked
/// here (Caddy itself accepts `127.0.0.1:notaport` and answers 502 later);
/// the host must be local (see [`UpstreamHost`]): public addresses and
/// other names are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Upstream {
    host: UpstreamHost,
    port: Port,
}

impl Upstream {
    pub const WHAT: &'static str = "upstream";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| refuse("an IPv6 upstream is written [address]:port"))?;
            let ip: Ipv6Addr = v6
                .parse()
                .map_err(|_| refuse("not an IPv6 address in brackets"))?;
            (UpstreamHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = value
                .rsplit_once(':')
                .ok_or_else(|| refuse("must be host:port"))?;
            let host = if host.eq_ignore_ascii_case("localhost") {
                UpstreamHost::Localhost
            } else {
                let ip: Ipv4Addr = host.parse().map_err(|_| {
                    refuse("the host must be localhost or an IP address (IPv6 in brackets)")
                })?;
                UpstreamHost::Ip(IpAddr::V4(ip))
            };
            (host, port)
        };
        if let UpstreamHost::Ip(ip) = host
            && !is_local(ip)
        {
            return Err(refuse(
                "the host must be on this host or a private network (loopback, 10/8, 172.16/12, 192.168/16, fc00::/7)",
            ));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(refuse("the port must be a number from 1 to 65535"));
        }
        let port = Port::parse(port.parse().expect("at most five digits"))
            .map_err(|_| refuse("the port must be a number from 1 to 65535"))?;
        Ok(Self { host, port })
    }

    pub fn port(&self) -> Port {
        self.port
    }

    /// Caddy's `dial` form: `127.0.0.1:8090`, `[::1]:8090`, `localhost:8090`.
    pub fn dial(&self) -> String {
        match self.host {
            UpstreamHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            UpstreamHost::Ip(IpAddr::V4(ip)) => format!("{ip}:{}", self.port),
            UpstreamHost::Localhost => format!("localhost:{}", self.port),
        }
    }
}

impl Upstream {
    /// The rule as a JSON schema. Stricter than the parser in one place: a
    /// port with leading zeros (`:08090`, which the parser reads as 8090)
    /// is not in it; IPv6 addresses are stated in their plain forms.
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
        const PORT: &str = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
        const GROUP: &str = "[0-9A-Fa-f]{1,4}";
        let v4 = format!(
            "(?:127\\.{OCTET}|10\\.{OCTET}|172\\.(?:1[6-9]|2[0-9]|3[01])|192\\.168|169\\.254)\\.{OCTET}\\.{OCTET}"
        );
        // Unique-local fc00::/7 and link-local fe80::/10, full or with `::`.
        let first = "(?:[Ff][CcDd][0-9A-Fa-f]{2}|[Ff][Ee][89AaBb][0-9A-Fa-f])";
        let v6 = format!(
            "\\[(?:::1|{first}(?::{GROUP}){{7}}|{first}::(?:{GROUP}(?::{GROUP}){{0,5}})?)\\]"
        );
        crate::names::string_schema(
            "host:port on this host or a private network: `localhost`, an IPv4 address in \
             127/8, 10/8, 172.16/12, 192.168/16 or 169.254/16, or an IPv6 one ([::1], \
             fc00::/7, fe80::/10) in brackets; the port 1 to 65535",
            format!("^(?:[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|{v4}|{v6}):{PORT}$"),
            64,
        )
    }
}

crate::name_schema!(Upstream);

impl TryFrom<String> for Upstream {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        Self::parse(&value)
    }
}

impl From<Upstream> for String {
    fn from(upstream: Upstream) -> String {
        upstream.dial()
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dial())
    }
}

/// `caddy.site.add`: the desired state of one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub domain: Domain,
    pub upstream: Upstream,
}

/// `caddy.site.remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRef {
    pub domain: Domain,
}

/// The payload of the actions over all sites: no fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

#[derive(Debug, Clone, PartialEq)]
pub enum CaddyAction {
    SiteAdd(SiteSpec),
    SiteRemove(SiteRef),
    List(NoFields),
    Validate(NoFields),
    Reload(NoFields),
}

/// The `@id` opsqueue gives a site's route in Caddy's configuration: stable,
/// so an add can look it up first (`GET /id/<id>`).
pub fn site_id(domain: &Domain) -> String {
    format!("opsqueue-site-{domain}")
}

/// The prefix of every `@id` opsqueue gives a route.
pub const SITE_ID_PREFIX: &str = "opsqueue-site-";

impl FamilyAction for CaddyAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = CaddyConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        let empty = |value: Value| {
            if value.is_null() {
                Value::Object(Default::default())
            } else {
                value
            }
        };
        match kind {
            "caddy.site.add" => Ok(CaddyAction::SiteAdd(payload(kind, value)?)),
            "caddy.site.remove" => Ok(CaddyAction::SiteRemove(payload(kind, value)?)),
            "caddy.list" => Ok(CaddyAction::List(payload(kind, empty(value))?)),
            "caddy.validate" => Ok(CaddyAction::Validate(payload(kind, empty(value))?)),
            "caddy.reload" => Ok(CaddyAction::Reload(payload(kind, empty(value))?)),
            _ => Err(ActionError::UnknownType(kind.to_owned())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            CaddyAction::SiteAdd(_) => "caddy.site.add",
            CaddyAction::SiteRemove(_) => "caddy.site.remove",
            CaddyAction::List(_) => "caddy.list",
            CaddyAction::Validate(_) => "caddy.validate",
            CaddyAction::Reload(_) => "caddy.reload",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            CaddyAction::SiteAdd(spec) => serde_json::to_value(spec),
            CaddyAction::SiteRemove(site) => serde_json::to_value(site),
            CaddyAction::List(none) | CaddyAction::Validate(none) | CaddyAction::Reload(none) => {
                serde_json::to_value(none)
            }
        };
        value.expect("caddy payloads always serialize")
    }

    /// Site actions run one at a time per domain; reloads one at a time;
    /// reads in parallel with anything.
    fn resource(&self) -> Option<String> {
        match self {
            CaddyAction::SiteAdd(SiteSpec { domain, .. })
            | CaddyAction::SiteRemove(SiteRef { domain }) => Some(format!("caddy:site:{domain}")),
            CaddyAction::Reload(_) => Some("caddy:reload".into()),
            CaddyAction::List(_) | CaddyAction::Validate(_) => None,
        }
    }

    /// Every caddy action looks before it writes, so a re-run finds the
    /// desired state and changes nothing.
    fn rerun_safe(&self) -> bool {
        true
    }

    fn default_timeout_secs(&self) -> i64 {
        120
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    #[test]
    fn an_upstream_is_a_local_host_and_a_real_port() {
        for (text, dial) in [
            ("127.0.0.1:8090", "127.0.0.1:8090"),
            ("localhost:80", "localhost:80"),
            ("LOCALHOST:80", "localhost:80"),
            ("[::1]:8090", "[::1]:8090"),
            ("10.0.0.5:8080", "10.0.0.5:8080"),
            ("192.168.1.20:3000", "192.168.1.20:3000"),
            ("[fd00::5]:443", "[fd00::5]:443"),
        ] {
            assert_eq!(Upstream::parse(text).unwrap().dial(), dial, "{text}");
        }
        for bad in [
            "127.0.0.1:notaport",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+80",
            "127.0.0.1:080080",
            "8.8.8.8:53",
            "[2001:db8::1]:80",
            "example.com:80",
            "::1:80",
            "[::1]8090",
            "127.0.0.1:80;rm",
            "127.0.0.1:80\n",
            "-x:80",
            "",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_site_add_parses_normalizes_and_serializes_on_its_domain() {
        let action = Action::parse(
            "caddy.site.add",
            json!({"domain": "PB1.Example.test", "upstream": "127.0.0.1:8090"}),
        )
        .unwrap();
        assert_eq!(
            action.payload(),
            json!({"domain": "pb1.example.test", "upstream": "127.0.0.1:8090"})
        );
        assert_eq!(
            action.resource().as_deref(),
            Some("caddy:site:pb1.example.test")
        );
        assert!(action.rerun_safe());
        assert_eq!(
            Action::parse(action.kind(), action.payload()).unwrap(),
            action
        );
        let reload = Action::parse("caddy.reload", Value::Null).unwrap();
        assert_eq!(reload.payload(), json!({}));
    }

    #[test]
    fn bad_caddy_payloads_are_refused() {
        for (kind, payload) in [
            ("caddy.site.add", json!({"domain": "a.test"})),
            (
                "caddy.site.add",
                json!({"domain": "a.test", "upstream": "127.0.0.1:notaport"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "-a.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a;b.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "*.a.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a.test", "upstream": "127.0.0.1:80", "x": 1}),
            ),
            ("caddy.site.remove", json!({"domain": "../x"})),
            ("caddy.reload", json!({"force": true})),
        ] {
            assert!(
                Action::parse(kind, payload.clone()).is_err(),
                "{kind} {payload} was accepted"
            );
        }
    }

    #[test]
    fn the_family_is_refused_while_disabled() {
        let action = Action::parse("caddy.list", json!({})).unwrap();
        let mut config = crate::Config::default();
        assert!(action.check_config(&config).is_err());
        config.caddy.enabled = true;
        assert!(action.check_config(&config).is_ok());
    }
}
