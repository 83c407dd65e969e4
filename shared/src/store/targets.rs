//! SQL for `targets`: the servers operations run on, what people say of
//! them (description, labels, role) and whether anything serves them.
//!
//! A target is `online` while a worker serving it (local or remote) has
//! heartbeated within its lease, `offline` once it was seen but no worker
//! serving it is alive, `unknown` if no worker ever served it. Reads compute
//! the status from the workers' heartbeats, so an answer is never staler
//! than the last heartbeat. The stored `status` column follows it, changing
//! only on a transition (with `status_changed_at`): online in the
//! transaction of a worker's registration or heartbeat
//! ([`target_seen`]), offline in the transaction of the stop of the last
//! worker serving it, or in the reaper's round once the last lease lapsed
//! ([`target_mark_offline`]). That column is what an event stream watches.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, named_params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{HostFacts, Result, json_column, time_column, worker_list_running};
use crate::time::{Timestamp, to_db};

/// Whether anything serves a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetStatus {
    /// No worker ever served it.
    Unknown,
    /// A worker serving it heartbeated within its lease.
    Online,
    /// It was served, and no worker serving it is alive now.
    Offline,
}

impl TargetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Unknown => "unknown",
            TargetStatus::Online => "online",
            TargetStatus::Offline => "offline",
        }
    }
}

/// One worker serving a target, as the registry shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetAgent {
    pub worker_id: String,
    pub host: String,
    pub version: String,
    pub drivers: Vec<String>,
    /// Registered through the API with an agent key (on another host).
    pub remote: bool,
    pub heartbeat_at: DateTime<Utc>,
    /// Whether its heartbeat is within its lease.
    pub online: bool,
    /// Operations it runs now (on any of its targets).
    pub running: i64,
}

/// One target: what people said of it, who serves it and what waits for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Target {
    pub name: String,
    pub status: TargetStatus,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub role: Option<String>,
    /// When the stored status last changed.
    pub status_changed_at: Option<DateTime<Utc>>,
    /// The last heartbeat of a worker serving it.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Workers not stopped that serve it, newest heartbeat first.
    pub agents: Vec<TargetAgent>,
    /// The host facts of the newest heartbeat that carried them.
    pub facts: Option<HostFacts>,
    pub pending: i64,
    pub running: i64,
}

/// What a person says of a target (`PUT /api/v1/targets/{name}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetDescription {
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub role: Option<String>,
}

/// Records that a worker serving `targets` is alive: each becomes (or
/// stays) online and its `last_seen_at` moves on.
pub fn target_seen(conn: &Connection, targets: &[String], now: Timestamp) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO targets (name, status, status_changed_at, last_seen_at, created_at, updated_at)
         VALUES (:name, 'online', :now, :now, :now, :now)
         ON CONFLICT (name) DO UPDATE SET
             status_changed_at = CASE WHEN status = 'online' THEN status_changed_at ELSE :now END,
             updated_at = CASE WHEN status = 'online' THEN updated_at ELSE :now END,
             status = 'online', last_seen_at = :now",
    )?;
    let now = to_db(now);
    for name in targets {
        stmt.execute(named_params! {":name": name, ":now": now})?;
    }
    Ok(())
}

/// The SQL condition "a live worker serves `targets.name` at `:now`".
const SERVED: &str = "EXISTS (SELECT 1 FROM workers w, json_each(w.targets) t
    WHERE t.value = targets.name AND w.stopped_at IS NULL
      AND unixepoch(w.heartbeat_at, 'subsec') + w.lease_secs >= unixepoch(:now, 'subsec'))";

/// Marks offline every online target that no live worker serves any more;
/// returns their names.
pub fn target_mark_offline(conn: &Connection, now: Timestamp) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE targets SET status = 'offline', status_changed_at = :now, updated_at = :now
         WHERE status = 'online' AND NOT {SERVED}
         RETURNING name"
    ))?;
    let mut rows = stmt.query(named_params! {":now": to_db(now)})?;
    let mut names = Vec::new();
    while let Some(row) = rows.next()? {
        names.push(row.get(0)?);
    }
    Ok(names)
}

/// Whether a live worker serves `target` now.
pub fn target_online(conn: &Connection, target: &str, now: Timestamp) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM workers w, json_each(w.targets) t
                 WHERE t.value = :target AND w.stopped_at IS NULL
                   AND unixepoch(w.heartbeat_at, 'subsec') + w.lease_secs
                       >= unixepoch(:now, 'subsec'))",
        )?
        .query_row(named_params! {":target": target, ":now": to_db(now)}, |r| {
            r.get(0)
        })?)
}

/// Stores what a person says of a target (replacing what was said before),
/// creating its row if needed.
pub fn target_describe(
    conn: &Connection,
    name: &str,
    description: &TargetDescription,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO targets (name, description, labels, role, created_at, updated_at)
         VALUES (:name, :description, :labels, :role, :now, :now)
         ON CONFLICT (name) DO UPDATE SET description = :description, labels = :labels,
             role = :role, updated_at = :now",
    )?
    .execute(named_params! {
        ":name": name,
        ":description": description.description,
        ":labels": serde_json::to_string(&description.labels).expect("strings serialize"),
        ":role": description.role,
        ":now": to_db(now),
    })?;
    Ok(())
}

struct Stored {
    description: TargetDescription,
    status: String,
    status_changed_at: Option<Timestamp>,
    last_seen_at: Option<Timestamp>,
}

fn stored(conn: &Connection, name: Option<&str>) -> Result<BTreeMap<String, Stored>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, description, labels, role, status, status_changed_at, last_seen_at
         FROM targets WHERE (:name IS NULL OR name = :name)",
    )?;
    let mut rows = stmt.query(named_params! {":name": name})?;
    let mut found = BTreeMap::new();
    while let Some(row) = rows.next()? {
        found.insert(
            row.get(0)?,
            Stored {
                description: TargetDescription {
                    description: row.get(1)?,
                    labels: json_column(row.get(2)?, "target labels")?.unwrap_or_default(),
                    role: row.get(3)?,
                },
                status: row.get(4)?,
                status_changed_at: time_column(row.get(5)?, "status_changed_at")?,
                last_seen_at: time_column(row.get(6)?, "last_seen_at")?,
            },
        );
    }
    Ok(found)
}

/// Operations per (target, status) and running ones per worker.
type Counts = (BTreeMap<(String, String), i64>, BTreeMap<String, i64>);

/// Pending and running operations per target, and running ones per worker.
fn counts(conn: &Connection, name: Option<&str>) -> Result<Counts> {
    let mut by_target = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT target, status, count(*) FROM operations
         WHERE status IN ('pending', 'running') AND (:name IS NULL OR target = :name)
         GROUP BY target, status",
    )?;
    let mut rows = stmt.query(named_params! {":name": name})?;
    while let Some(row) = rows.next()? {
        by_target.insert((row.get(0)?, row.get(1)?), row.get(2)?);
    }
    let mut by_worker = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT worker_id, count(*) FROM operations WHERE status = 'running' GROUP BY worker_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        by_worker.insert(row.get(0)?, row.get(1)?);
    }
    Ok((by_target, by_worker))
}

/// Every target known: described or seen, served by a running worker, or
/// named by a pending or running operation; by name. `only` narrows to one.
pub fn target_list(conn: &Connection, only: Option<&str>, now: Timestamp) -> Result<Vec<Target>> {
    let stored = stored(conn, only)?;
    let (by_target, by_worker) = counts(conn, only)?;
    let workers = worker_list_running(conn)?;
    let mut names: BTreeSet<String> = stored.keys().cloned().collect();
    names.extend(by_target.keys().map(|(target, _)| target.clone()));
    for worker in &workers {
        names.extend(worker.targets.iter().cloned());
    }
    if let Some(only) = only {
        names.retain(|name| name == only);
    }
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let mut agents = Vec::new();
        let mut facts = None;
        for worker in workers.iter().filter(|w| w.targets.contains(&name)) {
            let online = (now - worker.heartbeat_at).num_milliseconds() <= worker.lease_secs * 1000;
            if facts.is_none() {
                facts = worker.facts.clone();
            }
            agents.push(TargetAgent {
                worker_id: worker.id.clone(),
                host: worker.host.clone(),
                version: worker.version.clone(),
                drivers: worker.drivers.clone(),
                remote: worker.remote,
                heartbeat_at: worker.heartbeat_at,
                online,
                running: by_worker.get(&worker.id).copied().unwrap_or(0),
            });
        }
        let row = stored.get(&name);
        let status = if agents.iter().any(|a| a.online) {
            TargetStatus::Online
        } else if row.is_some_and(|r| r.last_seen_at.is_some() || r.status != "unknown")
            || !agents.is_empty()
        {
            TargetStatus::Offline
        } else {
            TargetStatus::Unknown
        };
        let count = |status: &str| {
            by_target
                .get(&(name.clone(), status.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        let described = row.map(|r| r.description.clone()).unwrap_or_default();
        targets.push(Target {
            status,
            description: described.description,
            labels: described.labels,
            role: described.role,
            status_changed_at: row.and_then(|r| r.status_changed_at),
            last_seen_at: row.and_then(|r| r.last_seen_at),
            agents,
            facts,
            pending: count("pending"),
            running: count("running"),
            name,
        });
    }
    Ok(targets)
}

/// One target, if anything knows of it.
pub fn target_get(conn: &Connection, name: &str, now: Timestamp) -> Result<Option<Target>> {
    Ok(target_list(conn, Some(name), now)?.pop())
}
