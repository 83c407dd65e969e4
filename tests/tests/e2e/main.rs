//! End-to-end tests: the real binaries as processes on temporary databases,
//! driven over HTTP like a user would, against real host programs. One test
//! binary; one module per area.

mod bench;
mod caddy;
mod cloudpanel;
mod dashboard;
mod dashboard_pocketbase;
mod fleet;
mod migration;
mod openapi_conformance;
mod pm2;
mod pocketbase;
mod proxmox;
mod queue;
mod scripts;
mod sources;
mod storage;
mod systemd;
mod systemd_notify;
mod systemd_units;
mod workflows;
