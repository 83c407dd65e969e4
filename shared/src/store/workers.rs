//! SQL for `workers`: each worker process registers at start, heartbeats
//! while it runs and marks itself stopped on a clean exit. The monitor reads
//! the rows to find workers whose process is gone.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, named_params};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Result, time_column};
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

pub fn worker_register(conn: &Connection, worker: &NewWorker, now: Timestamp) -> Result<()> {
    let json = |list: &Vec<String>| serde_json::to_string(list).expect("strings serialize");
    conn.prepare_cached(
        "INSERT INTO workers (id, host, pid, process_start, boot_id, version, drivers, targets,
             sources, concurrency, started_at, heartbeat_at)
         VALUES (:id, :host, :pid, :start, :boot, :version, :drivers, :targets, :sources,
             :concurrency, :now, :now)
         ON CONFLICT (id) DO UPDATE SET host = :host, pid = :pid, process_start = :start,
             boot_id = :boot, version = :version, drivers = :drivers, targets = :targets,
             sources = :sources, concurrency = :concurrency, started_at = :now,
             heartbeat_at = :now, stopped_at = NULL",
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
    })?;
    Ok(())
}

pub fn worker_heartbeat(conn: &Connection, id: &str, now: Timestamp) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE workers SET heartbeat_at = ?1 WHERE id = ?2 AND stopped_at IS NULL",
        )?
        .execute([to_db(now), id.to_owned()])?
        == 1)
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
             concurrency, started_at, heartbeat_at, stopped_at
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
