//! The `systemd` family: unit management (the Pockestrator's), parsed into
//! types at the edge.
//!
//! - `systemd.start|stop|restart|reload|enable|disable|status {unit}`;
//! - `systemd.logs {unit, lines?, since?}`: journal lines of a unit;
//! - `systemd.unit.install {unit, exec_start, …}`: a service unit rendered
//!   from a spec (never from caller-written unit text), verified, written
//!   atomically to `[systemd] unit_dir`, optionally enabled and started;
//! - `systemd.unit.remove {unit}`: stopped, disabled, its file deleted;
//! - `systemd.refresh {}`: observes every unit the driver may touch.
//!
//! Who may be touched: a unit matched by a `[systemd] deny` pattern never
//! (checked here, against the configuration, before anything is stored);
//! otherwise one matched by an `allow` pattern, or one opsqueue installed
//! itself (the worker checks `managed_objects`). Every unit action's
//! resource is `systemd:<unit>`, so actions on one unit run in order.

mod actions;
mod config;
mod names;
mod routes;

pub use actions::*;
pub use config::*;
pub use names::*;

use crate::families::family::Family;

/// The `systemd` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "systemd",
    description: "systemd units: start, stop, restart, reload, enable, disable, status, logs; install from a spec and remove; reads from the last observation",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: Some(
        "The unit is denied by a [systemd] deny pattern, or (an action on an existing unit) neither matched by an allow pattern nor installed by opsqueue on the target",
    ),
    refresh: Some("systemd.refresh"),
};
