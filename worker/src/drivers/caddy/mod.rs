//! The `caddy` driver: reverse-proxy sites through Caddy's admin API on
//! loopback (`[caddy] admin_url`), one HTTP client per driver.
//!
//! Invariants:
//! - **One route per site, with a stable `@id`** (`opsqueue-site-<domain>`).
//!   An add looks it up first (`GET /id/<id>`): the same route is a no-op
//!   (`changed: false`), a different one is replaced in place (`PATCH`),
//!   and copies (Caddy 2.6 accepts duplicate ids) are deleted before one is
//!   inserted. A new route is inserted *first* (`PUT …/routes/0`), so no
//!   catch-all route ahead of it can shadow it.
//! - **Never shadows a site it did not add**: an add for a domain that a
//!   route without opsqueue's `@id` already matches fails
//!   `caddy_site_conflict`.
//! - **Only `/config/…` and `/id/…` are written**, never `/load` (see
//!   `admin`), so a refused change cannot move the admin listener.
//! - **The managed sites are the desired state.** `site.add` records its
//!   spec in `managed_objects`, `site.remove` deletes it; `caddy.reload`
//!   re-applies every managed site, so sites survive a Caddy restart (or a
//!   reload from its Caddyfile) once a reload runs: the monitor schedules
//!   one (`refresh-caddy`, every minute by default). Sites Caddy serves
//!   that opsqueue did not add are observed, never changed.
//!   A reload checks each site is still managed just before re-applying
//!   it; a removal that commits in the instant between that check and the
//!   re-apply leaves the route live but unmanaged (a second remove clears
//!   it): site actions and reloads serialize on different resources.
//! - Errors: no answer is retryable, any answer a refusal (see `admin`).
//! - The worker's start-up probe waits at most [`PROBE_TIMEOUT`] for an
//!   answer: a hung admin API must not hold up the worker's start.

pub mod admin;
pub mod sites;

use std::collections::BTreeMap;
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::caddy::CaddyConfig;
use opsqueue_shared::families::caddy::{
    CaddyAction, FAMILY, SITE_KIND, SiteRef, SiteSpec, site_id,
};
use opsqueue_shared::names::Domain;
use opsqueue_shared::store::StateEffect;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome, Probe};
use crate::link::Link;
pub use admin::codes as admin_codes;
use admin::{Admin, refusal};
use sites::{ObservedSite, choose_server, site_route, sites_in};

/// This driver's own error codes (the admin API's are in [`admin_codes`]).
pub mod codes {
    /// No server to add sites to, or the configured one is missing.
    pub const CADDY_SERVER: &str = "caddy_server";
    /// The domain is served by a route opsqueue did not add.
    pub const CADDY_SITE_CONFLICT: &str = "caddy_site_conflict";
    /// A route's `@id` would not go away.
    pub const CADDY_STUCK: &str = "caddy_stuck";
    /// The store could not be read: retryable.
    pub const STORE: &str = "store_unavailable";
    /// `caddy.reload` could not re-apply some sites.
    pub const CADDY_RELOAD: &str = "caddy_reload_incomplete";
}

/// How many copies of one `@id` a removal deletes before it gives up.
const MAX_COPIES: usize = 64;

const SERVERS_PATH: &str = "/config/apps/http/servers";

pub struct Caddy {
    config: CaddyConfig,
    link: Link,
    admin: Admin,
}

/// How many routes of `servers` carry `@id` `id` (each server's top level,
/// where opsqueue puts them).
fn copies_of(servers: &Value, id: &str) -> usize {
    servers
        .as_object()
        .into_iter()
        .flat_map(|servers| servers.values())
        .flat_map(|server| server["routes"].as_array().into_iter().flatten())
        .filter(|route| route["@id"] == id)
        .count()
}

fn observation(site: &ObservedSite) -> Value {
    serde_json::to_value(site).expect("a site serializes")
}

impl Caddy {
    pub fn new(config: &Config, link: &Link) -> Self {
        let caddy = config.caddy.clone();
        let admin = Admin::new(
            &caddy.admin_url,
            Duration::from_secs(caddy.request_timeout_secs),
        );
        Self {
            config: caddy,
            link: link.clone(),
            admin,
        }
    }

    /// `apps.http.servers` (`null` when Caddy has no HTTP app).
    async fn servers(&self, ctx: &Context) -> Result<Value, DriverError> {
        self.admin
            .expect_ok(ctx, Method::GET, SERVERS_PATH, None)
            .await
    }

    /// The route with `@id` `id`, if Caddy has one.
    async fn find(&self, ctx: &Context, id: &str) -> Result<Option<Value>, DriverError> {
        let path = format!("/id/{id}");
        let answer = self.admin.request(ctx, Method::GET, &path, None).await?;
        match answer.status {
            status if status.is_success() => Ok(Some(answer.body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refusal(&Method::GET, &path, &answer)),
        }
    }

    /// Deletes every route with `@id` `id` (one per request, until 404);
    /// returns how many there were.
    async fn delete_all(&self, ctx: &Context, id: &str) -> Result<usize, DriverError> {
        let path = format!("/id/{id}");
        let mut deleted = 0;
        while deleted < MAX_COPIES {
            let answer = self.admin.request(ctx, Method::DELETE, &path, None).await?;
            match answer.status {
                status if status.is_success() => deleted += 1,
                StatusCode::NOT_FOUND => return Ok(deleted),
                _ => return Err(refusal(&Method::DELETE, &path, &answer)),
            }
        }
        Err(DriverError::permanent(
            codes::CADDY_STUCK,
            format!("{MAX_COPIES} deletions of {path} and it is still there"),
        ))
    }

    /// Makes Caddy serve `spec` (see the module header); `servers` is the
    /// configuration as just read. Returns whether it changed anything.
    async fn ensure_site(
        &self,
        ctx: &Context,
        spec: &SiteSpec,
        servers: &Value,
    ) -> Result<bool, DriverError> {
        let id = site_id(&spec.domain);
        let desired = site_route(spec);
        let copies = copies_of(servers, &id);
        let current = self.find(ctx, &id).await?;
        if let Some(route) = &current
            && copies <= 1
        {
            if *route == desired {
                return Ok(false);
            }
            ctx.step(format!("{} changed: replacing its route", spec.domain));
            self.admin
                .expect_ok(ctx, Method::PATCH, &format!("/id/{id}"), Some(&desired))
                .await?;
            return Ok(true);
        }
        if current.is_none()
            && let Some(site) = sites_in(servers).get(spec.domain.as_str())
            && !site.opsqueue
        {
            return Err(DriverError::permanent(
                codes::CADDY_SITE_CONFLICT,
                format!(
                    "Caddy already serves {} through a route opsqueue did not add (server {}); \
                     remove that route first, opsqueue will not shadow it",
                    spec.domain, site.server
                ),
            ));
        }
        if current.is_some() {
            let deleted = self.delete_all(ctx, &id).await?;
            ctx.step(format!("deleted {deleted} copies of {id}"));
        }
        let server = choose_server(servers, self.config.server.as_deref())
            .map_err(|m| DriverError::permanent(codes::CADDY_SERVER, m))?;
        let routes = format!("{SERVERS_PATH}/{server}/routes");
        if servers[&server]["routes"].is_array() {
            self.admin
                .expect_ok(ctx, Method::PUT, &format!("{routes}/0"), Some(&desired))
                .await?;
        } else {
            self.admin
                .expect_ok(ctx, Method::POST, &routes, Some(&json!([desired])))
                .await?;
        }
        ctx.step(format!(
            "added {} → {} to server {server}",
            spec.domain, spec.upstream
        ));
        Ok(true)
    }

    /// Whether opsqueue still manages `domain` on this target.
    async fn is_managed(&self, ctx: &Context, domain: &Domain) -> Result<bool, DriverError> {
        let name = domain.to_string();
        let rows = self
            .link
            .managed_list(ctx.target(), FAMILY, SITE_KIND, Some(&name))
            .await
            .map_err(|e| DriverError::retryable(codes::STORE, e.to_string()))?;
        Ok(!rows.is_empty())
    }

    /// The specs of the sites opsqueue manages on this target.
    async fn managed_sites(&self, ctx: &Context) -> Result<Vec<SiteSpec>, DriverError> {
        let rows = self
            .link
            .managed_list(ctx.target(), FAMILY, SITE_KIND, None)
            .await
            .map_err(|e| DriverError::retryable(codes::STORE, e.to_string()))?;
        let mut specs = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value::<SiteSpec>(row.spec) {
                Ok(spec) => specs.push(spec),
                Err(e) => ctx.step(format!(
                    "skipping managed site {}: its spec no longer parses: {e}",
                    row.name
                )),
            }
        }
        Ok(specs)
    }

    /// Records every site Caddy serves (replacing earlier observations).
    fn observe_all(ctx: &Context, sites: &BTreeMap<String, ObservedSite>) {
        ctx.record(StateEffect::ObservedAll {
            family: FAMILY.into(),
            kind: SITE_KIND.into(),
            items: sites
                .iter()
                .map(|(domain, site)| (domain.clone(), observation(site)))
                .collect(),
        });
    }

    fn observe_one(ctx: &Context, domain: &Domain, sites: &BTreeMap<String, ObservedSite>) {
        let effect = match sites.get(domain.as_str()) {
            Some(site) => StateEffect::Observed {
                family: FAMILY.into(),
                kind: SITE_KIND.into(),
                name: domain.to_string(),
                data: observation(site),
            },
            None => StateEffect::ObservedGone {
                family: FAMILY.into(),
                kind: SITE_KIND.into(),
                name: domain.to_string(),
            },
        };
        ctx.record(effect);
    }

    async fn site_add(&self, ctx: &Context, spec: &SiteSpec) -> Result<Outcome, DriverError> {
        let servers = self.servers(ctx).await?;
        let changed = self.ensure_site(ctx, spec, &servers).await?;
        let after = sites_in(&self.servers(ctx).await?);
        ctx.record(StateEffect::Managed {
            family: FAMILY.into(),
            kind: SITE_KIND.into(),
            name: spec.domain.to_string(),
            spec: serde_json::to_value(spec).expect("a site spec serializes"),
        });
        Self::observe_one(ctx, &spec.domain, &after);
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome
            .with("domain", &spec.domain)
            .with("upstream", &spec.upstream)
            .with("server", after.get(spec.domain.as_str()).map(|s| &s.server)))
    }

    async fn site_remove(&self, ctx: &Context, site: &SiteRef) -> Result<Outcome, DriverError> {
        let deleted = self.delete_all(ctx, &site_id(&site.domain)).await?;
        ctx.record(StateEffect::Unmanaged {
            family: FAMILY.into(),
            kind: SITE_KIND.into(),
            name: site.domain.to_string(),
        });
        let after = sites_in(&self.servers(ctx).await?);
        Self::observe_one(ctx, &site.domain, &after);
        let outcome = if deleted > 0 {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome
            .with("domain", &site.domain)
            .with("routes_deleted", deleted))
    }

    async fn list(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let sites = sites_in(&self.servers(ctx).await?);
        Self::observe_all(ctx, &sites);
        Ok(Outcome::unchanged()
            .with("count", sites.len())
            .with("sites", sites.values().collect::<Vec<_>>()))
    }

    async fn validate(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let managed = self.managed_sites(ctx).await?;
        let servers = self.servers(ctx).await?;
        let (mut missing, mut drifted, mut duplicated) = (Vec::new(), Vec::new(), Vec::new());
        for spec in &managed {
            let id = site_id(&spec.domain);
            match self.find(ctx, &id).await? {
                None => missing.push(spec.domain.to_string()),
                Some(route) if route != site_route(spec) => drifted.push(spec.domain.to_string()),
                Some(_) => {}
            }
            if copies_of(&servers, &id) > 1 {
                duplicated.push(spec.domain.to_string());
            }
        }
        let sites = sites_in(&servers);
        Self::observe_all(ctx, &sites);
        let ok = missing.is_empty() && drifted.is_empty() && duplicated.is_empty();
        Ok(Outcome::unchanged()
            .with("ok", ok)
            .with("checked", managed.len())
            .with("missing", missing)
            .with("drifted", drifted)
            .with("duplicated", duplicated))
    }

    async fn reload(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let managed = self.managed_sites(ctx).await?;
        let mut servers = self.servers(ctx).await?;
        let mut reapplied = Vec::new();
        let mut failed = Vec::new();
        for spec in &managed {
            // A removal that committed since the list was read wins.
            if !self.is_managed(ctx, &spec.domain).await? {
                continue;
            }
            match self.ensure_site(ctx, spec, &servers).await {
                Ok(true) => {
                    reapplied.push(spec.domain.to_string());
                    servers = self.servers(ctx).await?;
                }
                Ok(false) => {}
                Err(e) if e.retryable || e.code == crate::drivers::driver::codes::CANCELLED => {
                    return Err(e);
                }
                Err(e) => {
                    ctx.step(format!("cannot re-apply {}: {e}", spec.domain));
                    failed.push(format!("{}: {}", spec.domain, e.message));
                }
            }
        }
        let sites = sites_in(&servers);
        Self::observe_all(ctx, &sites);
        if !failed.is_empty() {
            return Err(DriverError::permanent(
                codes::CADDY_RELOAD,
                format!(
                    "{} of {} managed sites could not be re-applied: {}",
                    failed.len(),
                    managed.len(),
                    failed.join("; ")
                ),
            ));
        }
        let outcome = if reapplied.is_empty() {
            Outcome::unchanged()
        } else {
            Outcome::changed()
        };
        Ok(outcome
            .with("managed", managed.len())
            .with("reapplied", reapplied))
    }
}

/// The family's driver, as the registry builds it when `[caddy]` is enabled.
pub fn driver(config: &Config, link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::probed(Caddy::new(config, link)))
}

impl Driver for Caddy {
    type Action = CaddyAction;

    async fn execute(&self, action: &CaddyAction, ctx: &Context) -> Result<Outcome, DriverError> {
        match action {
            CaddyAction::SiteAdd(spec) => self.site_add(ctx, spec).await,
            CaddyAction::SiteRemove(site) => self.site_remove(ctx, site).await,
            CaddyAction::List(_) => self.list(ctx).await,
            CaddyAction::Validate(_) => self.validate(ctx).await,
            CaddyAction::Reload(_) => self.reload(ctx).await,
        }
    }
}

impl Probe for Caddy {
    /// `GET /config/`: the admin API answers.
    async fn probe(&self, ctx: &Context) -> Result<String, DriverError> {
        self.admin
            .expect_ok(ctx, Method::GET, "/config/", None)
            .await?;
        Ok(format!("admin API at {} answers", self.admin.base()))
    }
}
