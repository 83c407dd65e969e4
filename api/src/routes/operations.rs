//! `/api/v1/operations`: enqueue, read (with long-poll), list with filters
//! and cursor pagination, logs (or, with `?follow=true`, the log as
//! Server-Sent Events until the operation ends), cancel and retry.
//!
//! Pagination is by id: ids are UUIDv7, so newest first is id descending,
//! and `cursor` is the last id of the previous page (`next_cursor`, `null`
//! on the last page). Rows inserted meanwhile never shift a page.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::store::TargetStatus;
use opsqueue_shared::store::rusqlite::Connection;
use opsqueue_shared::store::{
    Cancel, Counters, ListFilter, LogEntry, Retry, counters_apply, family_label, names,
    operation_cancel, operation_get, operation_list, operation_log_list, operation_log_note,
    operation_retry, target_online,
};
use opsqueue_shared::time::Timestamp;
use opsqueue_shared::wake::Role;
use opsqueue_shared::{Operation, OperationId, Status, StoreError};

type StoreResult<T> = Result<T, StoreError>;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::enqueue::{EnqueueBody, accepted, idempotency_key_header};
use crate::long_poll::wait_until_terminal;
use crate::params::operation_id;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
pub const DEFAULT_LOG_PAGE: usize = 1_000;
pub const MAX_LOG_PAGE: usize = 10_000;

/// Accept an operation.
///
/// Validates the request into a typed action and stores one pending row,
/// committed before the answer. A replay with the same idempotency key and
/// the same request answers 202 again with the first operation and
/// `Idempotent-Replayed: true`.
#[utoipa::path(
    tag = "operations",
    request_body = EnqueueBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Alternative to the idempotency_key field: an RFC 8941 string or a bare token")),
    responses(
        (status = 202, description = "Accepted (or replayed)", body = Operation, headers(
            ("Location" = String, description = "/api/v1/operations/{id}"),
            ("Retry-After" = u32, description = "Seconds before a first poll is useful"),
            ("Idempotent-Replayed" = String, description = "`true` on an idempotent replay"),
        )),
        (status = 400, description = "Malformed JSON or conflicting idempotency keys", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Scope or source not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_request, unknown_operation_type, invalid_payload or idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/operations")]
pub async fn enqueue(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<EnqueueBody>,
) -> Result<HttpResponse, ApiError> {
    let header_key = idempotency_key_header(req.headers())?;
    let request = body.into_inner().parse(header_key, caller.key())?;
    request.action.check_config(&state.config)?;
    accepted(state.enqueuer.enqueue(&request).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Hold the request up to this many seconds (capped by the server's
    /// `max_wait_secs`) until the operation is terminal (a workflow: until
    /// the whole workflow ended).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub wait: Option<u32>,
}

impl GetQuery {
    /// The wait asked for, capped by `api.max_wait_secs`.
    pub(crate) fn wait(&self, state: &AppState) -> Duration {
        Duration::from_secs(u64::from(self.wait.unwrap_or(0)).min(state.config.api.max_wait_secs))
    }
}

/// Read an operation, optionally waiting for it to end.
#[utoipa::path(
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Operation id"), GetQuery),
    responses(
        (status = 200, description = "The operation (terminal, or as it was when the wait ended), with `target_status`", body = OperationView),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/operations/{id}")]
pub async fn get_operation(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let operation = wait_until_terminal(
        &state.store,
        &state.notifier,
        id,
        query.wait(&state),
        &state.stopping,
    )
    .await?
    .ok_or_else(|| not_found(id))?;
    let target = operation.target.clone();
    let online = state
        .store
        .call(move |s| s.read(|c| target_online(c, &target, opsqueue_shared::time::now())))
        .await?;
    Ok(HttpResponse::Ok().json(OperationView {
        operation,
        target_status: if online {
            TargetStatus::Online
        } else {
            TargetStatus::Offline
        },
    }))
}

/// An operation, and whether anything can run it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    #[serde(flatten)]
    pub operation: Operation,
    /// `online` while a worker serving its target heartbeats within its
    /// lease; else `offline` (a pending operation then waits for one).
    pub target_status: TargetStatus,
}

fn not_found(id: OperationId) -> ApiError {
    ApiError::NotFound(format!("no operation {id}"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub status: Option<Status>,
    /// `family.verb`
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub resource: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Page size: default 50; more than 500 gives 500.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<String>,
    /// Only the steps (and compensations) of this workflow.
    pub parent: Option<String>,
}

/// A list's page size: default 50, at most 500, at least 1.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        Some(0) => Err(ApiError::InvalidQuery("limit must be at least 1".into())),
        Some(limit) => Ok((limit as usize).min(MAX_PAGE)),
        None => Ok(DEFAULT_PAGE),
    }
}

/// A list's `cursor`: the last id of the previous page.
pub(crate) fn cursor(cursor: Option<&str>) -> Result<Option<OperationId>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<OperationId>()
                .map_err(|e| ApiError::InvalidQuery(format!("cursor: {e}")))
        })
        .transpose()
}

/// Cuts `items` (read with `limit + 1`) to one page; the cursor of the next
/// page (the last id kept) when there is one.
pub(crate) fn one_page<T>(
    mut items: Vec<T>,
    limit: usize,
    id: impl Fn(&T) -> OperationId,
) -> (Vec<T>, Option<String>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next_cursor = items.last().map(|item| id(item).to_string());
    (items, next_cursor)
}

/// One page of operations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationPage {
    pub items: Vec<Operation>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// List operations.
#[utoipa::path(
    tag = "operations",
    params(ListQuery),
    responses(
        (status = 200, description = "A page, newest first", body = OperationPage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/operations")]
pub async fn list_operations(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_limit(query.limit)?;
    let parent_id = query
        .parent
        .as_deref()
        .map(|p| {
            p.parse::<OperationId>()
                .map_err(|e| ApiError::InvalidQuery(format!("parent: {e}")))
        })
        .transpose()?;
    let filter = ListFilter {
        status: query.status,
        kind: query.kind,
        source: query.source,
        target: query.target,
        resource: query.resource,
        parent_id,
        since: query.since,
        until: query.until,
        before: cursor(query.cursor.as_deref())?,
        limit: limit + 1,
    };
    let items = state
        .store
        .call(move |s| s.read(|c| operation_list(c, &filter)))
        .await?;
    let (items, next_cursor) = one_page(items, limit, |op| op.id);
    Ok(HttpResponse::Ok().json(OperationPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only lines with a larger `seq` (the previous page's `next_after`).
    pub after: Option<i64>,
    /// Default 1000; more than 10000 gives 10000.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
    /// Stream the log as Server-Sent Events until the operation ends: a
    /// `line` event per line (its id is the `seq`; `Last-Event-ID` resumes
    /// after it), then one `end` event with `{status, error}`.
    pub follow: Option<bool>,
}

/// Log lines of an operation, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    /// Pass as `after` to follow the log.
    pub next_after: i64,
}

/// Read or follow an operation's log.
#[utoipa::path(
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Operation id"), LogsQuery,
           ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "With follow: resume after this seq")),
    responses(
        (status = 200, description = "Lines after `after` (JSON), or with `follow=true` the log as `text/event-stream`", content(
            (LogPage = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Last-Event-ID is not a seq", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/operations/{id}/logs")]
pub async fn operation_logs(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let after = query.after.unwrap_or(0);
    if query.follow == Some(true) {
        let after = match crate::routes::events::start(&req, Some(after))? {
            crate::events::Start::After(seq) => seq,
            crate::events::Start::Now => after,
        };
        if state
            .store
            .call(move |s| s.read(|c| operation_get(c, id)))
            .await?
            .is_none()
        {
            return Err(not_found(id));
        }
        let (hub, store) = (state.events.clone(), state.store.clone());
        let credential = caller.credential(&state.store);
        return Ok(crate::sse::respond(&state.stopping, move |sink| {
            crate::log_follow::follow(hub, store, id, after, credential, sink)
        }));
    }
    let limit = match query.limit {
        Some(0) => return Err(ApiError::InvalidQuery("limit must be at least 1".into())),
        Some(limit) => (limit as usize).min(MAX_LOG_PAGE),
        None => DEFAULT_LOG_PAGE,
    };
    let items = state
        .store
        .call(move |s| {
            s.read(|c| match operation_get(c, id)? {
                Some(_) => operation_log_list(c, id, after, limit).map(Some),
                None => Ok(None),
            })
        })
        .await?
        .ok_or_else(|| not_found(id))?;
    let next_after = items.last().map(|line| line.seq).unwrap_or(after);
    Ok(HttpResponse::Ok().json(LogPage { items, next_after }))
}

fn accepted_operation(operation: &Operation) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::RETRY_AFTER, "1"))
        .json(operation)
}

/// Cancel an operation.
///
/// A pending operation is cancelled at once; a running one is asked to stop
/// (its worker kills what it started) and ends `cancelled` shortly after.
#[utoipa::path(
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Operation id")),
    responses(
        (status = 202, description = "Cancelled, or cancellation requested", body = Operation),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended (not_cancellable)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/operations/{id}/cancel")]
pub async fn cancel_operation(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    Ok(accepted_operation(&cancel(&state, &caller, id).await?))
}

/// Cancels `id` (at once if pending, by asking its worker if running; a
/// workflow with its steps); the operation as it is now. The dashboard's
/// cancel button does the same.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
) -> Result<Operation, ApiError> {
    match cancel_with(state, caller, id, operation_cancel).await? {
        Cancel::Cancelled(op) | Cancel::Requested(op) => Ok(op),
        Cancel::Terminal(op) => Err(ApiError::NotCancellable(format!(
            "operation {id} already ended {}",
            op.status
        ))),
        Cancel::NotFound => Err(not_found(id)),
    }
}

/// Retry a failed or cancelled operation.
///
/// It goes back to pending, due now, with at least one attempt left.
#[utoipa::path(
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Operation id")),
    responses(
        (status = 202, description = "Pending again", body = Operation),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not failed or cancelled (not_retryable)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/operations/{id}/retry")]
pub async fn retry_operation(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    Ok(accepted_operation(&retry(&state, &caller, id).await?))
}

/// Puts a failed or cancelled `id` back to pending; the operation as it is
/// now. The dashboard's retry button does the same.
pub async fn retry(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
) -> Result<Operation, ApiError> {
    match retry_with(state, caller, id, operation_retry).await? {
        Retry::Requeued(op) => Ok(op),
        Retry::NotRetryable(op) => Err(ApiError::NotRetryable(match op.parent_id {
            Some(workflow) => format!(
                "operation {id} is a step of workflow {workflow}: retry the workflow \
                 (POST /api/v1/workflows/{workflow}/retry)"
            ),
            None => format!(
                "operation {id} is {}; only failed or cancelled operations can be retried",
                op.status
            ),
        })),
        Retry::NotFound => Err(not_found(id)),
    }
}

/// Cancels `id` with `cancel` in one write transaction, with a note in its
/// log (a running one's) or the counter (an ended one's), then wakes the
/// workers (a resource may be free, a worker must stop something) and the
/// API processes (long-polls may wait on it).
pub(crate) async fn cancel_with(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
    cancel: impl Fn(&Connection, OperationId, Timestamp) -> StoreResult<Cancel> + Send + 'static,
) -> Result<Cancel, ApiError> {
    let note = format!(
        "cancel requested through the API with key {:?}",
        caller.key().name
    );
    let cap = state.config.database.log_cap_bytes;
    let outcome = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = opsqueue_shared::time::now();
                let outcome = cancel(tx, id, now)?;
                match &outcome {
                    Cancel::Cancelled(op) => {
                        let mut counters = Counters::default();
                        counters.add(names::CANCELLED, &family_label(op.family()), 1.0);
                        counters_apply(tx, &counters)?;
                    }
                    Cancel::Requested(_) => operation_log_note(tx, id, &note, now, cap)?,
                    Cancel::Terminal(_) | Cancel::NotFound => {}
                }
                Ok(outcome)
            })
        })
        .await?;
    if let Cancel::Cancelled(_) | Cancel::Requested(_) = outcome {
        state.waker.wake(Role::Worker);
        state.waker.wake(Role::Api);
    }
    Ok(outcome)
}

/// Retries `id` with `retry` in one write transaction, with a note in its
/// log, then wakes the workers (it is claimable) and the API processes
/// (event streams).
pub(crate) async fn retry_with(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
    retry: impl Fn(&Connection, OperationId, Timestamp) -> StoreResult<Retry> + Send + 'static,
) -> Result<Retry, ApiError> {
    let note = format!("retried through the API with key {:?}", caller.key().name);
    let cap = state.config.database.log_cap_bytes;
    let outcome = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = opsqueue_shared::time::now();
                let outcome = retry(tx, id, now)?;
                if let Retry::Requeued(_) = outcome {
                    operation_log_note(tx, id, &note, now, cap)?;
                }
                Ok(outcome)
            })
        })
        .await?;
    if let Retry::Requeued(_) = outcome {
        state.waker.wake(Role::Worker);
        state.waker.wake(Role::Api);
    }
    Ok(outcome)
}
