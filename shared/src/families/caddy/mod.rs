//! The `caddy` family: reverse-proxy sites for deployed services, through
//! Caddy's admin API on loopback.
//!
//! - `caddy.site.add {domain, upstream}`: requests for `domain` are proxied
//!   to `upstream` (`host:port` on this host or its private network);
//! - `caddy.site.remove {domain}`;
//! - `caddy.list {}`: observes the sites Caddy serves;
//! - `caddy.validate {}`: compares the managed sites with Caddy's live
//!   configuration and reports drift, changing nothing;
//! - `caddy.reload {}`: re-applies every managed site (after a Caddy
//!   restart or a reload from its Caddyfile) and observes the result.
//!
//! Site actions serialize on `caddy:site:<domain>`. The managed sites (in
//! `managed_objects`) are the desired state; `caddy.reload` makes Caddy
//! match it, and the monitor schedules one (`refresh-caddy`).

mod actions;
mod config;
mod routes;

pub use actions::*;
pub use config::*;

use crate::families::family::Family;

/// The `caddy` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "caddy",
    description: "Caddy reverse-proxy sites through its admin API: add, remove, reload (re-apply), validate; reads from the last observation",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: None,
    refresh: Some("caddy.reload"),
};
