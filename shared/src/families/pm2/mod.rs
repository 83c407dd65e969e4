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
//! `pm2.update` changes an existing app's settings through pm2's own
//! reload path (an ecosystem file given to `pm2 reload`/`restart`, then
//! `pm2 scale`) and puts the previous settings back the same way when the
//! app does not come up with the new ones.
//!
//! Each action serializes on `pm2:<name>` (`pm2.list` on nothing). All but
//! restart, reload and update are safe to re-run after a lost worker: each
//! one first looks at pm2's list, so a second run finds the work done. A
//! restart or reload cannot tell that it already ran, so a second run would
//! interrupt the app a second time; an update cut short may have left the
//! new settings without checking them (a second run would find them set
//! and call them done). As with systemd's, the reaper fails them instead of
//! running them again.

mod actions;
mod config;
mod routes;
mod settings;

pub use actions::*;
pub use config::*;
pub use settings::*;

use crate::families::family::Family;

/// The `pm2` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "pm2",
    description: "pm2 apps (the PM2 controller): start from a spec, change settings, stop, restart, reload, delete, logs; reads from the last observation",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: None,
    refresh: Some("pm2.list"),
};
