//! SQL for what opsqueue knows about host objects: `observations` (the last
//! state a worker saw, served by the API's reads with its `observed_at`) and
//! `managed_objects` (what opsqueue itself created, with the spec it applied).
//!
//! Drivers never write these directly: they hand [`StateEffect`]s to their
//! context, and the worker applies them in the transaction that records the
//! operation's completion, only if its fence still holds. So a reaped
//! worker's late observation cannot overwrite a newer one.

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, json_column, time_column};
use crate::operation::OperationId;
use crate::time::{Timestamp, to_db};

/// A change to what opsqueue knows about one kind of host object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum StateEffect {
    /// The complete list of `kind` objects as just observed: replaces every
    /// earlier observation of that kind on this target.
    ObservedAll {
        family: String,
        kind: String,
        items: Vec<(String, Value)>,
    },
    /// One object as just observed.
    Observed {
        family: String,
        kind: String,
        name: String,
        data: Value,
    },
    /// One object observed to be absent.
    ObservedGone {
        family: String,
        kind: String,
        name: String,
    },
    /// opsqueue created or changed this object with `spec`.
    Managed {
        family: String,
        kind: String,
        name: String,
        spec: Value,
    },
    /// opsqueue removed an object it managed.
    Unmanaged {
        family: String,
        kind: String,
        name: String,
    },
}

/// One observed object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    pub target: String,
    pub family: String,
    pub kind: String,
    pub name: String,
    pub data: Value,
    pub observed_at: Timestamp,
    pub operation_id: Option<String>,
}

/// One object opsqueue manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedObject {
    pub target: String,
    pub family: String,
    pub kind: String,
    pub name: String,
    pub spec: Value,
    pub operation_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Applies `effects` for an operation on `target` (call it in the finish's
/// transaction, after the fenced finish applied).
pub fn state_apply(
    conn: &Connection,
    target: &str,
    operation: OperationId,
    effects: &[StateEffect],
    now: Timestamp,
) -> Result<()> {
    let op = operation.to_string();
    let now = to_db(now);
    for effect in effects {
        match effect {
            StateEffect::ObservedAll {
                family,
                kind,
                items,
            } => {
                // The list was read at some time after the attempt started,
                // perhaps long before now: an object another operation
                // observed since then (an install that finished while the
                // list was being read) is newer than this list, so it is
                // neither replaced nor deleted, and what this list writes
                // is stamped with the attempt's start.
                let started: Option<String> = conn
                    .prepare_cached("SELECT started_at FROM operations WHERE id = ?1")?
                    .query_row([&op], |r| r.get(0))
                    .optional()?
                    .flatten();
                let read_after = started.unwrap_or_else(|| now.clone());
                conn.prepare_cached(
                    "DELETE FROM observations WHERE target = ?1 AND family = ?2 AND kind = ?3
                         AND observed_at <= ?4",
                )?
                .execute([target, family, kind, &read_after])?;
                for (name, data) in items {
                    observe(conn, target, family, kind, name, data, &read_after, &op)?;
                }
            }
            StateEffect::Observed {
                family,
                kind,
                name,
                data,
            } => {
                observe(conn, target, family, kind, name, data, &now, &op)?;
            }
            StateEffect::ObservedGone { family, kind, name } => {
                conn.prepare_cached(
                    "DELETE FROM observations WHERE target = ?1 AND family = ?2 AND kind = ?3 AND name = ?4",
                )?
                .execute([target, family, kind, name])?;
            }
            StateEffect::Managed {
                family,
                kind,
                name,
                spec,
            } => {
                conn.prepare_cached(
                    "INSERT INTO managed_objects (target, family, kind, name, spec, operation_id, created_at, updated_at)
                     VALUES (:target, :family, :kind, :name, :spec, :op, :now, :now)
                     ON CONFLICT (target, family, kind, name)
                     DO UPDATE SET spec = :spec, operation_id = :op, updated_at = :now",
                )?
                .execute(named_params! {
                    ":target": target, ":family": family, ":kind": kind, ":name": name,
                    ":spec": spec.to_string(), ":op": op, ":now": now,
                })?;
            }
            StateEffect::Unmanaged { family, kind, name } => {
                conn.prepare_cached(
                    "DELETE FROM managed_objects WHERE target = ?1 AND family = ?2 AND kind = ?3 AND name = ?4",
                )?
                .execute([target, family, kind, name])?;
            }
        }
    }
    Ok(())
}

/// Records what was seen of one object at `at`, unless it was seen since.
#[allow(clippy::too_many_arguments)]
fn observe(
    conn: &Connection,
    target: &str,
    family: &str,
    kind: &str,
    name: &str,
    data: &Value,
    at: &str,
    op: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO observations (target, family, kind, name, data, observed_at, operation_id)
         VALUES (:target, :family, :kind, :name, :data, :at, :op)
         ON CONFLICT (target, family, kind, name)
         DO UPDATE SET data = :data, observed_at = :at, operation_id = :op
         WHERE observations.observed_at <= :at",
    )?
    .execute(named_params! {
        ":target": target, ":family": family, ":kind": kind, ":name": name,
        ":data": data.to_string(), ":at": at, ":op": op,
    })?;
    Ok(())
}

fn json(text: String, what: &str) -> Result<Value> {
    Ok(json_column(Some(text), what)?.expect("some"))
}

/// The columns `observation_from_row` reads, in its order.
pub(crate) const OBSERVATION_COLUMNS: &str =
    "target, family, kind, name, data, observed_at, operation_id";

pub(crate) fn observation_from_row(row: &rusqlite::Row) -> Result<Observation> {
    Ok(Observation {
        target: row.get(0)?,
        family: row.get(1)?,
        kind: row.get(2)?,
        name: row.get(3)?,
        data: json(row.get(4)?, "observation data")?,
        observed_at: time_column(Some(row.get(5)?), "observed_at")?.expect("some"),
        operation_id: row.get(6)?,
    })
}

/// Observations of one kind on a target, by name; `name` narrows to one.
pub fn observation_list(
    conn: &Connection,
    target: &str,
    family: &str,
    kind: &str,
    name: Option<&str>,
) -> Result<Vec<Observation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OBSERVATION_COLUMNS} FROM observations
         WHERE target = :target AND family = :family AND kind = :kind AND (:name IS NULL OR name = :name)
         ORDER BY name"
    ))?;
    let mut rows = stmt.query(
        named_params! {":target": target, ":family": family, ":kind": kind, ":name": name},
    )?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(observation_from_row(row)?);
    }
    Ok(found)
}

/// Managed objects of one kind on a target; `name` narrows to one.
pub fn managed_list(
    conn: &Connection,
    target: &str,
    family: &str,
    kind: &str,
    name: Option<&str>,
) -> Result<Vec<ManagedObject>> {
    let mut stmt = conn.prepare_cached(
        "SELECT target, family, kind, name, spec, operation_id, created_at, updated_at FROM managed_objects
         WHERE target = :target AND family = :family AND kind = :kind AND (:name IS NULL OR name = :name)
         ORDER BY name",
    )?;
    let mut rows = stmt.query(
        named_params! {":target": target, ":family": family, ":kind": kind, ":name": name},
    )?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(ManagedObject {
            target: row.get(0)?,
            family: row.get(1)?,
            kind: row.get(2)?,
            name: row.get(3)?,
            spec: json(row.get(4)?, "managed spec")?,
            operation_id: row.get(5)?,
            created_at: time_column(Some(row.get(6)?), "created_at")?.expect("some"),
            updated_at: time_column(Some(row.get(7)?), "updated_at")?.expect("some"),
        });
    }
    Ok(found)
}
