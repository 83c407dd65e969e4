//! Where a wait or a follow learns what happened. [`Feed::next`] reads the
//! operation (`GET /api/v1/operations/{id}`), then `GET …/logs?after=SEQ`
//! for the lines since the last read; between reads it waits on the API's
//! event stream for this operation (`GET /api/v1/events?operation={id}`,
//! Server-Sent Events): any event (claimed, progress, new lines, the end)
//! triggers the next read at once. The stream is opened *before* the first
//! read, so a change between the read and the wait is an event on it and
//! never missed. An API without the stream (or a stream that cannot be
//! opened) falls back to the long-poll `GET …/{id}?wait=N`.
//!
//! Ordering: the operation is read *before* its logs. A worker writes an
//! operation's log lines before it records the end, so when the read shows
//! the operation terminal, the log read after it holds every line; a
//! follow never stops one line short. Lines come in `seq` order and each
//! exactly once (`after` moves to the last `seq` read).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use russe::reqwest_0_12::ReqwestExt;
use serde_json::Value;

use crate::client::{Client, Request};
use crate::error::CliError;

type Events = BoxStream<'static, Result<russe::Event, russe::Error>>;

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
    /// This operation's events; `None` until opened or once it failed.
    events: Option<Events>,
    /// Whether the API refused the stream (too old): long-poll from then on.
    no_stream: bool,
}

impl<'a> Feed<'a> {
    pub fn new(client: &'a Client, id: &str, logs: bool) -> Self {
        Self {
            client,
            id: id.to_owned(),
            after: logs.then_some(0),
            events: None,
            no_stream: false,
        }
    }

    async fn open_events(&mut self) {
        let request = Request::get(&["events"]).query("operation", &self.id);
        match self.client.open_stream(&request).await {
            Ok(response) => self.events = Some(response.sse_stream()),
            Err(CliError::Refused { .. }) => self.no_stream = true,
            // Unreachable or 5xx: the reads below say so; try again next time.
            Err(_) => {}
        }
    }

    /// Waits up to `hold` for an event of this operation; false if the
    /// stream is not there (the read must long-poll instead).
    async fn wait_for_event(&mut self, hold: Duration) -> bool {
        let Some(events) = &mut self.events else {
            return false;
        };
        match tokio::time::timeout(hold, events.next()).await {
            Err(_) => true,
            Ok(Some(Ok(_))) => {
                // A burst of events is one change to read.
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout(Duration::from_millis(20), events.next()).await
                {
                }
                true
            }
            Ok(None | Some(Err(_))) => {
                self.events = None;
                false
            }
        }
    }

    /// The next update, holding up to `hold` (whole seconds) for something
    /// to happen to the operation.
    pub async fn next(&mut self, hold: Duration) -> Result<Update, CliError> {
        let first = self.events.is_none();
        if first && !self.no_stream {
            self.open_events().await;
        }
        let waited = !first && !hold.is_zero() && self.wait_for_event(hold).await;
        let wait = if waited || self.events.is_some() {
            0
        } else {
            hold.as_secs()
        };
        let operation = self
            .client
            .json(
                &Request::get(&["operations", &self.id])
                    .query("wait", wait)
                    .hold(Duration::from_secs(wait)),
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
