//! SQL for the `operations` table: insert (with idempotency), reads and
//! lists, the claim, heartbeats, fenced finishes, cancel and retry, the
//! reaper's updates and the pruner's deletes.
//!
//! Fencing: every write about a running operation made on behalf of a worker
//! (`operation_heartbeat`, `operation_finish`, `operation_progress`) is
//! conditional on `(id, worker_id, attempt, status = 'running')` and reports
//! whether it applied. A worker whose claim was reaped cannot overwrite what
//! happened after.
//!
//! The claim takes, in `priority, run_at, id` order, pending rows that are
//! due, for a served target and source, and at the head of their resource:
//! nothing on the same resource is running and nothing on it is pending with
//! a smaller id. So operations on one resource run one at a time in the order
//! accepted, while other resources are not held up.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, named_params};
use serde_json::Value;

use super::{Result, StoreError, json_column, time_column};
use crate::operation::{
    Fence, NewOperation, Operation, OperationError, OperationId, Progress, codes,
};
use crate::status::Status;
use crate::time::{Timestamp, to_db};

const COLUMNS: &str = "id, type, payload, source, target, resource, status, priority, run_at, \
    attempt, max_attempts, timeout_secs, rerun_safe, lease_expires_at, worker_id, \
    idempotency_key, result, error, progress, parent_id, cancel_requested_at, created_at, \
    started_at, finished_at, updated_at, secrets";

fn operation_from_row(row: &Row) -> Result<Operation> {
    let text = |i: usize| row.get::<_, String>(i);
    let opt = |i: usize| row.get::<_, Option<String>>(i);
    let id: String = text(0)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("operation {id}: bad {what}"));
    Ok(Operation {
        id: id.parse().map_err(|_| corrupt("id"))?,
        kind: text(1)?,
        payload: serde_json::from_str(&text(2)?).map_err(|_| corrupt("payload"))?,
        source: text(3)?,
        target: text(4)?,
        resource: opt(5)?,
        status: text(6)?.parse().map_err(|_| corrupt("status"))?,
        priority: row.get(7)?,
        run_at: time_column(Some(text(8)?), "run_at")?.expect("some"),
        attempt: row.get(9)?,
        max_attempts: row.get(10)?,
        timeout_secs: row.get(11)?,
        rerun_safe: row.get(12)?,
        lease_expires_at: time_column(opt(13)?, "lease_expires_at")?,
        worker_id: opt(14)?,
        idempotency_key: opt(15)?,
        result: json_column(opt(16)?, "result")?,
        error: json_column(opt(17)?, "error")?,
        progress: json_column(opt(18)?, "progress")?,
        parent_id: opt(19)?
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| corrupt("parent_id"))?,
        cancel_requested_at: time_column(opt(20)?, "cancel_requested_at")?,
        created_at: time_column(Some(text(21)?), "created_at")?.expect("some"),
        started_at: time_column(opt(22)?, "started_at")?,
        finished_at: time_column(opt(23)?, "finished_at")?,
        updated_at: time_column(Some(text(24)?), "updated_at")?.expect("some"),
        secrets: json_column(opt(25)?, "secrets")?,
    })
}

fn collect(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Operation>> {
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(operation_from_row(row)?);
    }
    Ok(found)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("operation fields always serialize")
}

/// What `operation_insert` did.
#[derive(Debug, Clone)]
pub enum Inserted {
    Created(Operation),
    /// The same source already used this idempotency key for the same
    /// request: here is that operation.
    Replayed(Operation),
    /// The same source used this idempotency key for a different request.
    KeyReused(Operation),
}

impl Inserted {
    pub fn operation(&self) -> &Operation {
        match self {
            Inserted::Created(op) | Inserted::Replayed(op) | Inserted::KeyReused(op) => op,
        }
    }
}

/// Inserts a pending operation, or finds the one its idempotency key names.
/// Call it inside a write transaction so the lookup and the insert are one.
pub fn operation_insert(conn: &Connection, new: &NewOperation) -> Result<Inserted> {
    if let Some(key) = &new.idempotency_key {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, request_hash FROM operations
             WHERE source = :source AND idempotency_key = :key"
        ))?;
        let mut rows = stmt.query(named_params! {":source": new.source, ":key": key})?;
        let existing = match rows.next()? {
            Some(row) => Some((row.get::<_, Option<String>>(26)?, operation_from_row(row))),
            None => None,
        };
        if let Some((hash, op)) = existing {
            let op = op?;
            return Ok(if hash.as_deref() == Some(new.request_hash.as_str()) {
                Inserted::Replayed(op)
            } else {
                Inserted::KeyReused(op)
            });
        }
    }
    let now = to_db(new.created_at);
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO operations (id, type, payload, source, target, resource, status, priority,
            run_at, max_attempts, timeout_secs, rerun_safe, idempotency_key, request_hash,
            parent_id, created_at, updated_at, secrets)
         VALUES (:id, :type, :payload, :source, :target, :resource, 'pending', :priority,
            :run_at, :max_attempts, :timeout_secs, :rerun_safe, :key, :hash,
            :parent_id, :now, :now, :secrets)
         RETURNING {COLUMNS}"
    ))?;
    let mut rows = stmt.query(named_params! {
        ":id": new.id.to_string(),
        ":type": new.kind,
        ":payload": to_json(&new.payload),
        ":source": new.source,
        ":target": new.target,
        ":resource": new.resource,
        ":priority": new.priority,
        ":run_at": to_db(new.run_at),
        ":max_attempts": new.max_attempts,
        ":timeout_secs": new.timeout_secs,
        ":rerun_safe": new.rerun_safe,
        ":key": new.idempotency_key,
        ":hash": new.request_hash,
        ":parent_id": new.parent_id.map(|p| p.to_string()),
        ":now": now,
        ":secrets": new.secrets.as_ref().map(to_json),
    })?;
    let row = rows.next()?.expect("INSERT … RETURNING returns the row");
    Ok(Inserted::Created(operation_from_row(row)?))
}

pub fn operation_get(conn: &Connection, id: OperationId) -> Result<Option<Operation>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM operations WHERE id = ?1"))?;
    collect(stmt.query([id.to_string()])?).map(|mut v| v.pop())
}

/// Filters for `operation_list`; results are newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub resource: Option<String>,
    pub parent_id: Option<OperationId>,
    /// created_at >= since
    pub since: Option<Timestamp>,
    /// created_at < until
    pub until: Option<Timestamp>,
    /// The cursor: only ids smaller than this one (the last id of the
    /// previous page).
    pub before: Option<OperationId>,
    pub limit: usize,
}

pub fn operation_list(conn: &Connection, filter: &ListFilter) -> Result<Vec<Operation>> {
    let (sql, params) = list_query(filter);
    let mut stmt = conn.prepare_cached(&sql)?;
    collect(stmt.query(by_name(&params).as_slice())?)
}

type NamedValue = (&'static str, SqlValue);

/// The SQL of a list and its parameters. Only the filters given reach the
/// SQL, so SQLite can walk the index of one of them (`(status, id)`,
/// `(type, id)`, …) newest first; the form `(:x IS NULL OR x = :x)` would
/// make it scan every row instead.
fn list_query(filter: &ListFilter) -> (String, Vec<NamedValue>) {
    let text = |value: Option<String>| value.map(SqlValue::Text);
    let given = [
        (
            "status = :status",
            ":status",
            text(filter.status.map(|s| s.as_str().to_owned())),
        ),
        ("type = :type", ":type", text(filter.kind.clone())),
        ("source = :source", ":source", text(filter.source.clone())),
        ("target = :target", ":target", text(filter.target.clone())),
        (
            "resource = :resource",
            ":resource",
            text(filter.resource.clone()),
        ),
        (
            "parent_id = :parent",
            ":parent",
            text(filter.parent_id.map(|p| p.to_string())),
        ),
        (
            "created_at >= :since",
            ":since",
            text(filter.since.map(to_db)),
        ),
        (
            "created_at < :until",
            ":until",
            text(filter.until.map(to_db)),
        ),
        (
            "id < :before",
            ":before",
            text(filter.before.map(|b| b.to_string())),
        ),
    ];
    let mut clauses = vec!["1"];
    let mut params = vec![(":limit", SqlValue::Integer(filter.limit as i64))];
    for (clause, name, value) in given {
        if let Some(value) = value {
            clauses.push(clause);
            params.push((name, value));
        }
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM operations WHERE {} ORDER BY id DESC LIMIT :limit",
        clauses.join(" AND ")
    );
    (sql, params)
}

/// Named values as rusqlite binds them.
fn by_name(params: &[NamedValue]) -> Vec<(&str, &dyn rusqlite::ToSql)> {
    params
        .iter()
        .map(|(name, value)| (*name, value as _))
        .collect()
}

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
             WHERE o.status = 'pending' AND o.run_at <= :now
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
         WHERE id = :id AND worker_id = :worker AND attempt = :attempt AND status = 'running'",
    )?;
    let changed = stmt.execute(named_params! {
        ":status": finish.status().as_str(),
        ":result": result,
        ":error": error,
        ":run_at": run_at,
        ":finished_at": finished_at,
        ":attempt_delta": attempt_delta,
        ":now": now_text,
        ":id": fence.id.to_string(),
        ":worker": fence.worker_id,
        ":attempt": fence.attempt,
    })?;
    Ok(changed == 1)
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

/// What `operation_cancel` did.
#[derive(Debug, Clone)]
pub enum Cancel {
    /// It was pending and is now cancelled.
    Cancelled(Operation),
    /// It is running; its worker has been asked to stop it.
    Requested(Operation),
    /// It had already ended: nothing to cancel.
    Terminal(Operation),
    NotFound,
}

pub fn operation_cancel(conn: &Connection, id: OperationId, now: Timestamp) -> Result<Cancel> {
    let Some(op) = operation_get(conn, id)? else {
        return Ok(Cancel::NotFound);
    };
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
    Ok(match op.status {
        Status::Running => Cancel::Requested(op),
        _ => Cancel::Cancelled(op),
    })
}

/// What `operation_retry` did.
#[derive(Debug, Clone)]
pub enum Retry {
    Requeued(Operation),
    /// Only failed or cancelled operations can be retried.
    NotRetryable(Operation),
    NotFound,
}

/// Puts a failed or cancelled operation back to pending, due now, with at
/// least one attempt left.
pub fn operation_retry(conn: &Connection, id: OperationId, now: Timestamp) -> Result<Retry> {
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
    let now = to_db(now);
    let mut reaped = Vec::new();
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
             WHERE status = 'running' AND ({condition}) {extra}
             RETURNING id, type"
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
                 WHERE created_at < :before AND finished_at < :before
                 LIMIT :batch)",
        )?
        .execute(named_params! {":before": to_db(before), ":batch": batch as i64})?)
}

pub fn operation_count_by_status(conn: &Connection) -> Result<Vec<(Status, i64)>> {
    let mut counts: Vec<(Status, i64)> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    for (status, count) in counts.iter_mut() {
        *count = conn
            .prepare_cached("SELECT count(*) FROM operations WHERE status = ?1")?
            .query_row([status.as_str()], |r| r.get(0))?;
    }
    Ok(counts)
}

/// The `run_at` of the longest-waiting due pending operation.
pub fn operation_oldest_due(conn: &Connection, now: Timestamp) -> Result<Option<Timestamp>> {
    let oldest: Option<String> = conn
        .prepare_cached(
            "SELECT min(run_at) FROM operations WHERE status = 'pending' AND run_at <= ?1",
        )?
        .query_row([to_db(now)], |r| r.get(0))?;
    time_column(oldest, "run_at")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    /// What SQLite plans for a list with `filter`.
    fn plan(conn: &Connection, filter: &ListFilter) -> String {
        let (sql, params) = list_query(filter);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(by_name(&params).as_slice(), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn every_list_filter_is_answered_through_an_index() {
        let (store, _dir) = testing::store();
        let text = || Some("x".to_owned());
        let filters = [
            ListFilter {
                status: Some(Status::Failed),
                ..Default::default()
            },
            ListFilter {
                kind: text(),
                ..Default::default()
            },
            ListFilter {
                source: text(),
                ..Default::default()
            },
            ListFilter {
                target: text(),
                ..Default::default()
            },
            ListFilter {
                resource: text(),
                ..Default::default()
            },
            ListFilter {
                parent_id: Some(OperationId::new()),
                ..Default::default()
            },
        ];
        let conn = store.connection().unwrap();
        // A time range is left to the planner: alone, `since` walks the
        // primary key newest first (ids are UUIDv7, in created_at order).
        for filter in filters {
            let filter = ListFilter {
                limit: 50,
                ..filter
            };
            let plan = plan(&conn, &filter);
            assert!(
                plan.contains("SEARCH operations USING INDEX operations_"),
                "{filter:?} is planned as {plan}"
            );
        }
    }
}
