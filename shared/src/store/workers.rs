//! SQL for `workers`: each worker process registers at start, heartbeats
//! (with the facts of its host) while it runs and marks itself stopped on a
//! clean exit. A remote worker does the same through the API, which records
//! the agent key it used. The monitor reads the rows to find local workers
//! whose process is gone; the targets registry reads them for who serves
//! each target.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, named_params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Result, json_column, time_column};
use crate::process::ProcessIdentity;
use crate::time::{Timestamp, to_db};

#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: String,
    pub identity: ProcessIdentity,
    pub version: String,
    pub drivers: Vec<String>,
    pub targets: Vec<String>,
    pub sources: Option<Vec<String>>,
    pub concurrency: usize,
    /// The lease it claims with, in seconds.
    pub lease_secs: u64,
    /// The agent key it registered with through the API (remote); `None`
    /// beside the database.
    pub agent_key_id: Option<String>,
}

/// What a worker's host looked like at its last heartbeat. Every field is
/// optional: a host that cannot tell leaves it out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostFacts {
    /// `PRETTY_NAME` of `/etc/os-release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Load averages over 1, 5 and 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Free space on the data paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskFree>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<f64>,
}

/// Free space of the file system holding one data path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskFree {
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: u32,
    #[serde(skip)]
    pub process_start: u64,
    #[serde(skip)]
    pub boot_id: String,
    pub version: String,
    pub drivers: Vec<String>,
    pub targets: Vec<String>,
    pub sources: Option<Vec<String>>,
    pub concurrency: i64,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub lease_secs: i64,
    /// Registered through the API with an agent key (a worker on another
    /// host), rather than beside the database.
    pub remote: bool,
    #[serde(skip)]
    pub agent_key_id: Option<String>,
    pub facts: Option<HostFacts>,
}

impl WorkerRow {
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            host: self.host.clone(),
            pid: self.pid,
            start_ticks: self.process_start,
            boot_id: self.boot_id.clone(),
        }
    }
}

fn facts_json(facts: Option<&HostFacts>) -> Option<String> {
    facts.map(|f| serde_json::to_string(f).expect("facts serialize"))
}

/// Registers (or registers again) a worker, with its host's facts if known.
pub fn worker_register(
    conn: &Connection,
    worker: &NewWorker,
    facts: Option<&HostFacts>,
    now: Timestamp,
) -> Result<()> {
    let json = |list: &Vec<String>| serde_json::to_string(list).expect("strings serialize");
    conn.prepare_cached(
        "INSERT INTO workers (id, host, pid, process_start, boot_id, version, drivers, targets,
             sources, concurrency, started_at, heartbeat_at, lease_secs, agent_key_id, facts)
         VALUES (:id, :host, :pid, :start, :boot, :version, :drivers, :targets, :sources,
             :concurrency, :now, :now, :lease, :agent, :facts)
         ON CONFLICT (id) DO UPDATE SET host = :host, pid = :pid, process_start = :start,
             boot_id = :boot, version = :version, drivers = :drivers, targets = :targets,
             sources = :sources, concurrency = :concurrency, started_at = :now,
             heartbeat_at = :now, stopped_at = NULL, lease_secs = :lease,
             agent_key_id = :agent, facts = COALESCE(:facts, facts)",
    )?
    .execute(named_params! {
        ":id": worker.id,
        ":host": worker.identity.host,
        ":pid": worker.identity.pid,
        ":start": worker.identity.start_ticks as i64,
        ":boot": worker.identity.boot_id,
        ":version": worker.version,
        ":drivers": json(&worker.drivers),
        ":targets": json(&worker.targets),
        ":sources": worker.sources.as_ref().map(json),
        ":concurrency": worker.concurrency as i64,
        ":now": to_db(now),
        ":lease": worker.lease_secs as i64,
        ":agent": worker.agent_key_id,
        ":facts": facts_json(facts),
    })?;
    Ok(())
}

/// Renews a running worker's row (and its facts, when given); false if
/// the row is gone or marked stopped.
pub fn worker_heartbeat(
    conn: &Connection,
    id: &str,
    facts: Option<&HostFacts>,
    now: Timestamp,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE workers SET heartbeat_at = :now, facts = COALESCE(:facts, facts)
             WHERE id = :id AND stopped_at IS NULL",
        )?
        .execute(named_params! {":now": to_db(now), ":id": id, ":facts": facts_json(facts)})?
        == 1)
}

/// The agent key a worker id was last registered with: `None` when there
/// is no such worker, `Some(None)` for a worker beside the database.
pub fn worker_agent_key(conn: &Connection, id: &str) -> Result<Option<Option<String>>> {
    let mut stmt = conn.prepare_cached("SELECT agent_key_id FROM workers WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

pub fn worker_stop(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE workers SET stopped_at = ?1 WHERE id = ?2 AND stopped_at IS NULL")?
        .execute([to_db(now), id.to_owned()])?;
    Ok(())
}

/// Workers not marked stopped, newest heartbeat first.
pub fn worker_list_running(conn: &Connection) -> Result<Vec<WorkerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, host, pid, process_start, boot_id, version, drivers, targets, sources,
             concurrency, started_at, heartbeat_at, stopped_at, lease_secs, agent_key_id, facts
         FROM workers WHERE stopped_at IS NULL ORDER BY heartbeat_at DESC",
    )?;
    let mut rows = stmt.query([])?;
    let mut workers = Vec::new();
    let list = |text: String| serde_json::from_str::<Vec<String>>(&text).unwrap_or_default();
    while let Some(row) = rows.next()? {
        workers.push(WorkerRow {
            id: row.get(0)?,
            host: row.get(1)?,
            pid: row.get(2)?,
            process_start: row.get::<_, i64>(3)? as u64,
            boot_id: row.get(4)?,
            version: row.get(5)?,
            drivers: list(row.get(6)?),
            targets: list(row.get(7)?),
            sources: row.get::<_, Option<String>>(8)?.map(list),
            concurrency: row.get(9)?,
            started_at: time_column(Some(row.get(10)?), "started_at")?.expect("some"),
            heartbeat_at: time_column(Some(row.get(11)?), "heartbeat_at")?.expect("some"),
            stopped_at: time_column(row.get(12)?, "stopped_at")?,
            lease_secs: row.get(13)?,
            remote: row.get::<_, Option<String>>(14)?.is_some(),
            agent_key_id: row.get(14)?,
            facts: json_column(row.get(15)?, "facts")?,
        });
    }
    Ok(workers)
}

/// Deletes rows of workers that stopped before `before`; returns how many.
pub fn worker_prune(conn: &Connection, before: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM workers WHERE stopped_at IS NOT NULL AND stopped_at < ?1")?
        .execute([to_db(before)])?)
}
