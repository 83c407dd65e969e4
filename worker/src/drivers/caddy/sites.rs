//! The JSON shapes of Caddy's configuration that the driver writes and
//! reads, as pure functions (tested on recorded configurations):
//!
//! - [`site_route`]: the route of one site, the shape `caddy adapt` makes
//!   of `http://<domain> { reverse_proxy <upstream> }`, with a stable `@id`;
//! - [`choose_server`]: which server under `apps.http.servers` gets sites;
//! - [`sites_in`]: every host-matched route of every server, as sites.

use std::collections::BTreeMap;

use opsqueue_shared::families::caddy::{SITE_ID_PREFIX, SiteSpec, site_id};
use serde::Serialize;
use serde_json::{Value, json};

/// The route that proxies `spec.domain` to `spec.upstream`.
pub fn site_route(spec: &SiteSpec) -> Value {
    json!({
        "@id": site_id(&spec.domain),
        "match": [{"host": [spec.domain.as_str()]}],
        "handle": [{
            "handler": "subroute",
            "routes": [{
                "handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": spec.upstream.dial()}],
                }],
            }],
        }],
        "terminal": true,
    })
}

/// Whether a server's `listen` list has an address on `port`
/// (`:443`, `0.0.0.0:443`, `[::]:443`, `tcp/:443`).
fn listens_on(server: &Value, port: &str) -> bool {
    server["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|address| address.rsplit_once(':').is_some_and(|(_, p)| p == port))
}

/// Server names that may be put in a URL path unescaped.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !name.contains("..")
}

/// The server that gets sites: the configured one, else the one listening
/// on `:443`, else on `:80`, else the only one. `servers` is
/// `apps.http.servers` (`null` when Caddy has no HTTP app).
pub fn choose_server(servers: &Value, configured: Option<&str>) -> Result<String, String> {
    let empty = serde_json::Map::new();
    let servers = servers.as_object().unwrap_or(&empty);
    let chosen = match configured {
        Some(name) if servers.contains_key(name) => name.to_owned(),
        Some(name) => {
            return Err(format!(
                "Caddy has no server {name:?} (servers: {:?}); check [caddy] server",
                servers.keys().collect::<Vec<_>>()
            ));
        }
        None => {
            let on = |port: &str| -> Vec<&String> {
                servers
                    .iter()
                    .filter(|(_, server)| listens_on(server, port))
                    .map(|(name, _)| name)
                    .collect()
            };
            let found = [on("443"), on("80")]
                .into_iter()
                .find(|names| !names.is_empty())
                .unwrap_or_else(|| servers.keys().collect());
            match found.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(
                        "Caddy has no HTTP server to add sites to (apps.http.servers is empty)"
                            .into(),
                    );
                }
                many => {
                    return Err(format!(
                        "Caddy has several candidate servers {many:?}; name one in [caddy] server"
                    ));
                }
            }
        }
    };
    if !plain_name(&chosen) {
        return Err(format!("Caddy server name {chosen:?} is not a plain name"));
    }
    Ok(chosen)
}

/// Every `dial` under any `upstreams` array in `value` (handlers nest in
/// subroutes), in order.
pub fn dials(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_dials(value, &mut found);
    found
}

fn collect_dials(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "upstreams" {
                    for upstream in child.as_array().into_iter().flatten() {
                        if let Some(dial) = upstream["dial"].as_str() {
                            found.push(dial.to_owned());
                        }
                    }
                } else {
                    collect_dials(child, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_dials(item, found)),
        _ => {}
    }
}

/// A site Caddy serves: one host of a route's matchers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedSite {
    pub domain: String,
    pub server: String,
    /// Where its requests go (empty for other handlers: files, responses).
    pub upstreams: Vec<String>,
    /// The route's `@id`, if it has one.
    pub id: Option<String>,
    /// The route carries opsqueue's `@id`.
    pub opsqueue: bool,
    /// How many routes match this host (more than one: only the first
    /// answers).
    pub routes: usize,
}

/// Every host-matched route of every server, by domain (lower case); the
/// first route of a host wins, as in Caddy.
pub fn sites_in(servers: &Value) -> BTreeMap<String, ObservedSite> {
    let mut sites: BTreeMap<String, ObservedSite> = BTreeMap::new();
    let Some(servers) = servers.as_object() else {
        return sites;
    };
    for (server, config) in servers {
        for route in config["routes"].as_array().into_iter().flatten() {
            let id = route["@id"].as_str().map(str::to_owned);
            let hosts = route["match"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["host"].as_array().into_iter().flatten())
                .filter_map(Value::as_str);
            for host in hosts {
                let domain = host.to_ascii_lowercase();
                sites
                    .entry(domain.clone())
                    .and_modify(|site| site.routes += 1)
                    .or_insert_with(|| ObservedSite {
                        domain,
                        server: server.clone(),
                        upstreams: dials(&route["handle"]),
                        opsqueue: id.as_deref().is_some_and(|i| i.starts_with(SITE_ID_PREFIX)),
                        id: id.clone(),
                        routes: 1,
                    });
            }
        }
    }
    sites
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsqueue_shared::Action;
    use opsqueue_shared::families::caddy::CaddyAction;

    fn spec(domain: &str, upstream: &str) -> SiteSpec {
        match Action::parse(
            "caddy.site.add",
            json!({"domain": domain, "upstream": upstream}),
        )
        .unwrap()
        {
            Action::Caddy(CaddyAction::SiteAdd(spec)) => spec,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_site_route_has_the_adapted_shape_and_a_stable_id() {
        let route = site_route(&spec("pb1.example.test", "127.0.0.1:8090"));
        assert_eq!(route["@id"], "opsqueue-site-pb1.example.test");
        assert_eq!(route["match"], json!([{"host": ["pb1.example.test"]}]));
        assert_eq!(route["terminal"], true);
        assert_eq!(dials(&route), ["127.0.0.1:8090"]);
    }

    #[test]
    fn the_server_is_the_configured_one_or_the_one_on_the_https_port() {
        let servers = json!({
            "srv0": {"listen": [":443"], "routes": []},
            "srv1": {"listen": ["127.0.0.1:8080"]},
        });
        assert_eq!(choose_server(&servers, None).unwrap(), "srv0");
        assert_eq!(choose_server(&servers, Some("srv1")).unwrap(), "srv1");
        assert!(choose_server(&servers, Some("nope")).is_err());
        let plain = json!({"web": {"listen": [":80"]}, "admin": {"listen": [":9000"]}});
        assert_eq!(choose_server(&plain, None).unwrap(), "web");
        let one = json!({"test": {"listen": ["127.0.0.1:18080"]}});
        assert_eq!(choose_server(&one, None).unwrap(), "test");
        let two = json!({"a": {"listen": [":1"]}, "b": {"listen": [":2"]}});
        assert!(choose_server(&two, None).unwrap_err().contains("several"));
        assert!(choose_server(&Value::Null, None).is_err());
        let odd = json!({"a/b": {"listen": [":80"]}});
        assert!(choose_server(&odd, None).is_err());
    }

    #[test]
    fn sites_are_read_from_every_host_matched_route() {
        let servers = json!({
            "srv0": {"listen": [":80"], "routes": [
                site_route(&spec("pb1.example.test", "127.0.0.1:8090")),
                site_route(&spec("pb1.example.test", "127.0.0.1:8091")),
                {"match": [{"host": ["Static.Example.test", "www.static.example.test"]}],
                 "handle": [{"handler": "file_server"}]},
                {"handle": [{"handler": "static_response", "status_code": 404}]},
            ]},
        });
        let sites = sites_in(&servers);
        assert_eq!(sites.len(), 3);
        let pb1 = &sites["pb1.example.test"];
        assert_eq!(pb1.upstreams, ["127.0.0.1:8090"]);
        assert!(pb1.opsqueue);
        assert_eq!(pb1.routes, 2);
        let static_site = &sites["static.example.test"];
        assert!(static_site.upstreams.is_empty() && !static_site.opsqueue);
        assert_eq!(static_site.server, "srv0");
    }
}
