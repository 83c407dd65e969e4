//! SQL for process migration: the `migrations` rows (each the record of a
//! workflow that moves a process), the processes opsqueue manages on every
//! target (managed objects joined with their last observation) and the
//! system log.
//!
//! Invariant: at most one migration of a process is active (its workflow
//! pending or running). [`migration_insert`] checks it and inserts the
//! workflow in one write transaction, so two requests at once cannot both
//! pass the check.

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::Serialize;
use serde_json::Value;

use super::operations::Inserted;
use super::workflows::workflow_insert;
use super::{Result, StoreError, json_column, time_column};
use crate::OperationId;
use crate::families::migration::ProcessId;
use crate::time::{Timestamp, to_db};
use crate::workflow::NewWorkflow;

/// A migration's record, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationRow {
    pub id: String,
    pub workflow_id: String,
    pub process_id: String,
    pub kind: String,
    pub name: String,
    pub source: String,
    pub target: String,
    pub created_at: Timestamp,
}

impl MigrationRow {
    /// The record of migration `id`: `process` (on its server, the source)
    /// moves to `target` through `workflow`.
    pub fn new(
        id: OperationId,
        process: &ProcessId,
        target: &str,
        workflow: &NewWorkflow,
        created_at: Timestamp,
    ) -> Self {
        Self {
            id: id.to_string(),
            workflow_id: workflow.parent.id.to_string(),
            process_id: process.to_string(),
            kind: process.kind().as_str().to_owned(),
            name: process.name().to_owned(),
            source: process.server().to_owned(),
            target: target.to_owned(),
            created_at,
        }
    }
}

/// What [`migration_insert`] did.
#[derive(Debug)]
pub enum MigrationInserted {
    Created(Box<Inserted>),
    /// Another migration of the process is active: its id.
    Busy(String),
}

/// Inserts a migration with its workflow, unless another migration of the
/// same process is active. Call it inside a write transaction.
pub fn migration_insert(
    conn: &Connection,
    row: &MigrationRow,
    workflow: &NewWorkflow,
) -> Result<MigrationInserted> {
    let active: Option<String> = conn
        .prepare_cached(
            "SELECT m.id FROM migrations m JOIN operations o ON o.id = m.workflow_id
             WHERE m.process_id = ?1 AND o.status IN ('pending', 'running') LIMIT 1",
        )?
        .query_row([&row.process_id], |r| r.get(0))
        .optional()?;
    if let Some(active) = active {
        return Ok(MigrationInserted::Busy(active));
    }
    let inserted = workflow_insert(conn, workflow)?;
    conn.prepare_cached(
        "INSERT INTO migrations (id, workflow_id, process_id, kind, name, source, target, created_at)
         VALUES (:id, :workflow, :process, :kind, :name, :source, :target, :at)",
    )?
    .execute(named_params! {
        ":id": row.id, ":workflow": row.workflow_id, ":process": row.process_id,
        ":kind": row.kind, ":name": row.name, ":source": row.source, ":target": row.target,
        ":at": to_db(row.created_at),
    })?;
    system_log_insert(
        conn,
        "INFO",
        "coordinator",
        &format!(
            "Migration {} started: {} from {} to {}",
            row.id, row.process_id, row.source, row.target
        ),
        row.created_at,
    )?;
    Ok(MigrationInserted::Created(Box::new(inserted)))
}

const MIGRATION_COLUMNS: &str =
    "id, workflow_id, process_id, kind, name, source, target, created_at";

fn migration_from_row(row: &rusqlite::Row) -> Result<MigrationRow> {
    Ok(MigrationRow {
        id: row.get(0)?,
        workflow_id: row.get(1)?,
        process_id: row.get(2)?,
        kind: row.get(3)?,
        name: row.get(4)?,
        source: row.get(5)?,
        target: row.get(6)?,
        created_at: time_column(Some(row.get(7)?), "created_at")?.expect("some"),
    })
}

/// The newest migrations first, at most `limit`.
pub fn migration_list(conn: &Connection, limit: u32) -> Result<Vec<MigrationRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MIGRATION_COLUMNS} FROM migrations ORDER BY id DESC LIMIT ?1"
    ))?;
    let mut rows = stmt.query([limit])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(migration_from_row(row)?);
    }
    Ok(found)
}

pub fn migration_get(conn: &Connection, id: &str) -> Result<Option<MigrationRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id])?;
    rows.next()?.map(migration_from_row).transpose()
}

/// Migrations by their workflow's status: (active, completed, ended otherwise).
pub fn migration_counts(conn: &Connection) -> Result<(u64, u64, u64)> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(o.status IN ('pending', 'running')), 0),
                    coalesce(sum(o.status = 'completed'), 0),
                    coalesce(sum(o.status IN ('failed', 'cancelled')), 0)
             FROM migrations m JOIN operations o ON o.id = m.workflow_id",
        )?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?)
}

/// A workload opsqueue manages on a target, with what was last observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessRow {
    pub target: String,
    pub family: String,
    pub name: String,
    pub spec: Value,
    pub observed: Option<Value>,
    pub observed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The managed objects of `(family, kind)` pairs on every target (or the
/// one named), each with its last observation.
pub fn process_list(
    conn: &Connection,
    kinds: &[(&str, &str)],
    only: Option<(&str, &str, &str)>,
) -> Result<Vec<ProcessRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.target, m.family, m.name, m.spec, o.data, o.observed_at, m.created_at, m.updated_at
         FROM managed_objects m
         LEFT JOIN observations o ON o.target = m.target AND o.family = m.family
              AND o.kind = m.kind AND o.name = m.name
         WHERE m.family = :family AND m.kind = :kind
           AND (:target IS NULL OR (m.target = :target AND m.name = :name))
         ORDER BY m.target, m.name",
    )?;
    let mut found = Vec::new();
    for (family, kind) in kinds {
        let (target, name) = match only {
            Some((target, wanted, name)) if wanted == *family => (Some(target), Some(name)),
            Some(_) => continue,
            None => (None, None),
        };
        let mut rows = stmt.query(named_params! {
            ":family": family, ":kind": kind, ":target": target, ":name": name,
        })?;
        while let Some(row) = rows.next()? {
            found.push(ProcessRow {
                target: row.get(0)?,
                family: row.get(1)?,
                name: row.get(2)?,
                spec: json_column(row.get(3)?, "managed spec")?.unwrap_or(Value::Null),
                observed: json_column(row.get(4)?, "observation")?,
                observed_at: time_column(row.get(5)?, "observed_at")?,
                created_at: time_column(Some(row.get(6)?), "created_at")?.expect("some"),
                updated_at: time_column(Some(row.get(7)?), "updated_at")?.expect("some"),
            });
        }
    }
    Ok(found)
}

/// One line of the system log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemLog {
    pub id: i64,
    pub level: String,
    pub component: String,
    pub message: String,
    pub at: Timestamp,
}

pub fn system_log_insert(
    conn: &Connection,
    level: &str,
    component: &str,
    message: &str,
    at: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO system_logs (at, level, component, message) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((to_db(at), level, component, message))?;
    Ok(())
}

/// The newest lines first, at most `limit`.
pub fn system_log_list(conn: &Connection, limit: u32) -> Result<Vec<SystemLog>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, level, component, message, at FROM system_logs ORDER BY id DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([limit])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(SystemLog {
            id: row.get(0)?,
            level: row.get(1)?,
            component: row.get(2)?,
            message: row.get(3)?,
            at: time_column(Some(row.get(4)?), "at")?
                .ok_or_else(|| StoreError::Corrupt("system log without a time".into()))?,
        });
    }
    Ok(found)
}

/// Deletes every line; how many.
pub fn system_log_clear(conn: &Connection) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM system_logs")?
        .execute([])?)
}

/// Deletes the lines older than `before`; how many.
pub fn system_log_prune(conn: &Connection, before: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM system_logs WHERE at < ?1")?
        .execute([to_db(before)])?)
}

/// When each target became known, by name.
pub fn target_created(conn: &Connection) -> Result<std::collections::BTreeMap<String, Timestamp>> {
    let mut stmt = conn.prepare_cached("SELECT name, created_at FROM targets")?;
    let mut rows = stmt.query([])?;
    let mut found = std::collections::BTreeMap::new();
    while let Some(row) = rows.next()? {
        if let Some(at) = time_column(row.get(1)?, "created_at")? {
            found.insert(row.get(0)?, at);
        }
    }
    Ok(found)
}
