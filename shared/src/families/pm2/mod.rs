//! The `pm2` family (the PM2 controller): start an app from a spec, stop,
//! restart, reload, delete, flush its logs; list, describe and read logs.
//!
//! Every name and path is parsed here: a [`ProcessName`] can never be read
//! by pm2 as an id (all digits), as `all`, or as an option; the script and
//! the working directory are plain absolute paths, and
//! [`FamilyAction::check_config`] keeps them inside `[pm2] base_dir` (the
//! worker resolves symlinks and checks again). Environment variable names
//! are checked, and the `env` field is a secret field: its values are
//! stored apart and shown as `"***"` in every answer, so a read-scope key
//! never sees them.
//!
//! Each action serializes on `pm2:<name>` (`pm2.list` on nothing). All but
//! restart and reload are safe to re-run after a lost worker: each one
//! first looks at pm2's list, so a second run finds the work done. A
//! restart or reload cannot tell that it already ran, so a second run would
//! interrupt the app a second time; as with systemd's, the reaper fails
//! them instead of running them again.

mod actions;
mod config;
mod routes;

pub use actions::*;
pub use config::*;

use crate::families::family::Family;

/// The `pm2` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "pm2",
    description: "pm2 apps (the PM2 controller): start from a spec, stop, restart, reload, delete, logs; reads from the last observation",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: None,
    refresh: Some("pm2.list"),
};
