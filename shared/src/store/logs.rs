//! SQL for `operation_logs`: the append-only output of each operation, read
//! back by the API with `?after=SEQ`. The bytes stored per operation (every
//! attempt together) are capped: past the cap one marker line is written and
//! the rest is dropped, so a chatty program cannot fill the disk.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, named_params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Result, time_column};
use crate::operation::{Fence, OperationId};
use crate::time::{Timestamp, to_db};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// A step message written by the worker or the monitor.
    Step,
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Step => "step",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line to append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// One stored line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogEntry {
    pub seq: i64,
    pub attempt: i64,
    pub at: DateTime<Utc>,
    pub stream: String,
    pub line: String,
}

/// Appends lines for a running operation, fenced; returns false (and writes
/// nothing) if the fence no longer holds.
pub fn operation_log_append(
    conn: &Connection,
    fence: &Fence,
    lines: &[LogLine],
    cap_bytes: u64,
) -> Result<bool> {
    let used: Option<i64> = conn
        .prepare_cached(
            "SELECT log_bytes FROM operations
             WHERE id = :id AND worker_id = :worker AND attempt = :attempt AND status = 'running'",
        )?
        .query_row(
            named_params! {":id": fence.id.to_string(), ":worker": fence.worker_id, ":attempt": fence.attempt},
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some(used) = used else {
        return Ok(false);
    };
    append(conn, fence.id, fence.attempt, used as u64, lines, cap_bytes)?;
    Ok(true)
}

/// Appends lines about an operation whatever its state (the monitor's notes
/// on what it reaped, the API's on cancel requests).
pub fn operation_log_note(
    conn: &Connection,
    id: OperationId,
    line: &str,
    now: Timestamp,
    cap_bytes: u64,
) -> Result<()> {
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT attempt, log_bytes FROM operations WHERE id = ?1")?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some((attempt, used)) = found {
        let line = LogLine {
            at: now,
            stream: Stream::Step,
            line: line.to_owned(),
        };
        append(conn, id, attempt, used as u64, &[line], cap_bytes)?;
    }
    Ok(())
}

const CAP_MARKER: &str = "[opsqueue: log cap reached; further output dropped]";

fn append(
    conn: &Connection,
    id: OperationId,
    attempt: i64,
    mut used: u64,
    lines: &[LogLine],
    cap: u64,
) -> Result<()> {
    if used >= cap {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO operation_logs (operation_id, attempt, at, stream, line)
         VALUES (:id, :attempt, :at, :stream, :line)",
    )?;
    let id_text = id.to_string();
    for line in lines {
        let size = line.line.len() as u64 + 1;
        let (stream, text) = if used + size > cap {
            (Stream::Step.as_str(), CAP_MARKER)
        } else {
            (line.stream.as_str(), line.line.as_str())
        };
        insert.execute(named_params! {
            ":id": id_text, ":attempt": attempt, ":at": to_db(line.at),
            ":stream": stream, ":line": text,
        })?;
        if text == CAP_MARKER {
            used = cap;
            break;
        }
        used += size;
    }
    conn.prepare_cached("UPDATE operations SET log_bytes = ?1 WHERE id = ?2")?
        .execute(rusqlite::params![used as i64, id_text])?;
    Ok(())
}

/// Lines with `seq > after`, oldest first.
pub fn operation_log_list(
    conn: &Connection,
    id: OperationId,
    after: i64,
    limit: usize,
) -> Result<Vec<LogEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, attempt, at, stream, line FROM operation_logs
         WHERE operation_id = :id AND seq > :after ORDER BY seq LIMIT :limit",
    )?;
    let mut rows =
        stmt.query(named_params! {":id": id.to_string(), ":after": after, ":limit": limit as i64})?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(LogEntry {
            seq: row.get(0)?,
            attempt: row.get(1)?,
            at: time_column(Some(row.get(2)?), "at")?.expect("some"),
            stream: row.get(3)?,
            line: row.get(4)?,
        });
    }
    Ok(entries)
}
