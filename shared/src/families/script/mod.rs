//! The `script` family: `script.run {name, args, input}` runs an executable
//! from the configured scripts directory (the CloudPanel pattern:
//! `manage_site.sh create <operation id>`).
//!
//! The name is a plain file name (no `/`, no `..`, not option-like); which
//! file it resolves to, and that it is executable and does not escape the
//! directory through a symlink, is the worker's to check. Arguments are
//! literal (no shell) and limited to a safe set of characters; an argument
//! that is exactly [`OPERATION_ID_ARG`] becomes the operation's id. `input`,
//! any JSON object, reaches the script on stdin with the rest of the payload.
//!
//! Scripts serialize on `script:<name>` and are not safe to re-run after a
//! lost worker: opsqueue cannot know what a script did half-way.

mod actions;
mod config;

pub use actions::*;
pub use config::*;

use crate::families::family::Family;

/// The `script` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "scripts",
    description: "Allow-listed executables from [scripts] dir (script.run)",
    catalogue: actions::CATALOGUE,
    routes: &[],
    reach: None,
    refresh: None,
};
