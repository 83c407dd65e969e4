//! SQL for `schedules`: named cron expressions with an operation template.
//! The monitor's scheduler fires each due schedule exactly once per fire
//! time: `schedule_mark_fired` moves `last_fire_at` forward only if nobody
//! did it first, in the same transaction as the insert of the operation, so
//! two monitors never enqueue the same fire twice.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, named_params};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Result, StoreError, time_column};
use crate::time::{Timestamp, to_db};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Schedule {
    pub name: String,
    /// Five fields (minute first) or six (seconds first), UTC.
    pub cron: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub target: String,
    pub priority: i64,
    pub timeout_secs: Option<i64>,
    pub max_attempts: Option<i64>,
    pub enabled: bool,
    /// The last fire time enqueued (set to the creation time at first, so a
    /// new schedule waits for its next fire).
    pub last_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SCHEDULE_COLUMNS: &str = "name, cron, type, payload, target, priority, timeout_secs, \
    max_attempts, enabled, last_fire_at, created_at, updated_at";

fn schedule_from_row(row: &rusqlite::Row) -> Result<Schedule> {
    let payload: String = row.get(3)?;
    Ok(Schedule {
        name: row.get(0)?,
        cron: row.get(1)?,
        kind: row.get(2)?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("schedule payload: {e}")))?,
        target: row.get(4)?,
        priority: row.get(5)?,
        timeout_secs: row.get(6)?,
        max_attempts: row.get(7)?,
        enabled: row.get(8)?,
        last_fire_at: time_column(row.get(9)?, "last_fire_at")?,
        created_at: time_column(Some(row.get(10)?), "created_at")?.expect("some"),
        updated_at: time_column(Some(row.get(11)?), "updated_at")?.expect("some"),
    })
}

/// Inserts a schedule; false if the name is taken.
pub fn schedule_insert(conn: &Connection, schedule: &Schedule) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO schedules (name, cron, type, payload, target, priority, timeout_secs,
                 max_attempts, enabled, last_fire_at, created_at, updated_at)
             VALUES (:name, :cron, :type, :payload, :target, :priority, :timeout, :attempts,
                 :enabled, :last_fire, :created, :updated)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(named_params! {
            ":name": schedule.name, ":cron": schedule.cron, ":type": schedule.kind,
            ":payload": schedule.payload.to_string(), ":target": schedule.target,
            ":priority": schedule.priority, ":timeout": schedule.timeout_secs,
            ":attempts": schedule.max_attempts, ":enabled": schedule.enabled,
            ":last_fire": schedule.last_fire_at.map(to_db),
            ":created": to_db(schedule.created_at), ":updated": to_db(schedule.updated_at),
        })?;
    Ok(changed == 1)
}

/// Replaces everything but the name, creation time and last fire; false if
/// there is no such schedule.
pub fn schedule_update(conn: &Connection, schedule: &Schedule) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET cron = :cron, type = :type, payload = :payload,
                 target = :target, priority = :priority, timeout_secs = :timeout,
                 max_attempts = :attempts, enabled = :enabled, updated_at = :updated
             WHERE name = :name",
        )?
        .execute(named_params! {
            ":name": schedule.name, ":cron": schedule.cron, ":type": schedule.kind,
            ":payload": schedule.payload.to_string(), ":target": schedule.target,
            ":priority": schedule.priority, ":timeout": schedule.timeout_secs,
            ":attempts": schedule.max_attempts, ":enabled": schedule.enabled,
            ":updated": to_db(schedule.updated_at),
        })?;
    Ok(changed == 1)
}

pub fn schedule_get(conn: &Connection, name: &str) -> Result<Option<Schedule>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1"
    ))?;
    let mut rows = stmt.query([name])?;
    rows.next()?.map(schedule_from_row).transpose()
}

pub fn schedule_list(conn: &Connection) -> Result<Vec<Schedule>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
    ))?;
    let mut rows = stmt.query([])?;
    let mut schedules = Vec::new();
    while let Some(row) = rows.next()? {
        schedules.push(schedule_from_row(row)?);
    }
    Ok(schedules)
}

pub fn schedule_delete(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")?
        .execute([name])?
        == 1)
}

/// Moves `last_fire_at` to `fire_at` if it is still behind it; true means
/// this caller owns the fire and must enqueue it in the same transaction.
pub fn schedule_mark_fired(conn: &Connection, name: &str, fire_at: Timestamp) -> Result<bool> {
    let fire = to_db(fire_at);
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET last_fire_at = :fire
             WHERE name = :name AND enabled = 1 AND (last_fire_at IS NULL OR last_fire_at < :fire)",
        )?
        .execute(named_params! {":name": name, ":fire": fire})?;
    Ok(changed == 1)
}
