//! `GET /api/v1/events`: what happens to operations, workflows and
//! schedules, as Server-Sent Events (see `events.rs` for how it is fed and
//! why nothing is lost). The frames:
//!
//! ```text
//! id: 1042
//! event: operation.finished
//! data: {"id":1042,"type":"operation.finished","at":"…","operation_id":"…","target":"local","parent_id":null,"data":{"status":"completed",…}}
//! ```
//!
//! A reconnecting client sends `Last-Event-ID` (browsers do) or
//! `?last_event_id=`, and gets every event after it; one pruned meanwhile
//! is announced by a `gap` event first.

use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::events::{self, Filter, Start};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Event types, comma-separated: `operation.created`,
    /// `operation.updated`, `operation.finished`, `workflow.created`,
    /// `workflow.updated`, `workflow.finished`, `schedule.fired`,
    /// `target.status_changed`, `migration.created`, `migration.updated`,
    /// `migration.finished`, or a family such as `operation.*`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events about operations on this target.
    pub target: Option<String>,
    /// Only events of this operation, or of the steps whose parent it is.
    pub operation: Option<String>,
    /// Start after this event id (the `Last-Event-ID` header wins).
    pub last_event_id: Option<i64>,
}

/// One frame of the stream as it travels. `data` is the event as JSON
/// text: `{id, type, at, operation_id, target, parent_id, data}`, where
/// `id` rises by one with each event, `parent_id` is the workflow an
/// operation is a step of, and the inner `data` holds a few fields of the
/// change (`type`, `source`, `resource` when created; `status`,
/// `previous`, `attempt`, `error` (its code), `progress`, `log_seq`,
/// `cancel_requested`), never a payload, a result or a secret. A `gap`
/// frame's data is `{after, resumed_after, missed, reason}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamFrame {
    /// The event's id (resume with `Last-Event-ID`).
    pub id: String,
    /// The event's type, or `gap`.
    pub event: String,
    pub data: String,
}

/// The `Last-Event-ID` header, else `?last_event_id=`.
pub fn start(req: &HttpRequest, query: Option<i64>) -> Result<Start, ApiError> {
    let header = req
        .headers()
        .get(LAST_EVENT_ID_HEADER)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::invalid_field("Last-Event-ID", "must be an event id (a whole number)")
                })
        })
        .transpose()?;
    Ok(match header.or(query) {
        Some(after) => Start::After(after.max(0)),
        None => Start::Now,
    })
}

/// Follow events.
///
/// Server-Sent Events of every change to operations (`operation.created`,
/// `operation.updated`: claimed, requeued, progress, new log lines, a
/// cancel request; `operation.finished`), workflows (`workflow.*`) and
/// schedules (`schedule.fired`), in commit order, each with an id.
/// Resumes after `Last-Event-ID` without loss within
/// `api.events_retention_secs`; beyond it a `gap` event says what was
/// missed. A `: keep-alive` comment comes every 15 s.
#[utoipa::path(
    tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this event id")),
    responses(
        (status = 200, description = "The stream (`text/event-stream`); each frame's data is one event", body = StreamFrame, content_type = "text/event-stream"),
        (status = 400, description = "Unknown type, bad target or operation id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Last-Event-ID is not an id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/events")]
pub async fn follow_events(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = Filter::parse(
        query.kind.as_deref(),
        query.target.as_deref(),
        query.operation.as_deref(),
    )?;
    let start = start(&req, query.last_event_id)?;
    let joined = state.events.join(&state.store).await?;
    let store = state.store.clone();
    let credential = caller.credential(&state.store);
    Ok(crate::sse::respond(&state.stopping, move |sink| {
        events::stream(joined, store, filter, start, credential, sink)
    }))
}
