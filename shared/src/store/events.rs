//! SQL for `events`: what happened, in commit order, for the event stream
//! (`GET /api/v1/events`) and the dashboard. Nothing in Rust writes an
//! event: the triggers of migration 4 do, in the transaction of the change
//! they describe, so every process's changes are captured without any store
//! function knowing about events. This module reads them, tells where the
//! kept stream begins and ends, and prunes it.
//!
//! Invariants the readers rely on:
//! - ids rise in commit order without gaps (one writer at a time; a rolled
//!   back insert gives its id back), so "every event after N" is exact;
//! - [`event_prune`] never deletes the newest row, so an id is never handed
//!   out twice (a rowid is one more than the largest) and
//!   [`event_latest_id`] is the last id ever written;
//! - `at` rises with the id, within the few milliseconds by which two
//!   writers' clocks can cross, which lets a time be found by a binary
//!   search over ids instead of an index on `at` that every insert would
//!   pay for.
//!
//! Event types: `operation.created`, `operation.updated` (claimed,
//! requeued, progress, new log lines, a cancel request), `operation.finished`,
//! the same three for `workflow.run` operations as `workflow.*`, and
//! `schedule.fired`, and `target.status_changed` when a fleet target goes
//! online or offline (`target` set, `data` = `{status, previous}`).

use rusqlite::{Connection, Row, named_params};

use super::{Result, StoreError};
use crate::time::{Timestamp, to_db};

/// Every event type, as stored and as `?type=` names it.
pub const EVENT_TYPES: &[&str] = &[
    "operation.created",
    "operation.updated",
    "operation.finished",
    "workflow.created",
    "workflow.updated",
    "workflow.finished",
    "schedule.fired",
    "target.status_changed",
    "migration.created",
    "migration.updated",
    "migration.finished",
];

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    /// As stored: RFC 3339 UTC, fixed width.
    pub at: String,
    pub kind: String,
    pub operation_id: Option<String>,
    pub target: Option<String>,
    pub parent_id: Option<String>,
    /// A JSON object, as the trigger made it.
    pub data: String,
}

impl Event {
    /// The event as one JSON object: `{id, type, at, operation_id, target,
    /// parent_id, data}`. `data` is copied as stored (SQLite's
    /// `json_object` made it, so it is JSON).
    pub fn to_json(&self) -> String {
        let text = |value: &str| serde_json::to_string(value).expect("a string serializes");
        let optional = |value: &Option<String>| value.as_deref().map_or("null".into(), text);
        format!(
            r#"{{"id":{},"type":{},"at":{},"operation_id":{},"target":{},"parent_id":{},"data":{}}}"#,
            self.id,
            text(&self.kind),
            text(&self.at),
            optional(&self.operation_id),
            optional(&self.target),
            optional(&self.parent_id),
            self.data
        )
    }
}

const EVENT_COLUMNS: &str = "id, at, type, operation_id, target, parent_id, data";

fn event_from_row(row: &Row) -> Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        at: row.get(1)?,
        kind: row.get(2)?,
        operation_id: row.get(3)?,
        target: row.get(4)?,
        parent_id: row.get(5)?,
        data: row.get(6)?,
    })
}

/// Up to `limit` events with an id above `after`, oldest first.
pub fn event_list_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id > :after ORDER BY id LIMIT +:limit"
    ))?;
    let mut rows = stmt.query(named_params! {":after": after, ":limit": limit as i64})?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event_from_row(row)?);
    }
    Ok(events)
}

/// The last id written (0 before the first event).
pub fn event_latest_id(conn: &Connection) -> Result<i64> {
    let latest: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM events")?
        .query_row([], |r| r.get(0))?;
    Ok(latest.unwrap_or(0))
}

/// The oldest id still kept; `None` before the first event.
pub fn event_oldest_id(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(id) FROM events")?
        .query_row([], |r| r.get(0))?)
}

/// The first kept event at or after `at`, found by a binary search over
/// ids (see the module header); `None` if every kept event is older.
pub fn event_first_at_or_after(conn: &Connection, at: Timestamp) -> Result<Option<i64>> {
    let Some(oldest) = event_oldest_id(conn)? else {
        return Ok(None);
    };
    let at = to_db(at);
    let mut stmt =
        conn.prepare_cached("SELECT id, at FROM events WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    let mut probe = |id: i64| -> Result<Option<(i64, String)>> {
        let mut rows = stmt.query([id])?;
        Ok(match rows.next()? {
            Some(row) => Some((row.get(0)?, row.get(1)?)),
            None => None,
        })
    };
    // Every row below `low` is older than `at`; every row from `high` on
    // is not (or does not exist).
    let (mut low, mut high) = (oldest, event_latest_id(conn)? + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        match probe(middle)? {
            Some((found, found_at)) if found_at < at => low = found + 1,
            _ => high = middle,
        }
    }
    Ok(probe(low)?.map(|(id, _)| id))
}

/// Deletes up to `batch` events older than `before`, oldest first, but
/// never the newest (see the module header); returns how many.
pub fn event_prune(conn: &Connection, before: Timestamp, batch: usize) -> Result<usize> {
    let latest = event_latest_id(conn)?;
    let boundary = match event_first_at_or_after(conn, before)? {
        Some(id) => id.min(latest),
        None => latest,
    };
    Ok(conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE id < :boundary ORDER BY id LIMIT :batch)",
        )?
        .execute(named_params! {":boundary": boundary, ":batch": batch as i64})?)
}

/// Operations that ended since `since`, by minute (`2026-11-23T18:44`) and
/// status, oldest minute first; read from the kept `operation.finished`
/// events, at most `cap` of them.
pub fn event_finished_by_minute(
    conn: &Connection,
    since: Timestamp,
    cap: usize,
) -> Result<Vec<(String, String, i64)>> {
    let Some(from) = event_first_at_or_after(conn, since)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT substr(at, 1, 16) AS minute, data ->> '$.status' AS status, count(*)
         FROM events WHERE id >= :from AND id < :from + :cap AND type = 'operation.finished'
         GROUP BY minute, status ORDER BY minute",
    )?;
    let mut rows = stmt.query(named_params! {":from": from, ":cap": cap as i64})?;
    let mut counts = Vec::new();
    while let Some(row) = rows.next()? {
        let status: Option<String> = row.get(1)?;
        counts.push((
            row.get(0)?,
            status.ok_or_else(|| StoreError::Corrupt("a finished event without status".into()))?,
            row.get(2)?,
        ));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn add(conn: &Connection, at: &str, kind: &str) {
        conn.execute(
            "INSERT INTO events (at, type, data) VALUES (?1, ?2, '{\"status\":\"completed\"}')",
            [at, kind],
        )
        .unwrap();
    }

    fn time(text: &str) -> Timestamp {
        crate::time::from_db(text).unwrap()
    }

    #[test]
    fn a_time_is_found_by_bisection_and_pruning_keeps_what_is_newer() {
        let (store, _dir) = testing::store();
        let conn = store.connection().unwrap();
        assert_eq!(
            event_first_at_or_after(&conn, time("2026-01-01T00:00:00Z")).unwrap(),
            None
        );
        for minute in 0..10 {
            add(
                &conn,
                &format!("2026-01-01T00:0{minute}:00.000000Z"),
                "operation.finished",
            );
        }
        let first = |at: &str| event_first_at_or_after(&conn, time(at)).unwrap();
        assert_eq!(first("2025-12-31T00:00:00Z"), Some(1));
        assert_eq!(first("2026-01-01T00:04:00Z"), Some(5));
        assert_eq!(first("2026-01-01T00:04:30Z"), Some(6));
        assert_eq!(first("2026-01-01T00:09:00Z"), Some(10));
        assert_eq!(first("2026-01-01T00:09:01Z"), None);

        let counts = event_finished_by_minute(&conn, time("2026-01-01T00:08:00Z"), 1000).unwrap();
        assert_eq!(
            counts,
            [
                ("2026-01-01T00:08".to_owned(), "completed".to_owned(), 1),
                ("2026-01-01T00:09".to_owned(), "completed".to_owned(), 1)
            ]
        );

        assert_eq!(
            event_prune(&conn, time("2026-01-01T00:04:00Z"), 3).unwrap(),
            3
        );
        assert_eq!(
            event_prune(&conn, time("2026-01-01T00:04:00Z"), 3).unwrap(),
            1
        );
        assert_eq!(
            event_prune(&conn, time("2026-01-01T00:04:00Z"), 3).unwrap(),
            0
        );
        assert_eq!(event_oldest_id(&conn).unwrap(), Some(5));
        assert_eq!(
            event_prune(&conn, time("2027-01-01T00:00:00Z"), 100).unwrap(),
            5
        );
        assert_eq!(
            event_oldest_id(&conn).unwrap(),
            Some(10),
            "the newest row stays"
        );
        assert_eq!(event_latest_id(&conn).unwrap(), 10);
        add(&conn, "2026-01-02T00:00:00.000000Z", "operation.created");
        let ids: Vec<i64> = event_list_after(&conn, 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, [10, 11], "ids are never reused");
    }

    #[test]
    fn an_event_is_one_json_object_with_its_data_inline() {
        let event = Event {
            id: 7,
            at: "2026-01-01T00:00:00.000000Z".into(),
            kind: "operation.created".into(),
            operation_id: Some("op\"1".into()),
            target: None,
            parent_id: None,
            data: r#"{"status":"pending"}"#.into(),
        };
        let value: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "type": "operation.created", "at": "2026-01-01T00:00:00.000000Z",
                "operation_id": "op\"1", "target": null, "parent_id": null,
                "data": {"status": "pending"}})
        );
    }
}
