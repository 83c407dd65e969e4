//! SQL for an operation's life: the claim, heartbeats, fenced finishes,
//! progress, cancel and retry, the reaper's updates and the pruner's
//! deletes. A change to a workflow's step is followed, in the same
//! transaction, by the workflow's own move (see `workflows.rs`).
//!
//! Fencing: every write about a running operation made on behalf of a worker
//! (`operation_heartbeat`, `operation_finish`, `operation_progress`) is
//! conditional on `(id, worker_id, attempt, status = 'running')` and reports
//! whether it applied. A worker whose claim was reaped cannot overwrite what
//! happened after.
//!
//! The claim takes, in `priority, run_at, id` order, pending rows that are
//! due, whose dependencies completed (`deps_left = 0`), for a served target
//! and source, and at the head of their resource: nothing on the same
//! resource is running and nothing on it is pending with a smaller id. So
//! operations on one resource run one at a time in the order accepted,
//! while other resources are not held up.

use rusqlite::{Connection, OptionalExtension, named_params};
use serde_json::Value;

use super::operations::{COLUMNS, Cancel, Retry, collect, operation_get, to_json};
use super::workflows::{
    is_workflow, workflow_cancel, workflow_retry, workflow_step_ended, workflow_steps_claimed,
};
use super::{Result, StoreError};
use crate::operation::{Fence, Operation, OperationError, OperationId, Progress, codes};
use crate::status::Status;
use crate::time::{Timestamp, to_db};

/// What a worker may claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub worker_id: &'a str,
    pub targets: &'a [String],
    /// `None` serves every source.
    pub sources: Option<&'a [String]>,
    pub limit: usize,
    pub now: Timestamp,
    pub lease_until: Timestamp,
}

/// Moves up to `limit` claimable rows to `running` for this worker in one
/// statement, incrementing `attempt`; returns them in claim order.
pub fn operation_claim(conn: &Connection, claim: &ClaimRequest) -> Result<Vec<Operation>> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    // INDEXED BY: without statistics the planner picks `operations_status`
    // and sorts every pending row for each claim (11 ms at 40k pending);
    // the claim index yields rows already in claim order. `LIMIT +:limit`:
    // a bare parameter in LIMIT makes SQLite re-prepare the statement on
    // every bind (about half the claim's cost); an expression does not.
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE operations
         SET status = 'running', worker_id = :worker, attempt = attempt + 1,
             lease_expires_at = :lease, started_at = :now, updated_at = :now
         WHERE id IN (
             SELECT o.id FROM operations o INDEXED BY operations_claim
             WHERE o.status = 'pending' AND o.deps_left = 0 AND o.run_at <= :now
               AND o.target IN (SELECT value FROM json_each(:targets))
               AND (:sources IS NULL OR o.source IN (SELECT value FROM json_each(:sources)))
               AND (o.resource IS NULL OR (
                   NOT EXISTS (SELECT 1 FROM operations r INDEXED BY operations_resource_running
                               WHERE r.status = 'running' AND r.resource = o.resource)
                   AND NOT EXISTS (SELECT 1 FROM operations e INDEXED BY operations_resource_pending
                               WHERE e.status = 'pending' AND e.resource = o.resource
                                 AND e.id < o.id)))
             ORDER BY o.priority, o.run_at, o.id
             LIMIT +:limit)
         RETURNING {COLUMNS}"
    ))?;
    let rows = stmt.query(named_params! {
        ":worker": claim.worker_id,
        ":lease": to_db(claim.lease_until),
        ":now": to_db(claim.now),
        ":targets": to_json(&claim.targets),
        ":sources": claim.sources.map(|s| to_json(&s)),
        ":limit": claim.limit as i64,
    })?;
    let mut claimed = collect(rows)?;
    claimed.sort_by_key(|op| (op.priority, op.run_at, op.id));
    if claimed.iter().any(|op| op.parent_id.is_some()) {
        workflow_steps_claimed(conn, &mut claimed, claim.now)?;
    }
    Ok(claimed)
}

/// Extends the leases of the operations this worker runs; returns the fences
/// that no longer hold (reaped, or ended by someone else): the worker must
/// stop those.
pub fn operation_heartbeat(
    conn: &Connection,
    fences: &[Fence],
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<Vec<Fence>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE operations SET lease_expires_at = :lease, updated_at = :now
         WHERE id = :id AND worker_id = :worker AND attempt = :attempt AND status = 'running'",
    )?;
    let (lease, now) = (to_db(lease_until), to_db(now));
    let mut lost = Vec::new();
    for fence in fences {
        let changed = stmt.execute(named_params! {
            ":lease": lease, ":now": now, ":id": fence.id.to_string(),
            ":worker": fence.worker_id, ":attempt": fence.attempt,
        })?;
        if changed == 0 {
            lost.push(fence.clone());
        }
    }
    Ok(lost)
}

/// How a running operation ends (or goes back to pending).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Finish {
    Completed {
        result: Value,
    },
    Failed {
        error: OperationError,
    },
    /// Back to pending, to run again at `run_at`.
    Retry {
        error: OperationError,
        run_at: Timestamp,
    },
    Cancelled {
        error: OperationError,
    },
    /// Handed back untouched at shutdown: pending again at once, and the
    /// interrupted attempt does not count.
    Released,
}

impl Finish {
    pub fn status(&self) -> Status {
        match self {
            Finish::Completed { .. } => Status::Completed,
            Finish::Failed { .. } => Status::Failed,
            Finish::Retry { .. } | Finish::Released => Status::Pending,
            Finish::Cancelled { .. } => Status::Cancelled,
        }
    }
}

/// Records the end of an attempt, fenced; false if the fence no longer holds.
pub fn operation_finish(
    conn: &Connection,
    fence: &Fence,
    finish: &Finish,
    now: Timestamp,
) -> Result<bool> {
    let now_text = to_db(now);
    let (result, error, run_at, finished_at, attempt_delta) = match finish {
        Finish::Completed { result } => (Some(to_json(result)), None, None, Some(&now_text), 0),
        Finish::Failed { error } | Finish::Cancelled { error } => {
            (None, Some(to_json(error)), None, Some(&now_text), 0)
        }
        Finish::Retry { error, run_at } => {
            (None, Some(to_json(error)), Some(to_db(*run_at)), None, 0)
        }
        Finish::Released => (None, None, Some(now_text.clone()), None, 1),
    };
    let mut stmt = conn.prepare_cached(
        "UPDATE operations
         SET status = :status, result = :result, error = COALESCE(:error, error),
             run_at = COALESCE(:run_at, run_at), finished_at = :finished_at,
             attempt = attempt - :attempt_delta,
             worker_id = NULL, lease_expires_at = NULL, updated_at = :now
         WHERE id = :id AND worker_id = :worker AND attempt = :attempt AND status = 'running'
         RETURNING parent_id",
    )?;
    let status = finish.status();
    let applied: Option<Option<String>> = stmt
        .query_row(
            named_params! {
                ":status": status.as_str(),
                ":result": result,
                ":error": error,
                ":run_at": run_at,
                ":finished_at": finished_at,
                ":attempt_delta": attempt_delta,
                ":now": now_text,
                ":id": fence.id.to_string(),
                ":worker": fence.worker_id,
                ":attempt": fence.attempt,
            },
            |r| r.get(0),
        )
        .optional()?;
    let Some(parent) = applied else {
        return Ok(false);
    };
    if let Some(parent) = parent
        && status.is_terminal()
    {
        workflow_step_ended(conn, &fence.id.to_string(), &parent, status, now)?;
    }
    Ok(true)
}

/// Records progress of a running operation, fenced.
pub fn operation_progress(
    conn: &Connection,
    fence: &Fence,
    progress: &Progress,
    now: Timestamp,
) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE operations SET progress = :progress, updated_at = :now
             WHERE id = :id AND worker_id = :worker AND attempt = :attempt AND status = 'running'",
        )?
        .execute(named_params! {
            ":progress": to_json(progress), ":now": to_db(now), ":id": fence.id.to_string(),
            ":worker": fence.worker_id, ":attempt": fence.attempt,
        })?;
    Ok(changed == 1)
}

pub fn operation_cancel(conn: &Connection, id: OperationId, now: Timestamp) -> Result<Cancel> {
    let Some(op) = operation_get(conn, id)? else {
        return Ok(Cancel::NotFound);
    };
    if is_workflow(&op.kind) {
        return workflow_cancel(conn, id, true, now);
    }
    let now_text = to_db(now);
    let params = named_params! {":id": id.to_string(), ":now": now_text};
    match op.status {
        Status::Pending => {
            let error = OperationError::new(codes::CANCELLED, "cancelled before it started", false);
            conn.prepare_cached(
                "UPDATE operations SET status = 'cancelled', error = :error,
                     finished_at = :now, cancel_requested_at = :now, updated_at = :now
                 WHERE id = :id AND status = 'pending'",
            )?
            .execute(
                named_params! {":id": id.to_string(), ":now": now_text, ":error": to_json(&error)},
            )?;
        }
        Status::Running => {
            conn.prepare_cached(
                "UPDATE operations SET cancel_requested_at = COALESCE(cancel_requested_at, :now),
                     updated_at = :now
                 WHERE id = :id AND status = 'running'",
            )?
            .execute(params)?;
        }
        _ => return Ok(Cancel::Terminal(op)),
    }
    let op = operation_get(conn, id)?.expect("the row was just updated");
    if let Some(parent) = op.parent_id
        && op.status == Status::Cancelled
    {
        workflow_step_ended(
            conn,
            &op.id.to_string(),
            &parent.to_string(),
            op.status,
            now,
        )?;
    }
    Ok(match op.status {
        Status::Running => Cancel::Requested(op),
        _ => Cancel::Cancelled(op),
    })
}

/// Puts a failed or cancelled operation back to pending, due now, with at
/// least one attempt left.
pub fn operation_retry(conn: &Connection, id: OperationId, now: Timestamp) -> Result<Retry> {
    match operation_get(conn, id)? {
        None => return Ok(Retry::NotFound),
        Some(op) if is_workflow(&op.kind) => return workflow_retry(conn, id, now),
        // A step runs again with its workflow (retry the workflow).
        Some(op) if op.parent_id.is_some() => return Ok(Retry::NotRetryable(op)),
        Some(_) => {}
    }
    let changed = conn
        .prepare_cached(
            "UPDATE operations
             SET status = 'pending', run_at = :now, finished_at = NULL, result = NULL,
                 cancel_requested_at = NULL, progress = NULL,
                 max_attempts = MAX(max_attempts, attempt + 1), updated_at = :now
             WHERE id = :id AND status IN ('failed', 'cancelled')",
        )?
        .execute(named_params! {":id": id.to_string(), ":now": to_db(now)})?;
    Ok(match (operation_get(conn, id)?, changed) {
        (None, _) => Retry::NotFound,
        (Some(op), 1) => Retry::Requeued(op),
        (Some(op), _) => Retry::NotRetryable(op),
    })
}

/// Running operations of this worker whose cancellation was asked for.
pub fn operation_cancel_requests(conn: &Connection, worker_id: &str) -> Result<Vec<Fence>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, attempt FROM operations
         WHERE status = 'running' AND worker_id = ?1 AND cancel_requested_at IS NOT NULL",
    )?;
    let mut rows = stmt.query([worker_id])?;
    let mut fences = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        fences.push(Fence {
            id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("id {id}")))?,
            worker_id: worker_id.to_owned(),
            attempt: row.get(1)?,
        });
    }
    Ok(fences)
}

/// What the reaper did to one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub code: String,
}

/// Ends running rows chosen by `condition` (SQL over `operations`, with the
/// named parameters `:now` and `:param`): those with a cancel request end
/// `cancelled`; if `requeue`, those safe to re-run with attempts left go back
/// to pending, and the rest fail with `code` and a message saying why they
/// were not re-run (not safe to re-run, or no attempts left); without
/// `requeue`, all fail with `code`. Each statement re-checks
/// `status = 'running'`, so running it twice, or from two monitors, is safe.
fn reap_where(
    conn: &Connection,
    condition: &str,
    param: &dyn rusqlite::ToSql,
    requeue: bool,
    code: &str,
    message: &str,
    now: Timestamp,
) -> Result<Vec<Reaped>> {
    let at = now;
    let now = to_db(now);
    let mut reaped = Vec::new();
    // Steps of workflows that ended here: their workflows move on after.
    let mut ended_steps: Vec<(String, String, Status)> = Vec::new();
    // `why` is an SQL expression over the row, appended to the message.
    let mut run = |set: &str,
                   extra: &str,
                   status: Status,
                   code: &str,
                   retryable: bool,
                   why: &str|
     -> Result<()> {
        let sql = format!(
            "UPDATE operations SET {set}, worker_id = NULL, lease_expires_at = NULL,
                 updated_at = :now,
                 error = json_object('code', :code,
                     'message', :message || {why}
                         || ' (worker ' || worker_id || ', attempt ' || attempt || ')',
                     'retryable', json(:retryable))
             WHERE status = 'running' AND worker_id IS NOT NULL AND ({condition}) {extra}
             RETURNING id, type, parent_id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(named_params! {
            ":now": now, ":param": param, ":code": code, ":message": message,
            ":retryable": if retryable { "true" } else { "false" },
        })?;
        while let Some(row) = rows.next()? {
            reaped.push(Reaped {
                id: row.get(0)?,
                kind: row.get(1)?,
                status,
                code: code.to_owned(),
            });
            if let Some(parent) = row.get::<_, Option<String>>(2)? {
                ended_steps.push((row.get(0)?, parent, status));
            }
        }
        Ok(())
    };
    let failed = "status = 'failed', finished_at = :now";
    run(
        "status = 'cancelled', finished_at = :now",
        "AND cancel_requested_at IS NOT NULL",
        Status::Cancelled,
        codes::CANCELLED,
        false,
        "''",
    )?;
    if requeue {
        run(
            "status = 'pending', run_at = :now",
            "AND rerun_safe = 1 AND attempt < max_attempts",
            Status::Pending,
            code,
            true,
            "''",
        )?;
        run(
            failed,
            "AND rerun_safe = 0",
            Status::Failed,
            code,
            false,
            NOT_RERUN_SAFE,
        )?;
        run(failed, "", Status::Failed, code, false, NO_ATTEMPTS_LEFT)?;
    } else {
        run(failed, "", Status::Failed, code, false, "''")?;
    }
    for (step, parent, status) in ended_steps {
        if status.is_terminal() {
            workflow_step_ended(conn, &step, &parent, status, at)?;
        }
    }
    Ok(reaped)
}

/// Why a reaped operation was failed instead of requeued (SQL expressions
/// over the row, for `reap_where`'s `why`).
const NOT_RERUN_SAFE: &str =
    "'; not re-run: ' || type || ' is not safe to re-run after a lost worker'";
const NO_ATTEMPTS_LEFT: &str =
    "'; not re-run: no attempts left (' || attempt || ' of ' || max_attempts || ')'";

/// Running operations whose lease ran out: requeued when safe with attempts
/// left, otherwise failed `lease_expired`.
pub fn operation_reap_expired(conn: &Connection, now: Timestamp) -> Result<Vec<Reaped>> {
    reap_where(
        conn,
        "lease_expires_at < :now AND :param IS NULL",
        &None::<String>,
        true,
        codes::LEASE_EXPIRED,
        "the claim's lease expired without a heartbeat",
        now,
    )
}

/// Running operations of a worker known to be dead: requeued when safe with
/// attempts left, otherwise failed `worker_lost`.
pub fn operation_reap_worker(
    conn: &Connection,
    worker_id: &str,
    now: Timestamp,
) -> Result<Vec<Reaped>> {
    reap_where(
        conn,
        "worker_id = :param",
        &worker_id,
        true,
        codes::WORKER_LOST,
        "the worker's process is gone",
        now,
    )
}

/// Running operations more than `grace_secs` past their timeout (their
/// worker should have failed them already): failed `timeout`.
pub fn operation_reap_timed_out(
    conn: &Connection,
    now: Timestamp,
    grace_secs: u64,
) -> Result<Vec<Reaped>> {
    reap_where(
        conn,
        "unixepoch(started_at, 'subsec') + timeout_secs + :param < unixepoch(:now, 'subsec')",
        &(grace_secs as i64),
        false,
        codes::TIMEOUT,
        "ran past its timeout and its worker did not stop it",
        now,
    )
}

/// Deletes up to `batch` terminal operations that finished before `before`,
/// with their logs; returns how many.
pub fn operation_prune(conn: &Connection, before: Timestamp, batch: usize) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM operations WHERE id IN (
                 SELECT id FROM operations INDEXED BY operations_created
                 WHERE created_at < :before AND finished_at < :before AND parent_id IS NULL
                 LIMIT :batch)",
        )?
        .execute(named_params! {":before": to_db(before), ":batch": batch as i64})?)
}
