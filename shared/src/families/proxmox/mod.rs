//! The `proxmox` family: power and migration of Proxmox VE guests (QEMU
//! VMs and LXC containers), connection tests and refreshes of the observed
//! guests, through the PVE REST API of a node registered in the store
//! (`proxmox_nodes`).
//!
//! A registered node is an API endpoint: a standalone host, or one member
//! through which its whole cluster is reached. Its guests are every guest
//! that endpoint's cluster lists, each on its own PVE node; a guest action
//! names the registered node and the cluster-wide `vmid`, and the worker
//! finds the guest's current PVE node and type itself.
//!
//! Serialization: a guest action's resource is `proxmox:{node id}:{vmid}`.
//! PVE keeps a vmid unique across its cluster and a migration keeps it, so
//! this one key covers the guest on its source and its target node alike:
//! a migration excludes every other operation on that guest through the
//! same registered node, wherever the guest is. (Registering one cluster
//! twice gives two keys; the docs say to register a cluster once.)
//!
//! Secrets: `proxmox.test_connection` carries an unsaved token secret in
//! `token_secret`, a secret field (stored apart, shown as `***`). Saved
//! nodes' secrets stay in `proxmox_nodes` and never enter a payload.

mod actions;
mod config;
mod names;

pub use actions::*;
pub use config::*;
pub use names::*;

use crate::families::family::Family;

/// The `proxmox` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "proxmox",
    description: "Proxmox VE nodes, their guests' power and migration, and history",
    catalogue: actions::CATALOGUE,
    routes: &[],
    reach: None,
    refresh: Some("proxmox.refresh"),
};
