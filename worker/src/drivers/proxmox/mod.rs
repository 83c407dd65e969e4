//! The `proxmox` driver: Proxmox VE guests through the PVE REST API, with
//! the API token of a node registered in the store.
//!
//! - `test_connection` / `node.test` read `/version`; they complete either
//!   way, with `connected` true (and PVE's version) or false (and why). A
//!   saved node's answer is also observed (the node's status in the API).
//! - `refresh` observes a node's guests (`/cluster/resources`, refined by
//!   `status/current` for running VMs) and the node itself. One node: an
//!   unreachable node fails it (retryable). Every node (the default
//!   schedule): it completes, observing the unreachable ones as such.
//! - A guest action finds the guest in the cluster, waits out a migration
//!   in progress, reads `status/current`, and completes `changed: false`
//!   when the guest already is in the desired state. Otherwise it posts the
//!   action, records the task's UPID (log and progress), waits for the task
//!   (see `task`), copies its log and maps its exit status. An HA task only
//!   files a request with ha-manager, so the desired state is then awaited;
//!   a migration is confirmed on `/cluster/resources`. The guest is
//!   observed again at the end.
//! - A later attempt of the same operation (a retry, or a re-run after the
//!   worker was lost) first looks at the UPID the earlier attempt recorded:
//!   a task still running is waited for, one that ended OK completes the
//!   operation, and only one that failed (or none) leads to a new request.
//!
//! The node's connection, token secret included, is read from the store
//! for each operation. The secret only
//! reaches the `Authorization` header: never a log line, a result or an
//! error.

mod client;
mod guest;
mod task;

use std::time::Duration;

use opsqueue_shared::families::proxmox::{
    Connection, GuestAction, GuestType, NodeId, ProxmoxAction, Refresh,
};
use opsqueue_shared::store::proxmox::{
    FAMILY, NODE_KIND, NodeConnection, guests_kind, proxmox_node_connection, proxmox_node_list,
};
use opsqueue_shared::store::{StateEffect, operation_get};
use opsqueue_shared::{Config, Store};
use serde_json::{Value, json};

use client::PveClient;
pub use client::codes;
use guest::Located;
use task::Upid;

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome};
use crate::link::Link;

/// How long after a non-HA migration ended OK `/cluster/resources` may
/// take to show the guest on its target.
const MIGRATION_SETTLE: Duration = Duration::from_secs(10);

pub struct Proxmox {
    store: Store,
    poll: Duration,
}

impl Proxmox {
    /// `store` is read for the nodes' connections (never written).
    pub fn new(config: &Config, store: &Store) -> Self {
        Self {
            store: store.clone(),
            poll: Duration::from_millis(config.proxmox.poll_interval_ms),
        }
    }

    async fn node(&self, id: NodeId) -> Result<NodeConnection, DriverError> {
        self.store
            .call(move |s| s.read(|c| proxmox_node_connection(c, id)))
            .await
            .map_err(|e| store_error(e.to_string()))?
            .ok_or_else(|| {
                DriverError::permanent(
                    codes::NODE_NOT_FOUND,
                    format!("no registered Proxmox node {id}"),
                )
            })
    }

    /// The task an earlier run of this operation recorded, if any (a
    /// retry, a re-run after a lost worker or a shutdown's release keep the
    /// progress; a caller's `/retry` clears it).
    async fn recorded_task(&self, ctx: &Context) -> Result<Option<Upid>, DriverError> {
        let id = ctx.id();
        let op = self
            .store
            .call(move |s| s.read(|c| operation_get(c, id)))
            .await
            .map_err(|e| store_error(e.to_string()))?;
        Ok(op
            .and_then(|op| op.progress)
            .and_then(|p| p.step)
            .and_then(|step| task::recorded_upid(&step)))
    }

    async fn test(&self, connection: &Connection, node: Option<NodeId>, ctx: &Context) -> Outcome {
        ctx.step(format!("connecting to {}", connection.base_url()));
        let answer = match PveClient::new(connection) {
            Ok(client) => client.get(&["version"], &[]).await,
            Err(e) => Err(e),
        };
        let (outcome, observed) = match answer {
            Ok(version) => {
                let release = version
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let message = format!("Connected to Proxmox VE {release}");
                ctx.step(&message);
                (
                    Outcome::unchanged()
                        .with("connected", true)
                        .with("version", release)
                        .with("release", version.get("release"))
                        .with("message", &message),
                    json!({"connected": true, "version": release, "release": version.get("release")}),
                )
            }
            Err(e) => {
                ctx.step(format!("not connected ({}): {}", e.code, e.message));
                (
                    Outcome::unchanged()
                        .with("connected", false)
                        .with("error", json!({"code": e.code, "message": e.message})),
                    json!({"connected": false, "error": {"code": e.code, "message": e.message}}),
                )
            }
        };
        if let Some(node) = node {
            ctx.record(StateEffect::Observed {
                family: FAMILY.into(),
                kind: NODE_KIND.into(),
                name: node.to_string(),
                data: observed,
            });
        }
        outcome.with("node", node.map(|n| n.to_string()))
    }

    async fn refresh(&self, refresh: &Refresh, ctx: &Context) -> Result<Outcome, DriverError> {
        if let Some(id) = refresh.node {
            let node = self.node(id).await?;
            let guests = refresh_node(&node, ctx).await?;
            return Ok(Outcome::unchanged()
                .with("node", id.to_string())
                .with("connected", true)
                .with("guests", guests));
        }
        let nodes = self
            .store
            .call(|s| s.read(proxmox_node_list))
            .await
            .map_err(|e| store_error(e.to_string()))?;
        let mut summary = Vec::new();
        let mut failed = 0;
        for listed in nodes {
            if ctx.is_cancelled() {
                return Err(DriverError::cancelled());
            }
            let id = listed.id;
            let refreshed = match self.node(id).await {
                Ok(node) => refresh_node(&node, ctx).await,
                Err(e) => Err(e),
            };
            match refreshed {
                Ok(guests) => summary.push(json!({"node": id.to_string(), "name": listed.name,
                                                  "connected": true, "guests": guests})),
                Err(e) => {
                    failed += 1;
                    ctx.step(format!(
                        "{}: not refreshed ({}): {}",
                        listed.name, e.code, e.message
                    ));
                    let error = json!({"code": e.code, "message": e.message});
                    ctx.record(StateEffect::Observed {
                        family: FAMILY.into(),
                        kind: NODE_KIND.into(),
                        name: id.to_string(),
                        data: json!({"connected": false, "error": error}),
                    });
                    summary.push(json!({"node": id.to_string(), "name": listed.name,
                                        "connected": false, "error": error}));
                }
            }
        }
        Ok(Outcome::unchanged()
            .with("nodes", summary)
            .with("failed", failed))
    }

    async fn guest(&self, action: &GuestAction, ctx: &Context) -> Result<Outcome, DriverError> {
        let wanted = action.guest();
        let node = self.node(wanted.node).await?;
        let client = PveClient::new(&node.connection)?;
        let mut guest = guest::find(&client, wanted.vmid).await?;
        if let Some(expected) = wanted.guest_type
            && expected != guest.guest_type
        {
            return Err(DriverError::permanent(
                codes::GUEST_TYPE_MISMATCH,
                format!(
                    "guest {} is a {} guest, not {}",
                    guest.vmid,
                    guest.guest_type.as_str(),
                    expected.as_str()
                ),
            ));
        }
        if guest.lock.as_deref() == Some("migrate") {
            guest = self.wait_for_migration(&client, guest, ctx).await?;
        }
        ctx.step(format!(
            "{} {} ({}) is on node {}",
            guest.guest_type.as_str(),
            guest.vmid,
            guest.name.as_deref().unwrap_or("unnamed"),
            guest.node
        ));

        let upid = match self.resumable_task(&client, &guest, ctx).await? {
            Some(Resume::Waiting(upid)) => upid,
            Some(Resume::Succeeded(upid)) => {
                ctx.step(format!("the earlier attempt's task {upid} had succeeded"));
                return self
                    .finish(action, &node, &client, &guest, Some(upid), ctx)
                    .await;
            }
            None => {
                let current = guest::current(&client, &guest).await?;
                if let Some(reason) = already_done(action, &guest, &current)? {
                    ctx.step(format!("nothing to do: {reason}"));
                    return Ok(self
                        .observe(&node, &guest, Some(&current), ctx)
                        .with("reason", reason)
                        .with("upid", Value::Null));
                }
                let upid = post(&client, action, &guest).await?;
                ctx.step(format!("PVE task {upid}"));
                if !ctx.progress(None, Some(&task::progress_step(&upid))).await {
                    return Err(DriverError::cancelled());
                }
                upid
            }
        };
        let end = task::wait(&client, &upid, ctx, self.poll).await?;
        if !end.succeeded() {
            return Err(end.into_error(&upid));
        }
        self.finish(action, &node, &client, &guest, Some(upid), ctx)
            .await
    }

    /// After the task succeeded: an HA request is awaited, a migration
    /// confirmed, and the guest observed.
    async fn finish(
        &self,
        action: &GuestAction,
        node: &NodeConnection,
        client: &PveClient,
        guest: &Located,
        upid: Option<Upid>,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        let is_ha = upid.as_ref().is_some_and(Upid::is_ha);
        let after = match action {
            GuestAction::Migrate(migrate) => {
                let patience = if is_ha {
                    ctx.remaining()
                } else {
                    MIGRATION_SETTLE
                };
                let target = migrate.target.as_str();
                match self
                    .await_guest(client, guest, ctx, patience, |g, _| g.node == target)
                    .await?
                {
                    Some(moved) => moved,
                    None => {
                        return Err(DriverError::permanent(
                            codes::MIGRATION_UNCONFIRMED,
                            format!(
                                "the migration task ended OK but {} {} is not on {target}",
                                guest.guest_type.as_str(),
                                guest.vmid
                            ),
                        ));
                    }
                }
            }
            GuestAction::Start(_) | GuestAction::Stop(_) | GuestAction::Shutdown(_) if is_ha => {
                let wanted = if matches!(action, GuestAction::Start(_)) {
                    "running"
                } else {
                    "stopped"
                };
                ctx.step(format!(
                    "HA request filed; waiting until the guest is {wanted}"
                ));
                self.await_guest(client, guest, ctx, ctx.remaining(), |_, state| {
                    state == wanted
                })
                .await?
                .ok_or_else(DriverError::cancelled)?
            }
            _ => guest::find(client, guest.vmid).await?,
        };
        let current = guest::current(client, &after).await.ok();
        let mut outcome = self
            .observe(node, &after, current.as_ref(), ctx)
            .with("upid", upid.map(|u| u.to_string()));
        outcome.changed = true;
        Ok(outcome)
    }

    /// Polls the guest until `done(guest, power state)` holds; `None` when
    /// `patience` ran out first.
    async fn await_guest(
        &self,
        client: &PveClient,
        guest: &Located,
        ctx: &Context,
        patience: Duration,
        done: impl Fn(&Located, &str) -> bool,
    ) -> Result<Option<Located>, DriverError> {
        let give_up = tokio::time::Instant::now() + patience;
        let mut delay = self.poll;
        loop {
            let now = guest::find(client, guest.vmid).await?;
            let state = guest::power_state(&now.resource, None);
            if done(&now, &state) {
                return Ok(Some(now));
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(None);
            }
            if !task::pause(ctx, delay.min(give_up - tokio::time::Instant::now())).await {
                return Err(DriverError::cancelled());
            }
            delay = task::next_pause(delay, self.poll);
        }
    }

    /// A guest locked by a migration is waited for: acting on it mid-way is
    /// refused by PVE, and it may end up on another node.
    async fn wait_for_migration(
        &self,
        client: &PveClient,
        guest: Located,
        ctx: &Context,
    ) -> Result<Located, DriverError> {
        ctx.step(format!(
            "{} {} is being migrated from {}; waiting until it ends",
            guest.guest_type.as_str(),
            guest.vmid,
            guest.node
        ));
        let settled = self
            .await_guest(client, &guest, ctx, ctx.remaining(), |g, _| {
                g.lock.as_deref() != Some("migrate")
            })
            .await?
            .ok_or_else(DriverError::cancelled)?;
        ctx.step(format!(
            "the migration ended; the guest is on {}",
            settled.node
        ));
        Ok(settled)
    }

    /// What an earlier attempt's task tells this one.
    async fn resumable_task(
        &self,
        client: &PveClient,
        guest: &Located,
        ctx: &Context,
    ) -> Result<Option<Resume>, DriverError> {
        let Some(upid) = self.recorded_task(ctx).await? else {
            return Ok(None);
        };
        if upid.id != guest.vmid.to_string() {
            return Ok(None);
        }
        match task::status(client, &upid).await {
            Ok(None) => {
                ctx.step(format!(
                    "resuming the wait for task {upid} of an earlier attempt"
                ));
                Ok(Some(Resume::Waiting(upid)))
            }
            Ok(Some(end)) if end.succeeded() => Ok(Some(Resume::Succeeded(upid))),
            Ok(Some(end)) => {
                ctx.step(format!(
                    "the earlier attempt's task {upid} ended: {}; trying again",
                    end.exitstatus
                ));
                Ok(None)
            }
            // PVE forgot the task (e.g. its node rebooted): act afresh.
            Err(e) if !e.retryable => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the guest as observed and returns the outcome describing it.
    fn observe(
        &self,
        node: &NodeConnection,
        guest: &Located,
        current: Option<&Value>,
        ctx: &Context,
    ) -> Outcome {
        let data = guest::observation(guest, current);
        ctx.record(StateEffect::Observed {
            family: FAMILY.into(),
            kind: guests_kind(node.node.id),
            name: guest.vmid.to_string(),
            data: data.clone(),
        });
        Outcome::unchanged()
            .with("vmid", guest.vmid.get())
            .with("name", &guest.name)
            .with("guest_type", guest.guest_type.as_str())
            .with("node", &guest.node)
            .with("status", &data["status"])
    }
}

enum Resume {
    Waiting(Upid),
    Succeeded(Upid),
}

fn store_error(message: String) -> DriverError {
    DriverError::retryable(codes::STORE, format!("cannot read the store: {message}"))
}

/// Observes one node: its version, its PVE nodes and every guest.
async fn refresh_node(node: &NodeConnection, ctx: &Context) -> Result<usize, DriverError> {
    let client = PveClient::new(&node.connection)?;
    let version = client.get(&["version"], &[]).await?;
    let pve_nodes = client.get(&["nodes"], &[]).await?;
    let guests = guest::list(&client).await?;
    let mut items = Vec::with_capacity(guests.len());
    for guest in &guests {
        // Only status/current tells a paused VM from a running one.
        let current = if guest.guest_type == GuestType::Qemu
            && guest::power_state(&guest.resource, None) == "running"
        {
            match guest::current(&client, guest).await {
                Ok(current) => Some(current),
                Err(e) => {
                    ctx.step(format!(
                        "{}: status/current failed: {}",
                        guest.vmid, e.message
                    ));
                    None
                }
            }
        } else {
            None
        };
        items.push((
            guest.vmid.to_string(),
            guest::observation(guest, current.as_ref()),
        ));
    }
    let nodes: Vec<Value> = pve_nodes
        .as_array()
        .map(|list| {
            list.iter()
                .map(|n| {
                    json!({
                        "node": n.get("node"), "status": n.get("status"),
                        "cpu": n.get("cpu"), "maxcpu": n.get("maxcpu"),
                        "mem": n.get("mem"), "maxmem": n.get("maxmem"),
                        "disk": n.get("disk"), "maxdisk": n.get("maxdisk"),
                        "uptime": n.get("uptime"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let count = items.len();
    ctx.step(format!("{}: {count} guests observed", node.node.name));
    ctx.record(StateEffect::ObservedAll {
        family: FAMILY.into(),
        kind: guests_kind(node.node.id),
        items,
    });
    ctx.record(StateEffect::Observed {
        family: FAMILY.into(),
        kind: NODE_KIND.into(),
        name: node.node.id.to_string(),
        data: json!({
            "connected": true,
            "version": version.get("version"),
            "release": version.get("release"),
            "nodes": nodes,
            "guests": count,
        }),
    });
    Ok(count)
}

/// `Some(reason)` when the guest already is where the action would take it;
/// an error when the action cannot apply to its state.
fn already_done(
    action: &GuestAction,
    guest: &Located,
    current: &Value,
) -> Result<Option<String>, DriverError> {
    let state = guest::power_state(&guest.resource, Some(current));
    let lxc = guest.guest_type == GuestType::Lxc;
    let not_running = |verb: &str| {
        DriverError::permanent(
            codes::GUEST_NOT_RUNNING,
            format!(
                "cannot {verb} {} {}: it is {state}",
                guest.guest_type.as_str(),
                guest.vmid
            ),
        )
    };
    let done = |why: &str| Ok(Some(why.to_owned()));
    match action {
        GuestAction::Start(_) if state == "running" => done("already running"),
        GuestAction::Stop(_) | GuestAction::Shutdown(_) if state == "stopped" => {
            done("already stopped")
        }
        GuestAction::Reboot(_) if state != "running" => Err(not_running("reboot")),
        GuestAction::Suspend(_) if matches!(state.as_str(), "paused" | "suspended") => {
            done("already suspended")
        }
        GuestAction::Suspend(_) if state != "running" => Err(not_running("suspend")),
        GuestAction::Resume(_) if state == "running" => done("already running"),
        GuestAction::Resume(_) if !lxc && state != "paused" => Err(not_running("resume")),
        GuestAction::Migrate(migrate) => {
            if guest.node == migrate.target.as_str() {
                return done(&format!("already on {}", migrate.target));
            }
            let running = state == "running" || state == "paused";
            if running && !lxc && !migrate.online {
                return Err(DriverError::permanent(
                    codes::REFUSED,
                    format!("VM {} is running: migrate it with online", guest.vmid),
                ));
            }
            if running && lxc && !migrate.restart {
                return Err(DriverError::permanent(
                    codes::REFUSED,
                    format!(
                        "container {} is running: migrate it with restart (containers cannot move live)",
                        guest.vmid
                    ),
                ));
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Posts the action; returns the UPID of the task PVE started.
async fn post(
    client: &PveClient,
    action: &GuestAction,
    guest: &Located,
) -> Result<Upid, DriverError> {
    let vmid = guest.vmid.to_string();
    let flag = |on: bool| if on { Some("1".to_owned()) } else { None };
    let params: Vec<(&str, Option<String>)> = match action {
        GuestAction::Start(_) | GuestAction::Suspend(_) | GuestAction::Resume(_) => vec![],
        GuestAction::Stop(stop) => vec![("overrule-shutdown", flag(stop.force))],
        GuestAction::Shutdown(shutdown) => vec![
            ("timeout", shutdown.timeout.map(|t| t.to_string())),
            ("forceStop", flag(shutdown.force)),
        ],
        GuestAction::Reboot(reboot) => vec![("timeout", reboot.timeout.map(|t| t.to_string()))],
        GuestAction::Migrate(migrate) => vec![
            ("target", Some(migrate.target.to_string())),
            (
                "online",
                flag(migrate.online && guest.guest_type == GuestType::Qemu),
            ),
            (
                "restart",
                flag(migrate.restart && guest.guest_type == GuestType::Lxc),
            ),
        ],
    };
    let params: Vec<(&str, String)> = params
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let kind = guest.guest_type.as_str();
    let verb = action.verb();
    let path: &[&str] = match action {
        GuestAction::Migrate(_) => &["nodes", &guest.node, kind, &vmid, verb],
        _ => &["nodes", &guest.node, kind, &vmid, "status", verb],
    };
    let answer = client.post(path, &params).await?;
    answer
        .as_str()
        .ok_or_else(|| {
            DriverError::permanent(
                codes::BAD_RESPONSE,
                format!("PVE answered {answer} instead of a task id"),
            )
        })?
        .parse()
        .map_err(|e: String| DriverError::permanent(codes::BAD_RESPONSE, e))
}

/// The family's driver, as the registry builds it when `[proxmox]` is enabled.
/// Proxmox runs on a worker beside the database only: the nodes' token
/// secrets stay on the control host (a remote worker is refused at start).
pub fn driver(config: &Config, link: &Link) -> std::io::Result<AnyDriver> {
    let Some(store) = link.store() else {
        return Err(std::io::Error::other(
            "the proxmox family runs on a worker beside the database only (its nodes' \
             token secrets stay on the control host); turn [proxmox] off on a remote worker",
        ));
    };
    Ok(AnyDriver::plain(Proxmox::new(config, store)))
}

impl Driver for Proxmox {
    type Action = ProxmoxAction;

    async fn execute(&self, action: &ProxmoxAction, ctx: &Context) -> Result<Outcome, DriverError> {
        match action {
            ProxmoxAction::TestConnection(connection) => Ok(self.test(connection, None, ctx).await),
            ProxmoxAction::NodeTest(node) => {
                let saved = self.node(node.node).await?;
                Ok(self.test(&saved.connection, Some(node.node), ctx).await)
            }
            ProxmoxAction::Refresh(refresh) => self.refresh(refresh, ctx).await,
            ProxmoxAction::Guest(guest) => self.guest(guest, ctx).await,
        }
    }
}
