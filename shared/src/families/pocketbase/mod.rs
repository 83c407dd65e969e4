//! The `pocketbase` family: PocketBase services on a host (the
//! Pockestrator's backend), each request one workflow or one operation.
//!
//! A service `name` is a directory `{base_dir}/{name}` (root-owned; the
//! binary copied from the version cache; `pb_data` owned by the service
//! user `pb-{name}`, mode 0750; `service.env`, 0600), a hardened unit
//! `pocketbase-{name}.service` (`serve --http=127.0.0.1:{port} --dir
//! {pb_data}`, only pb_data writable) and, with a domain, a Caddy site
//! proxying to it. Its record is a managed object (kind `service`), its
//! runtime state an observation of the same name.
//!
//! - `workflows.rs`: create, upgrade and delete, built in code from the
//!   route's request out of this family's steps and the `systemd` and
//!   `caddy` families' (so the unit is rendered and verified by the
//!   systemd family, the site added by the caddy family);
//! - `actions.rs`: the steps only this family can do (check, home,
//!   binary, superuser, health, verify, backup, restore, version install)
//!   and the single operations (control, status, logs, validation,
//!   refresh);
//! - `routes.rs`: `/api/v1/pocketbase/…` as data.
//!
//! Secrets (a superuser's password, a service's environment) are secret
//! fields: stored apart, shown as `***`, redacted from every log line.

mod actions;
mod config;
mod names;
mod routes;
mod workflows;

pub use actions::*;
pub use config::*;
pub use names::*;

use crate::families::family::Family;

/// The `pocketbase` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "pocketbase",
    description: "PocketBase services (the Pockestrator's API): create, upgrade and delete as workflows that undo themselves; control, logs, validation, version cache; reads from the service records and their last observation",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: None,
    refresh: Some("pocketbase.refresh"),
};
