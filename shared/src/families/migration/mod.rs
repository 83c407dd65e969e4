//! The `migration` family: moving a workload and its state directory from
//! one target to another, as a workflow whose steps run on both targets
//! (each step's `target` picks the worker) and undo themselves.
//!
//! - `names.rs`: a process's id across the fleet (`pm2:web@server-a`);
//! - `actions.rs`: the steps only this family can do (inspect, preflight,
//!   copy, upload, restore, discard, start, health); stopping and starting
//!   the source are the `pm2` family's own actions;
//! - `workflows.rs`: the migration workflow built from a request;
//! - `config.rs`: `[migration]`, the workers' staging directory and the
//!   health check's bounds.
//!
//! The state travels as one tar archive through the API host (the
//! artifacts of `store/artifacts.rs`): the source uploads it in chunks, the
//! target downloads it, both sha256-verified. The routes are hand-written in
//! the API (`routes/migration.rs`): their shapes follow the process
//! migration system's REST API, not the typed-route patterns.

mod actions;
mod config;
mod names;
mod workflows;

pub use actions::*;
pub use config::*;
pub use names::*;
pub use workflows::*;

use crate::families::family::Family;

/// The `migration` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "migration",
    description: "Process migration: a workload and its state directory moved between targets as a workflow with rollback",
    catalogue: actions::CATALOGUE,
    routes: &[],
    reach: None,
    refresh: None,
};
