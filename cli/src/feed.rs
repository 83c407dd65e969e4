//! Where a wait or a follow learns what happened: the one place to change
//! when the API's event stream (`GET /api/v1/events`, Server-Sent Events)
//! lands. Until then [`Feed::next`] long-polls: `GET
//! /api/v1/operations/{id}?wait=N` (answers as soon as the operation ends,
//! else after N seconds), then `GET …/logs?after=SEQ` for the lines since
//! the last read.
//!
//! Ordering: the operation is read *before* its logs. A worker writes an
//! operation's log lines before it records the end, so when the read shows
//! the operation terminal, the log read after it holds every line; a
//! follow never stops one line short. Lines come in `seq` order and each
//! exactly once (`after` moves to the last `seq` read).

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, Request};
use crate::error::CliError;

/// The most log lines one read asks for (the API's largest page).
const LOG_PAGE: usize = 10_000;

/// What one read saw: the operation now, and its new log lines (oldest
/// first; empty unless the feed follows logs).
#[derive(Debug)]
pub struct Update {
    pub operation: Value,
    pub lines: Vec<Value>,
}

/// One operation's updates.
pub struct Feed<'a> {
    client: &'a Client,
    id: String,
    /// The last log `seq` read; `None` when logs are not wanted.
    after: Option<i64>,
}

impl<'a> Feed<'a> {
    pub fn new(client: &'a Client, id: &str, logs: bool) -> Self {
        Self {
            client,
            id: id.to_owned(),
            after: logs.then_some(0),
        }
    }

    /// The next update, holding up to `hold` (whole seconds) for the
    /// operation to end.
    pub async fn next(&mut self, hold: Duration) -> Result<Update, CliError> {
        let wait = hold.as_secs();
        let operation = self
            .client
            .json(
                &Request::get(&["operations", &self.id])
                    .query("wait", wait)
                    .hold(hold),
            )
            .await?;
        let mut lines = Vec::new();
        // The cursor moves only once the whole read is done: a read dropped
        // half-way (Ctrl-C) is read again, not skipped.
        if let Some(mut after) = self.after {
            loop {
                let page = self
                    .client
                    .json(
                        &Request::get(&["operations", &self.id, "logs"])
                            .query("after", after)
                            .query("limit", LOG_PAGE),
                    )
                    .await?;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                after = page["next_after"]
                    .as_i64()
                    .or_else(|| items.last().and_then(|l| l["seq"].as_i64()))
                    .unwrap_or(after);
                let full = items.len() >= LOG_PAGE;
                lines.extend(items);
                if !full {
                    break;
                }
            }
            self.after = Some(after);
        }
        Ok(Update { operation, lines })
    }
}
