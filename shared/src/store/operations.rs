//! SQL for the rows of the `operations` table: insert (with idempotency),
//! reads, lists and counts. What changes an operation's status (the claim,
//! finishes, cancel, retry, the reaper, the pruner) is `lifecycle.rs`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, named_params};

use super::{Result, StoreError, json_column, time_column};
use crate::operation::{NewOperation, Operation, OperationId};
use crate::status::Status;
use crate::time::{Timestamp, to_db};

pub(crate) const COLUMNS: &str = "id, type, payload, source, target, resource, status, priority, run_at, \
    attempt, max_attempts, timeout_secs, rerun_safe, lease_expires_at, worker_id, \
    idempotency_key, result, error, progress, parent_id, cancel_requested_at, created_at, \
    started_at, finished_at, updated_at, secrets, step, compensates";

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
        step: opt(26)?,
        compensates: opt(27)?,
        inputs: Default::default(),
    })
}

pub(crate) fn collect(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Operation>> {
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(operation_from_row(row)?);
    }
    Ok(found)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
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
            Some(row) => Some((row.get::<_, Option<String>>(28)?, operation_from_row(row))),
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
    let mut stmt = conn.prepare_cached(&format!("{INSERT} RETURNING {COLUMNS}"))?;
    let mut rows = with_insert_params(new, |params| stmt.query(params))?;
    let row = rows.next()?.expect("INSERT … RETURNING returns the row");
    Ok(Inserted::Created(operation_from_row(row)?))
}

const INSERT: &str = "INSERT INTO operations (id, type, payload, source, target, resource,
        status, priority, run_at, max_attempts, timeout_secs, rerun_safe, idempotency_key,
        request_hash, parent_id, created_at, updated_at, secrets, step, compensates, deps_left)
     VALUES (:id, :type, :payload, :source, :target, :resource, 'pending', :priority,
        :run_at, :max_attempts, :timeout_secs, :rerun_safe, :key, :hash,
        :parent_id, :now, :now, :secrets, :step, :compensates, :deps_left)";

/// Calls `f` with the named parameters of [`INSERT`] for `new`.
fn with_insert_params<T>(
    new: &NewOperation,
    f: impl FnOnce(&[(&str, &dyn rusqlite::ToSql)]) -> T,
) -> T {
    let now = to_db(new.created_at);
    f(named_params! {
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
        ":step": new.step,
        ":compensates": new.compensates,
        ":deps_left": new.deps_left,
    })
}

/// Inserts a pending operation that has no idempotency key (a workflow's
/// step or compensation), without reading it back.
pub(crate) fn operation_insert_row(conn: &Connection, new: &NewOperation) -> Result<()> {
    let mut stmt = conn.prepare_cached(INSERT)?;
    with_insert_params(new, |params| stmt.execute(params))?;
    Ok(())
}

/// The operations whose parent is `parent` (a workflow's steps and
/// compensations), in the order they were made.
pub fn operation_children(conn: &Connection, parent: OperationId) -> Result<Vec<Operation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM operations WHERE parent_id = ?1 ORDER BY id"
    ))?;
    collect(stmt.query([parent.to_string()])?)
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

/// What `operation_retry` did.
#[derive(Debug, Clone)]
pub enum Retry {
    Requeued(Operation),
    /// Only failed or cancelled operations can be retried.
    NotRetryable(Operation),
    NotFound,
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
