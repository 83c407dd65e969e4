//! SQL for workflows: the parent operation (`workflow.run`), its steps
//! (operations with `parent_id` and `step`), their dependencies
//! (`operation_dependencies`), their compensations
//! (`workflow_compensations`, made into operations only when needed) and
//! the workflow's phase (`workflows`).
//!
//! Invariants:
//! - A workflow is inserted in one transaction with all its steps; a step
//!   waits (`deps_left > 0`) until every step it depends on completed. The
//!   parent keeps `deps_left = 1`: the store runs it, never a worker.
//! - Every change to a step is followed, in the same transaction, by
//!   [`workflow_step_ended`] or the claim's [`workflow_steps_claimed`]: a
//!   completion releases its dependents (`deps_left - 1`) in the
//!   transaction that records it, fenced like every finish, so a crash at
//!   any point neither loses nor repeats a release. No process has to poll
//!   to move a workflow on; the reaper's [`workflow_reconcile`] is only a
//!   backstop.
//! - [`workflow_advance`] is the workflow's state machine and is idempotent:
//!   `running` (steps run) → on a step failed for good, the steps not yet
//!   started are cancelled (`dependency_failed`) and the phase becomes
//!   `compensating` (or `stopping` with `on_failure: stop`); once nothing
//!   of the workflow is pending or running, the compensation of the most
//!   recently completed step not yet undone is made an operation, one at a
//!   time, in reverse order of completion, each with its own retries; when
//!   none is left the parent ends `failed` (or `cancelled`) and its result
//!   says whether every compensation completed.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::operations::{
    Cancel, Inserted, Retry, operation_children, operation_get, operation_insert,
    operation_insert_row,
};
use super::{Result, StoreError, json_column};
use crate::operation::{Operation, OperationError, OperationId};
use crate::status::Status;
use crate::time::{Timestamp, to_db};
use crate::workflow::{NewWorkflow, OnFailure, WORKFLOW_KIND};

/// Error codes workflows write.
pub mod codes {
    /// A step that could not run because another step failed for good (or
    /// the workflow was cancelled before it started).
    pub const DEPENDENCY_FAILED: &str = "dependency_failed";
    /// The parent of a workflow one of whose steps failed for good.
    pub const STEP_FAILED: &str = "step_failed";
}

/// Where a workflow is (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Compensating,
    Stopping,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Compensating => "compensating",
            Phase::Stopping => "stopping",
            Phase::Ended => "ended",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "running" => Phase::Running,
            "compensating" => Phase::Compensating,
            "stopping" => Phase::Stopping,
            "ended" => Phase::Ended,
            other => return Err(StoreError::Corrupt(format!("workflow phase {other:?}"))),
        })
    }
}

/// Inserts a workflow: the parent (or, for a replayed idempotency key, the
/// workflow it names), its steps, dependencies and compensations. Call it
/// inside a write transaction.
pub fn workflow_insert(conn: &Connection, new: &NewWorkflow) -> Result<Inserted> {
    let inserted = operation_insert(conn, &new.parent)?;
    if !matches!(inserted, Inserted::Created(_)) {
        return Ok(inserted);
    }
    conn.prepare_cached("INSERT INTO workflows (id, name, on_failure) VALUES (?1, ?2, ?3)")?
        .execute((
            new.parent.id.to_string(),
            &new.name,
            new.on_failure.as_str(),
        ))?;
    let mut depends = conn.prepare_cached(
        "INSERT INTO operation_dependencies (operation_id, depends_on) VALUES (?1, ?2)",
    )?;
    let mut compensations = conn.prepare_cached(
        "INSERT INTO workflow_compensations (step_id, type, payload, secrets, resource,
             rerun_safe, timeout_secs, max_attempts)
         VALUES (:id, :type, :payload, :secrets, :resource, :rerun_safe, :timeout, :attempts)",
    )?;
    let ids: Vec<String> = new
        .steps
        .iter()
        .map(|s| s.operation.id.to_string())
        .collect();
    for (step, id) in new.steps.iter().zip(&ids) {
        operation_insert_row(conn, &step.operation)?;
        for &dependency in &step.depends_on {
            depends.execute((id, &ids[dependency]))?;
        }
        if let Some(c) = &step.compensation {
            compensations.execute(named_params! {
                ":id": id, ":type": c.kind, ":payload": c.payload.to_string(),
                ":secrets": c.secrets.as_ref().map(Value::to_string), ":resource": c.resource,
                ":rerun_safe": c.rerun_safe, ":timeout": c.timeout_secs,
                ":attempts": c.max_attempts,
            })?;
        }
    }
    Ok(inserted)
}

/// After a claim: each claimed step gets its inputs (the results of the
/// steps it depends on) and its workflow becomes `running`.
pub(crate) fn workflow_steps_claimed(
    conn: &Connection,
    claimed: &mut [Operation],
    now: Timestamp,
) -> Result<()> {
    for op in claimed.iter_mut() {
        let Some(parent) = op.parent_id else {
            continue;
        };
        if op.compensates.is_none() {
            let mut inputs = conn.prepare_cached(
                "SELECT d.step, d.result FROM operation_dependencies o
                 JOIN operations d ON d.id = o.depends_on
                 WHERE o.operation_id = ?1",
            )?;
            let mut rows = inputs.query([op.id.to_string()])?;
            while let Some(row) = rows.next()? {
                let name: Option<String> = row.get(0)?;
                let result: Option<Value> = json_column(row.get(1)?, "result")?;
                if let Some(name) = name {
                    op.inputs.insert(name, result.unwrap_or(Value::Null));
                }
            }
        }
        conn.prepare_cached(
            "UPDATE operations SET status = 'running', started_at = COALESCE(started_at, :now),
                 updated_at = :now
             WHERE id = :id AND status = 'pending'",
        )?
        .execute(named_params! {":id": parent.to_string(), ":now": to_db(now)})?;
    }
    Ok(())
}

/// After a step (or a compensation) of workflow `parent` ended as `status`:
/// a completion releases its dependents, then the workflow moves on.
pub(crate) fn workflow_step_ended(
    conn: &Connection,
    step: &str,
    parent: &str,
    status: Status,
    now: Timestamp,
) -> Result<()> {
    if status == Status::Completed {
        conn.prepare_cached(
            "UPDATE operations SET deps_left = deps_left - 1
             WHERE id IN (SELECT operation_id FROM operation_dependencies WHERE depends_on = ?1)
               AND status = 'pending' AND deps_left > 0",
        )?
        .execute([step])?;
    }
    workflow_advance(conn, parent, now)
}

struct WorkflowRow {
    on_failure: String,
    phase: Phase,
    outcome: Option<String>,
    cause: Option<OperationError>,
}

fn workflow_row(conn: &Connection, id: &str) -> Result<Option<WorkflowRow>> {
    let row = conn
        .prepare_cached("SELECT on_failure, phase, outcome, cause FROM workflows WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    let Some((on_failure, phase, outcome, cause)) = row else {
        return Ok(None);
    };
    Ok(Some(WorkflowRow {
        on_failure,
        phase: Phase::parse(&phase)?,
        outcome,
        cause: json_column(cause, "cause")?,
    }))
}

fn set_phase(
    conn: &Connection,
    id: &str,
    phase: Phase,
    outcome: Option<&str>,
    cause: Option<&OperationError>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE workflows SET phase = :phase, outcome = COALESCE(:outcome, outcome),
             cause = COALESCE(:cause, cause)
         WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": id, ":phase": phase.as_str(), ":outcome": outcome,
        ":cause": cause.map(|c| serde_json::to_string(c).expect("errors serialize")),
    })?;
    Ok(())
}

/// Ends the steps of workflow `id` that have not started, with `error`.
fn cancel_pending_steps(
    conn: &Connection,
    id: &str,
    error: &OperationError,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE operations SET status = 'cancelled', error = :error, finished_at = :now,
             updated_at = :now
         WHERE parent_id = :id AND compensates IS NULL AND status = 'pending'",
    )?
    .execute(named_params! {
        ":id": id, ":now": to_db(now),
        ":error": serde_json::to_string(error).expect("errors serialize"),
    })?;
    Ok(())
}

/// Moves workflow `id` on as far as it can go now (see the module header).
pub fn workflow_advance(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    let Some(mut workflow) = workflow_row(conn, id)? else {
        return Ok(());
    };
    if workflow.phase == Phase::Ended {
        return Ok(());
    }
    if workflow.phase == Phase::Running {
        let failed: Option<(String, String, Option<String>)> = conn
            .prepare_cached(
                "SELECT step, status, error FROM operations
                 WHERE parent_id = ?1 AND compensates IS NULL
                   AND status IN ('failed', 'cancelled')
                 ORDER BY finished_at, id LIMIT 1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        match failed {
            Some((step, status, error)) => {
                let error: Option<OperationError> = json_column(error, "error")?;
                let why = error
                    .map(|e| format!(": {}", e.message))
                    .unwrap_or_default();
                let cause = OperationError::new(
                    codes::STEP_FAILED,
                    format!("step {step} ended {status}{why}"),
                    false,
                );
                let not_run = OperationError::new(
                    codes::DEPENDENCY_FAILED,
                    format!("not run: step {step} ended {status}"),
                    false,
                );
                cancel_pending_steps(conn, id, &not_run, now)?;
                workflow.phase = if workflow.on_failure == OnFailure::Stop.as_str() {
                    Phase::Stopping
                } else {
                    Phase::Compensating
                };
                workflow.outcome = Some("failed".into());
                set_phase(conn, id, workflow.phase, Some("failed"), Some(&cause))?;
                workflow.cause = Some(cause);
            }
            None => {
                let unfinished: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM operations
                         WHERE parent_id = ?1 AND compensates IS NULL AND status <> 'completed'",
                    )?
                    .query_row([id], |r| r.get(0))?;
                if unfinished == 0 {
                    complete(conn, id, now)?;
                }
                return Ok(());
            }
        }
    }
    let in_flight: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM operations
             WHERE parent_id = ?1 AND status IN ('pending', 'running')",
        )?
        .query_row([id], |r| r.get(0))?;
    if in_flight > 0 {
        return Ok(());
    }
    if workflow.phase == Phase::Compensating && start_next_compensation(conn, id, now)? {
        return Ok(());
    }
    end(conn, id, &workflow, now)
}

/// Every step completed: the parent completes with their results.
fn complete(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    let mut results = serde_json::Map::new();
    let mut stmt = conn.prepare_cached(
        "SELECT step, result FROM operations
         WHERE parent_id = ?1 AND compensates IS NULL ORDER BY id",
    )?;
    let mut rows = stmt.query([id])?;
    while let Some(row) = rows.next()? {
        let step: String = row.get(0)?;
        let result: Option<Value> = json_column(row.get(1)?, "result")?;
        results.insert(step, result.unwrap_or(Value::Null));
    }
    finish_parent(
        conn,
        id,
        Status::Completed,
        &json!({"steps": results}),
        None,
        now,
    )?;
    set_phase(conn, id, Phase::Ended, None, None)
}

fn finish_parent(
    conn: &Connection,
    id: &str,
    status: Status,
    result: &Value,
    error: Option<&OperationError>,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE operations SET status = :status, result = :result, error = :error,
             started_at = COALESCE(started_at, :now), finished_at = :now, updated_at = :now
         WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": id, ":status": status.as_str(), ":result": result.to_string(),
        ":error": error.map(|e| serde_json::to_string(e).expect("errors serialize")),
        ":now": to_db(now),
    })?;
    Ok(())
}

/// Makes the compensation of the most recently completed step that has one
/// and was not undone since it completed into an operation; false if none
/// is left.
fn start_next_compensation(conn: &Connection, id: &str, now: Timestamp) -> Result<bool> {
    let next = conn
        .prepare_cached(
            "SELECT s.step, s.source, s.target, s.priority, c.type, c.payload, c.secrets,
                    c.resource, c.rerun_safe, c.timeout_secs, c.max_attempts
             FROM operations s JOIN workflow_compensations c ON c.step_id = s.id
             WHERE s.parent_id = :id AND s.compensates IS NULL AND s.status = 'completed'
               AND NOT EXISTS (SELECT 1 FROM operations k
                               WHERE k.parent_id = :id AND k.compensates = s.step
                                 AND k.created_at >= s.finished_at)
             ORDER BY s.finished_at DESC, s.id DESC LIMIT 1",
        )?
        .query_row(named_params! {":id": id}, |r| {
            Ok(crate::operation::NewOperation {
                id: OperationId::new(),
                kind: r.get(4)?,
                payload: Value::Null,
                secrets: None,
                source: r.get(1)?,
                target: r.get(2)?,
                resource: r.get(7)?,
                priority: r.get(3)?,
                run_at: now,
                max_attempts: r.get(10)?,
                timeout_secs: r.get(9)?,
                rerun_safe: r.get(8)?,
                idempotency_key: None,
                request_hash: String::new(),
                parent_id: None,
                step: r.get(0)?,
                compensates: r.get(0)?,
                deps_left: 0,
                created_at: now,
            })
            .map(|new| (new, r.get::<_, String>(5), r.get::<_, Option<String>>(6)))
        })
        .optional()?;
    let Some((mut new, payload, secrets)) = next else {
        return Ok(false);
    };
    new.payload = serde_json::from_str(&payload?)
        .map_err(|_| StoreError::Corrupt(format!("workflow {id}: compensation payload")))?;
    new.secrets = json_column(secrets?, "secrets")?;
    new.parent_id = Some(
        id.parse()
            .map_err(|_| StoreError::Corrupt(format!("workflow id {id}")))?,
    );
    operation_insert_row(conn, &new)?;
    Ok(true)
}

/// Nothing is left to run: the parent ends as the workflow's outcome.
fn end(conn: &Connection, id: &str, workflow: &WorkflowRow, now: Timestamp) -> Result<()> {
    let mut compensations = Vec::new();
    let mut all_completed = true;
    let mut stmt = conn.prepare_cached(
        "SELECT compensates, id, status FROM operations
         WHERE parent_id = ?1 AND compensates IS NOT NULL ORDER BY id",
    )?;
    let mut rows = stmt.query([id])?;
    while let Some(row) = rows.next()? {
        let status: String = row.get(2)?;
        all_completed &= status == "completed";
        compensations.push(json!({
            "step": row.get::<_, String>(0)?,
            "operation_id": row.get::<_, String>(1)?,
            "status": status,
        }));
    }
    drop(rows);
    let compensated = workflow.phase == Phase::Compensating && all_completed;
    let status = match workflow.outcome.as_deref() {
        Some("cancelled") => Status::Cancelled,
        _ => Status::Failed,
    };
    let result = json!({"compensated": compensated, "compensations": compensations});
    finish_parent(conn, id, status, &result, workflow.cause.as_ref(), now)?;
    set_phase(conn, id, Phase::Ended, None, None)
}

/// Cancels workflow `id`: steps not started end `cancelled`, running ones
/// are asked to stop, then (unless `compensate` is false) the completed
/// steps are compensated; the parent ends `cancelled`.
pub fn workflow_cancel(
    conn: &Connection,
    id: OperationId,
    compensate: bool,
    now: Timestamp,
) -> Result<Cancel> {
    let Some(parent) = operation_get(conn, id)? else {
        return Ok(Cancel::NotFound);
    };
    let key = id.to_string();
    let Some(workflow) = workflow_row(conn, &key)? else {
        return Ok(Cancel::NotFound);
    };
    if parent.status.is_terminal() {
        return Ok(Cancel::Terminal(parent));
    }
    if workflow.phase == Phase::Running {
        let cause = OperationError::new(
            crate::operation::codes::CANCELLED,
            "the workflow was cancelled",
            false,
        );
        cancel_pending_steps(conn, &key, &cause, now)?;
        conn.prepare_cached(
            "UPDATE operations SET cancel_requested_at = COALESCE(cancel_requested_at, :now),
                 updated_at = :now
             WHERE parent_id = :id AND status = 'running'",
        )?
        .execute(named_params! {":id": key, ":now": to_db(now)})?;
        let phase = if compensate {
            Phase::Compensating
        } else {
            Phase::Stopping
        };
        set_phase(conn, &key, phase, Some("cancelled"), Some(&cause))?;
        workflow_advance(conn, &key, now)?;
    }
    let parent = operation_get(conn, id)?.expect("the workflow was just read");
    Ok(if parent.status.is_terminal() {
        Cancel::Cancelled(parent)
    } else {
        Cancel::Requested(parent)
    })
}

/// Runs a failed or cancelled workflow again: its completed steps stay
/// completed (unless their compensation undid them), the others run again.
pub fn workflow_retry(conn: &Connection, id: OperationId, now: Timestamp) -> Result<Retry> {
    let Some(parent) = operation_get(conn, id)? else {
        return Ok(Retry::NotFound);
    };
    let key = id.to_string();
    if workflow_row(conn, &key)?.is_none()
        || !matches!(parent.status, Status::Failed | Status::Cancelled)
    {
        return Ok(Retry::NotRetryable(parent));
    }
    let now_text = to_db(now);
    conn.prepare_cached(
        "UPDATE operations
         SET status = 'pending', run_at = :now, finished_at = NULL, result = NULL,
             cancel_requested_at = NULL, progress = NULL,
             max_attempts = MAX(max_attempts, attempt + 1), updated_at = :now
         WHERE parent_id = :id AND compensates IS NULL AND (
             status IN ('failed', 'cancelled')
             OR (status = 'completed' AND EXISTS (
                 SELECT 1 FROM operations k
                 WHERE k.parent_id = :id AND k.compensates = operations.step
                   AND k.created_at >= operations.finished_at AND k.status = 'completed')))",
    )?
    .execute(named_params! {":id": key, ":now": now_text})?;
    conn.prepare_cached(
        "UPDATE operations SET deps_left = (
             SELECT count(*) FROM operation_dependencies d
             JOIN operations p ON p.id = d.depends_on
             WHERE d.operation_id = operations.id AND p.status <> 'completed')
         WHERE parent_id = ?1 AND compensates IS NULL AND status = 'pending'",
    )?
    .execute([&key])?;
    conn.prepare_cached(
        "UPDATE operations
         SET status = CASE WHEN EXISTS (SELECT 1 FROM operations s
                                        WHERE s.parent_id = :id AND s.status = 'completed'
                                          AND s.compensates IS NULL)
                      THEN 'running' ELSE 'pending' END,
             finished_at = NULL, result = NULL, error = NULL, cancel_requested_at = NULL,
             updated_at = :now
         WHERE id = :id",
    )?
    .execute(named_params! {":id": key, ":now": now_text})?;
    conn.prepare_cached(
        "UPDATE workflows SET phase = 'running', outcome = NULL, cause = NULL WHERE id = ?1",
    )?
    .execute([&key])?;
    Ok(Retry::Requeued(
        operation_get(conn, id)?.expect("the workflow was just read"),
    ))
}

/// The reaper's backstop: advances every workflow not ended; returns how
/// many it looked at.
pub fn workflow_reconcile(conn: &Connection, now: Timestamp) -> Result<usize> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM workflows WHERE phase <> 'ended'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &ids {
        workflow_advance(conn, id, now)?;
    }
    Ok(ids.len())
}

/// One step of a workflow, as `GET /api/v1/workflows/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub name: String,
    #[schema(value_type = String, format = Uuid)]
    pub operation_id: OperationId,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
    pub status: Status,
    pub depends_on: Vec<String>,
    /// The type of its compensation, if it has one.
    pub compensate: Option<String>,
    pub attempt: i64,
    pub max_attempts: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<OperationError>,
}

/// A compensation that ran (or runs), as `GET /api/v1/workflows/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompensationView {
    /// The step it undoes.
    pub compensates: String,
    #[schema(value_type = String, format = Uuid)]
    pub operation_id: OperationId,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Status,
    pub attempt: i64,
    pub max_attempts: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<OperationError>,
}

/// A workflow: its parent operation, phase, steps and compensations.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowView {
    #[serde(flatten)]
    pub operation: Operation,
    pub name: Option<String>,
    pub on_failure: String,
    pub phase: Phase,
    pub steps: Vec<StepView>,
    pub compensations: Vec<CompensationView>,
}

/// Workflow `id` with every step and compensation, or `None` if `id` is not
/// a workflow.
pub fn workflow_get(conn: &Connection, id: OperationId) -> Result<Option<WorkflowView>> {
    let Some(operation) = operation_get(conn, id)? else {
        return Ok(None);
    };
    let key = id.to_string();
    let row = conn
        .prepare_cached("SELECT name, on_failure, phase FROM workflows WHERE id = ?1")?
        .query_row([&key], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((name, on_failure, phase)) = row else {
        return Ok(None);
    };
    let mut depends_on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT o.operation_id, d.step FROM operation_dependencies o
         JOIN operations d ON d.id = o.depends_on
         WHERE d.parent_id = ?1 ORDER BY d.id",
    )?;
    let mut rows = stmt.query([&key])?;
    while let Some(row) = rows.next()? {
        depends_on
            .entry(row.get(0)?)
            .or_default()
            .push(row.get::<_, Option<String>>(1)?.unwrap_or_default());
    }
    drop(rows);
    let mut compensate: BTreeMap<String, String> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT c.step_id, c.type FROM workflow_compensations c
         JOIN operations s ON s.id = c.step_id WHERE s.parent_id = ?1",
    )?;
    let mut rows = stmt.query([&key])?;
    while let Some(row) = rows.next()? {
        compensate.insert(row.get(0)?, row.get(1)?);
    }
    drop(rows);
    let children = operation_children(conn, id)?;
    let (mut steps, mut compensations) = (Vec::new(), Vec::new());
    for child in children {
        let child_key = child.id.to_string();
        match child.compensates {
            Some(compensates) => compensations.push(CompensationView {
                compensates,
                operation_id: child.id,
                kind: child.kind,
                status: child.status,
                attempt: child.attempt,
                max_attempts: child.max_attempts,
                created_at: child.created_at,
                started_at: child.started_at,
                finished_at: child.finished_at,
                error: child.error,
            }),
            None => steps.push(StepView {
                name: child.step.unwrap_or_default(),
                operation_id: child.id,
                kind: child.kind,
                target: child.target,
                status: child.status,
                depends_on: depends_on.remove(&child_key).unwrap_or_default(),
                compensate: compensate.remove(&child_key),
                attempt: child.attempt,
                max_attempts: child.max_attempts,
                created_at: child.created_at,
                started_at: child.started_at,
                finished_at: child.finished_at,
                result: child.result,
                error: child.error,
            }),
        }
    }
    Ok(Some(WorkflowView {
        operation,
        name,
        on_failure,
        phase: Phase::parse(&phase)?,
        steps,
        compensations,
    }))
}

/// A workflow in a list: its parent operation, phase and how many of its
/// steps are in each status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowSummary {
    #[serde(flatten)]
    pub operation: Operation,
    pub name: Option<String>,
    pub on_failure: String,
    pub phase: Phase,
    /// Steps by status (`{"completed": 3, "running": 1}`).
    #[schema(value_type = Object)]
    pub steps: BTreeMap<String, i64>,
}

/// The summaries of the workflows among `operations` (others are skipped).
pub fn workflow_summaries(
    conn: &Connection,
    operations: Vec<Operation>,
) -> Result<Vec<WorkflowSummary>> {
    let mut counts = conn.prepare_cached(
        "SELECT status, count(*) FROM operations
         WHERE parent_id = ?1 AND compensates IS NULL GROUP BY status",
    )?;
    let mut row =
        conn.prepare_cached("SELECT name, on_failure, phase FROM workflows WHERE id = ?1")?;
    let mut summaries = Vec::with_capacity(operations.len());
    for operation in operations {
        let key = operation.id.to_string();
        let Some((name, on_failure, phase)) = row
            .query_row([&key], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?
        else {
            continue;
        };
        let mut steps = BTreeMap::new();
        let mut rows = counts.query([&key])?;
        while let Some(row) = rows.next()? {
            steps.insert(row.get(0)?, row.get(1)?);
        }
        summaries.push(WorkflowSummary {
            operation,
            name,
            on_failure,
            phase: Phase::parse(&phase)?,
            steps,
        });
    }
    Ok(summaries)
}

/// Whether `kind` is a workflow's parent.
pub fn is_workflow(kind: &str) -> bool {
    kind == WORKFLOW_KIND
}
