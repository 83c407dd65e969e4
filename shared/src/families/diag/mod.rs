//! The `diag` family: actions that touch nothing on the host, for tests,
//! benchmarks and checking that a worker is alive. `diag.sleep` with
//! `child: true` runs `sleep` as a child process through the command runner,
//! so that cancellation and timeouts can be seen to kill real processes.
//!
//! Every diag action takes an optional `key`, which makes its resource
//! `diag:<key>` (to exercise per-resource ordering), and an optional
//! `rerun_safe` (default true, to exercise the reaper's two paths).

mod actions;
mod config;

pub use actions::*;
pub use config::*;

use crate::families::family::Family;

/// The `diag` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "diag",
    description: "Actions that touch nothing on the host: for tests, benchmarks and liveness checks",
    catalogue: actions::CATALOGUE,
    routes: &[],
    reach: None,
    refresh: None,
};
