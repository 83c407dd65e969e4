//! The event stream's fan-out: one [`Hub`] per API process reads new rows of
//! the `events` table (written by triggers in the transaction of each
//! change, see `store/events.rs`) once, after each wake-up, and broadcasts
//! them in batches; every subscriber filters the batches by its own
//! `?type=`, `?target=` and `?operation=`. The database is read once per
//! wake-up whatever the number of subscribers, and not at all while there
//! are none.
//!
//! Wake-ups: the `long_poll` listener bumps the [`Notifier`] when another
//! process (a worker's claim, progress, log or finish; the monitor) or this
//! one (an enqueue, a cancel) committed something; a slow poll
//! ([`POLL`]) covers lost datagrams and the writers that do not wake the
//! API (the monitor's scheduler). Reads are spaced by at least
//! [`COALESCE`], so a busy queue is read in batches rather than once per
//! commit.
//!
//! No event is lost or sent twice, in order:
//! - a subscriber joins the broadcast *before* it reads its backlog, so an
//!   event committed meanwhile is in one or both, and ids tell duplicates;
//! - the hub's cursor is set under the same lock as the join: while nobody
//!   listens the hub reads nothing, and the first subscriber to join sets
//!   its cursor to the last id written, below which it reads its own
//!   backlog;
//! - a subscriber that falls behind the broadcast's buffer (`Lagged`) reads
//!   what it missed from the table, which keeps
//!   `api.events_retention_secs` of history;
//! - a `Last-Event-ID` older than the oldest kept row gets a `gap` event
//!   first (what was missed is said, never silently dropped).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{
    EVENT_TYPES, Event, event_latest_id, event_list_after, event_oldest_id,
};
use opsqueue_shared::{OperationId, Store, StoreError};
use serde_json::json;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::long_poll::Notifier;
use crate::problem::ApiError;
use crate::sse::{self, Sink};

/// The safety-net read when no wake-up came.
pub const POLL: Duration = Duration::from_secs(1);
/// The least time between two reads of the table.
pub const COALESCE: Duration = Duration::from_millis(5);
/// Rows per read (the hub's, and a subscriber's backlog page).
const PAGE: usize = 1_000;
/// Batches the broadcast keeps for a subscriber that is behind.
const BROADCAST_BATCHES: usize = 1_024;

/// One event as subscribers get it: the row (to filter on) and its frame,
/// encoded once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub frame: Bytes,
}

impl Published {
    pub fn new(event: Event) -> Self {
        let frame = sse::message(&event.kind, Some(event.id.to_string()), event.to_json());
        Self { event, frame }
    }
}

pub type Batch = Arc<Vec<Published>>;

/// Reads new events and broadcasts them; see the module header.
pub struct Hub {
    batches: broadcast::Sender<Batch>,
    /// The last id broadcast; `None` while nobody listens.
    cursor: Mutex<Option<i64>>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            batches: broadcast::Sender::new(BROADCAST_BATCHES),
            cursor: Mutex::new(None),
        })
    }

    /// Joins the broadcast: every event after the returned position will
    /// arrive on the receiver.
    pub async fn join(&self, store: &Store) -> Result<Joined, StoreError> {
        let mut cursor = self.cursor.lock().await;
        let receiver = self.batches.subscribe();
        let position = match *cursor {
            Some(position) => position,
            None => {
                let latest = store.call(|s| s.read(event_latest_id)).await?;
                *cursor = Some(latest);
                latest
            }
        };
        Ok(Joined { receiver, position })
    }

    /// Reads and broadcasts until `stop` is cancelled.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        notifier: Arc<Notifier>,
        stop: CancellationToken,
    ) {
        let mut changes = notifier.subscribe();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            if let Err(e) = self.publish(&store).await {
                tracing::warn!(error = %e, "could not read new events; trying again");
            }
            tokio::time::sleep(COALESCE).await;
        }
    }

    /// Broadcasts every event after the cursor, if anybody listens.
    async fn publish(&self, store: &Store) -> Result<(), StoreError> {
        let mut cursor = self.cursor.lock().await;
        if self.batches.receiver_count() == 0 {
            *cursor = None;
            return Ok(());
        }
        let Some(mut after) = *cursor else {
            return Ok(());
        };
        loop {
            let events = store
                .call(move |s| s.read(|c| event_list_after(c, after, PAGE)))
                .await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            after = last.id;
            *cursor = Some(after);
            let full = events.len() == PAGE;
            let batch: Vec<Published> = events.into_iter().map(Published::new).collect();
            let _ = self.batches.send(Arc::new(batch));
            if !full {
                return Ok(());
            }
        }
    }
}

/// Which events a subscriber wants: `?type=` (exact types or `family.*`,
/// comma-separated), `?target=`, `?operation=` (the operation itself or any
/// step whose parent it is).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    types: Option<Vec<TypePattern>>,
    target: Option<String>,
    operation: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum TypePattern {
    Exact(&'static str),
    /// `operation.` of `operation.*`.
    Prefix(String),
}

impl Filter {
    pub fn parse<'a>(
        types: Option<&'a str>,
        target: Option<&'a str>,
        operation: Option<&'a str>,
    ) -> Result<Filter, ApiError> {
        // An empty value (`?type=`) filters nothing, like an absent one.
        let given = |value: Option<&'a str>| value.filter(|v| !v.trim().is_empty());
        let (types, target, operation) = (given(types), given(target), given(operation));
        let types = types
            .map(|list| {
                list.split(',')
                    .map(|item| parse_type(item.trim()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let target = target
            .map(|t| {
                Label::parse(t)
                    .map(|label| label.to_string())
                    .map_err(|e| ApiError::InvalidQuery(format!("target: {e}")))
            })
            .transpose()?;
        let operation = operation
            .map(|id| {
                id.parse::<OperationId>()
                    .map(|id| id.to_string())
                    .map_err(|e| ApiError::InvalidQuery(format!("operation: {e}")))
            })
            .transpose()?;
        Ok(Filter {
            types,
            target,
            operation,
        })
    }

    /// Only the events of one operation (and its steps).
    pub fn operation(id: OperationId) -> Filter {
        Filter {
            operation: Some(id.to_string()),
            ..Filter::default()
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        if let Some(types) = &self.types
            && !types.iter().any(|pattern| match pattern {
                TypePattern::Exact(kind) => event.kind == *kind,
                TypePattern::Prefix(prefix) => event.kind.starts_with(prefix.as_str()),
            })
        {
            return false;
        }
        if let Some(target) = &self.target
            && event.target.as_deref() != Some(target.as_str())
        {
            return false;
        }
        if let Some(operation) = &self.operation
            && event.operation_id.as_deref() != Some(operation.as_str())
            && event.parent_id.as_deref() != Some(operation.as_str())
        {
            return false;
        }
        true
    }
}

fn parse_type(item: &str) -> Result<TypePattern, ApiError> {
    if let Some(kind) = EVENT_TYPES.iter().find(|kind| **kind == item) {
        return Ok(TypePattern::Exact(kind));
    }
    if let Some(family) = item.strip_suffix(".*") {
        let prefix = format!("{family}.");
        if EVENT_TYPES.iter().any(|kind| kind.starts_with(&prefix)) {
            return Ok(TypePattern::Prefix(prefix));
        }
    }
    Err(ApiError::InvalidQuery(format!(
        "type: unknown event type {item:?}; expected one of {} (or family.*)",
        EVENT_TYPES.join(", ")
    )))
}

/// A subscriber's place in the broadcast. A stream joins before its
/// response is sent, so that whatever its client does after seeing the
/// response (an enqueue) is an event it receives.
pub struct Joined {
    pub receiver: broadcast::Receiver<Batch>,
    /// The last event committed when it joined.
    pub position: i64,
}

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event.
    Now,
    /// After this id (`Last-Event-ID`).
    After(i64),
}

/// What a subscriber may keep reading with: checked again every
/// [`sse::KEEP_ALIVE`], so a revoked key or an ended session stops its
/// stream.
pub trait Credential: Send + 'static {
    fn still_valid(&self) -> impl Future<Output = bool> + Send;
}

/// Streams the events `filter` selects, from `start` (`Now`: after the
/// position it `joined` at), into `sink` until the client goes away, the
/// credential lapses or `stop` is cancelled.
pub async fn stream(
    joined: Joined,
    store: Store,
    filter: Filter,
    start: Start,
    credential: impl Credential,
    sink: Sink,
) {
    if let Err(e) = stream_inner(joined, &store, &filter, start, &credential, &sink).await {
        tracing::warn!(error = %e, "an event stream ended on a store error");
    }
}

/// Ended by the client or the store.
enum Ended {
    Store(StoreError),
    Closed,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Store(e) => e.fmt(f),
            Ended::Closed => f.write_str("the client went away"),
        }
    }
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Self {
        Ended::Store(e)
    }
}

impl From<sse::Closed> for Ended {
    fn from(_: sse::Closed) -> Self {
        Ended::Closed
    }
}

async fn stream_inner(
    joined: Joined,
    store: &Store,
    filter: &Filter,
    start: Start,
    credential: &impl Credential,
    sink: &Sink,
) -> Result<(), Ended> {
    let Joined {
        mut receiver,
        position,
    } = joined;
    let mut sent = match start {
        Start::Now => position,
        Start::After(after) => {
            let resumed = resume_point(store, after).await?;
            if let Some((resumed, gap)) = resumed {
                sink.send(gap).await?;
                resumed
            } else {
                after
            }
        }
    };
    sent = backlog(store, filter, sent, sink).await?;
    let mut recheck = tokio::time::interval(sse::KEEP_ALIVE);
    recheck.reset();
    loop {
        tokio::select! {
            batch = receiver.recv() => match batch {
                Ok(batch) => {
                    let mut frames = Vec::new();
                    for published in batch.iter() {
                        if published.event.id <= sent {
                            continue;
                        }
                        sent = published.event.id;
                        if filter.matches(&published.event) {
                            frames.extend_from_slice(&published.frame);
                        }
                    }
                    if !frames.is_empty() {
                        sink.send(Bytes::from(frames)).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    sent = backlog(store, filter, sent, sink).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = recheck.tick() => {
                if !credential.still_valid().await {
                    return Ok(());
                }
            }
        }
    }
}

/// Where a stream resumed after `after` really starts: `None` when every
/// event after it is still kept; else the id it resumes after and the
/// `gap` frame that says what was missed.
async fn resume_point(store: &Store, after: i64) -> Result<Option<(i64, Bytes)>, StoreError> {
    let (oldest, latest) = store
        .call(|s| s.read(|c| Ok((event_oldest_id(c)?, event_latest_id(c)?))))
        .await?;
    let resumed = if after > latest {
        // Not an id of this database (another one, or a restored backup):
        // go on from what is there now.
        Some(latest)
    } else {
        oldest
            .filter(|oldest| after + 1 < *oldest)
            .map(|oldest| oldest - 1)
    };
    Ok(resumed.map(|resumed| {
        let data = json!({
            "after": after,
            "resumed_after": resumed,
            "missed": (resumed - after).max(0),
            "reason": if after > latest {
                "Last-Event-ID is not an event of this server"
            } else {
                "the events after Last-Event-ID were pruned (api.events_retention_secs)"
            },
        });
        (
            resumed,
            sse::message("gap", Some(resumed.to_string()), data.to_string()),
        )
    }))
}

/// Sends every kept event after `after` that `filter` selects, page by
/// page; returns the last id read.
async fn backlog(
    store: &Store,
    filter: &Filter,
    mut after: i64,
    sink: &Sink,
) -> Result<i64, Ended> {
    loop {
        let events = store
            .call(move |s| s.read(|c| event_list_after(c, after, PAGE)))
            .await?;
        let full = events.len() == PAGE;
        let mut frames = Vec::new();
        for event in events {
            after = event.id;
            if filter.matches(&event) {
                frames.extend_from_slice(&Published::new(event).frame);
            }
        }
        if !frames.is_empty() {
            sink.send(Bytes::from(frames)).await?;
        }
        if !full {
            return Ok(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, target: &str, operation: Option<&str>, parent: Option<&str>) -> Event {
        Event {
            id: 1,
            at: "2026-01-01T00:00:00.000000Z".into(),
            kind: kind.into(),
            operation_id: operation.map(Into::into),
            target: Some(target.into()),
            parent_id: parent.map(Into::into),
            data: "{}".into(),
        }
    }

    const OP: &str = "0190a4b2-7c1d-7000-8000-000000000001";
    const OTHER: &str = "0190a4b2-7c1d-7000-8000-000000000002";

    #[test]
    fn a_filter_selects_by_type_family_target_and_operation_or_parent() {
        let all = Filter::default();
        let created = event("operation.created", "local", Some(OP), None);
        let step = event("operation.finished", "web-2", Some(OTHER), Some(OP));
        let fired = event("schedule.fired", "local", None, None);
        assert!(all.matches(&created) && all.matches(&step) && all.matches(&fired));

        let operations = Filter::parse(Some("operation.*"), None, None).unwrap();
        assert!(operations.matches(&created) && operations.matches(&step));
        assert!(!operations.matches(&fired));
        let two = Filter::parse(Some("schedule.fired, operation.finished"), None, None).unwrap();
        assert!(!two.matches(&created) && two.matches(&step) && two.matches(&fired));

        let web = Filter::parse(None, Some("web-2"), None).unwrap();
        assert!(web.matches(&step) && !web.matches(&created));
        let mine = Filter::parse(None, None, Some(OP)).unwrap();
        assert!(
            mine.matches(&created) && mine.matches(&step),
            "a step of it"
        );
        assert!(!mine.matches(&fired));
    }

    #[test]
    fn an_unknown_type_target_or_id_is_refused_naming_what_is_known() {
        let error = Filter::parse(Some("operation.exploded"), None, None).unwrap_err();
        assert!(error.to_string().contains("operation.finished"), "{error}");
        assert!(Filter::parse(Some("nothing.*"), None, None).is_err());
        assert!(Filter::parse(None, Some("bad target!"), None).is_err());
        assert!(Filter::parse(None, None, Some("not-an-id")).is_err());
    }
}
