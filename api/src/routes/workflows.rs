//! `/api/v1/workflows`: operations composed into a graph (see
//! `opsqueue_shared::workflow` and the store's `workflows.rs`).
//!
//! `POST` parses the whole graph before anything is stored (every step's
//! payload through its action's parser, names, dependencies, no cycle, the
//! configuration) and inserts the parent with every step, dependency and
//! compensation in one transaction, committed before the 202. Reads answer
//! the parent with its steps and compensations; `?wait=` holds the request
//! until the whole workflow ended. Cancel and retry act on the whole graph.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::store::{
    Cancel, Counters, Inserted, ListFilter, Retry, WorkflowSummary, WorkflowView, counters_apply,
    family_label, names, operation_list, workflow_cancel, workflow_get, workflow_insert,
    workflow_retry, workflow_summaries,
};
use opsqueue_shared::wake::Role;
use opsqueue_shared::workflow::{WORKFLOW_KIND, WorkflowBody, WorkflowRequest};
use opsqueue_shared::{OperationId, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::operations::{GetQuery, cancel_with, retry_with};
use crate::auth::Caller;
use crate::enqueue::{
    IDEMPOTENT_REPLAYED_HEADER, idempotency_key, idempotency_key_header, resolve_source,
};
use crate::long_poll::wait_until_terminal;
use crate::params::operation_id;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Where a workflow is read.
pub fn workflow_location(id: OperationId) -> String {
    format!("/api/v1/workflows/{id}")
}

async fn read_view(state: &AppState, id: OperationId) -> Result<Option<WorkflowView>, ApiError> {
    Ok(state
        .store
        .call(move |s| s.read(|c| workflow_get(c, id)))
        .await?)
}

fn not_found(id: OperationId) -> ApiError {
    ApiError::NotFound(format!("no workflow {id}"))
}

/// Submit a workflow.
///
/// Body: `{name?, steps: [{name, type, payload, target?, depends_on?,
/// compensate?: {type, payload}, timeout_secs?, max_attempts?}],
/// on_failure?: compensate|stop, target?, source?, priority?,
/// idempotency_key?}`. A step becomes claimable once every step it depends
/// on completed. When a step fails for good, what can no longer run is
/// cancelled (`dependency_failed`), running steps finish, then the
/// compensations of the completed steps run in reverse order of completion
/// (unless `on_failure: stop`). Refusals name the field at fault
/// (`steps[2].payload.seconds`); a cycle is named (`a → b → a`).
#[utoipa::path(
    tag = "workflows",
    request_body(content = Object, description = "The workflow: its steps and how to react to a failure"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Alternative to the idempotency_key field")),
    responses(
        (status = 202, description = "Accepted (or replayed): the workflow with its steps", body = WorkflowView, headers(
            ("Location" = String, description = "/api/v1/workflows/{id}"),
            ("Idempotent-Replayed" = String, description = "`true` on an idempotent replay"),
        )),
        (status = 400, description = "Malformed JSON or conflicting idempotency keys", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Source not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_request (names, dependencies, a cycle, too many steps), invalid_payload (a step's payload) or idempotency_key_reused; `errors` name the fields", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/workflows")]
pub async fn submit_workflow(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let header_key = idempotency_key_header(req.headers())?;
    let mut body =
        WorkflowBody::from_json(body.into_inner()).map_err(|r| ApiError::refused(vec![r]))?;
    body.idempotency_key = idempotency_key(header_key, body.idempotency_key.take())?;
    let requested = body
        .source
        .as_deref()
        .map(|s| {
            opsqueue_shared::names::Label::parse(s)
                .map_err(|e| ApiError::invalid_field("source", e.to_string()))
        })
        .transpose()?;
    let source = resolve_source(requested, caller.key())?;
    let request = body.parse(source).map_err(ApiError::refused)?;
    store_workflow(&state, request).await
}

/// Checks a parsed workflow against the configuration and stores it with
/// every step in one transaction, committed before the `202` (also the
/// end of the typed routes that build workflows).
pub async fn store_workflow(
    state: &AppState,
    request: WorkflowRequest,
) -> Result<HttpResponse, ApiError> {
    let refused = request.check_config(&state.config);
    if !refused.is_empty() {
        return Err(ApiError::refused(refused));
    }
    let new = request.prepare(opsqueue_shared::time::now());
    let families: Vec<&'static str> = request
        .steps
        .iter()
        .map(|step| step.request.action.family())
        .collect();
    let (inserted, view) = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let inserted = workflow_insert(tx, &new)?;
                if let Inserted::Created(_) = &inserted {
                    let mut counters = Counters::default();
                    counters.add(names::ENQUEUED, &family_label("workflow"), 1.0);
                    for family in &families {
                        counters.add(names::ENQUEUED, &family_label(family), 1.0);
                    }
                    counters_apply(tx, &counters)?;
                }
                let view = workflow_get(tx, inserted.operation().id)?;
                Ok((inserted, view))
            })
        })
        .await?;
    let replayed = match inserted {
        Inserted::Created(_) => {
            state.waker.wake(Role::Worker);
            false
        }
        Inserted::Replayed(_) => true,
        Inserted::KeyReused(op) => {
            return Err(ApiError::IdempotencyKeyReused(format!(
                "idempotency key {:?} was already used by operation {} for a different request",
                op.idempotency_key.as_deref().unwrap_or_default(),
                op.id
            )));
        }
    };
    let view = view.ok_or_else(|| ApiError::internal("a workflow was stored without its row"))?;
    let mut response = HttpResponse::Accepted();
    response
        .insert_header((header::LOCATION, workflow_location(view.operation.id)))
        .insert_header((header::RETRY_AFTER, "1"));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED_HEADER, "true"));
    }
    Ok(response.json(view))
}

/// Read a workflow: its parent operation, phase, steps and compensations.
#[utoipa::path(
    tag = "workflows",
    params(("id" = uuid::Uuid, Path, description = "The workflow's id (its parent operation's)"), GetQuery),
    responses(
        (status = 200, description = "The workflow", body = WorkflowView),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/workflows/{id}")]
pub async fn get_workflow(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let wait = query.wait(&state);
    if !wait.is_zero() {
        wait_until_terminal(&state.store, &state.notifier, id, wait, &state.stopping).await?;
    }
    let view = read_view(&state, id).await?.ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkflowListQuery {
    pub status: Option<Status>,
    pub source: Option<String>,
    pub target: Option<String>,
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
}

/// One page of workflows, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowPage {
    pub items: Vec<WorkflowSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// List workflows (their parents, with step counts by status).
#[utoipa::path(
    tag = "workflows",
    params(WorkflowListQuery),
    responses(
        (status = 200, description = "A page, newest first", body = WorkflowPage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/workflows")]
pub async fn list_workflows(
    state: web::Data<AppState>,
    query: web::Query<WorkflowListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = super::operations::page_limit(query.limit)?;
    let filter = ListFilter {
        status: query.status,
        kind: Some(WORKFLOW_KIND.into()),
        source: query.source,
        target: query.target,
        since: query.since,
        until: query.until,
        before: super::operations::cursor(query.cursor.as_deref())?,
        limit: limit + 1,
        ..Default::default()
    };
    let items = state
        .store
        .call(move |s| s.read(|c| workflow_summaries(c, operation_list(c, &filter)?)))
        .await?;
    let (items, next_cursor) = super::operations::one_page(items, limit, |w| w.operation.id);
    Ok(HttpResponse::Ok().json(WorkflowPage { items, next_cursor }))
}

/// `POST …/cancel`'s optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Undo the completed steps (default true).
    pub compensate: Option<bool>,
}

/// Cancel a workflow.
///
/// Pending steps are cancelled, running ones are stopped as a single
/// operation's cancel does, then the completed steps are compensated
/// (unless `compensate: false`); the workflow ends `cancelled`.
#[utoipa::path(
    tag = "workflows",
    params(("id" = uuid::Uuid, Path, description = "The workflow's id")),
    request_body(content = CancelBody, description = "Optional: {compensate}"),
    responses(
        (status = 202, description = "Cancelled, or cancellation under way", body = WorkflowView),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended (not_cancellable)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/workflows/{id}/cancel")]
pub async fn cancel_workflow(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Option<web::Json<CancelBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let compensate = body.and_then(|b| b.compensate).unwrap_or(true);
    let outcome = cancel_with(&state, &caller, id, move |tx, id, now| {
        workflow_cancel(tx, id, compensate, now)
    })
    .await?;
    let view = read_view(&state, id).await?;
    match (outcome, view) {
        (Cancel::Cancelled(_) | Cancel::Requested(_), Some(view)) => {
            Ok(HttpResponse::Accepted().json(view))
        }
        (Cancel::Terminal(op), _) => Err(ApiError::NotCancellable(format!(
            "workflow {id} already ended {}",
            op.status
        ))),
        _ => Err(not_found(id)),
    }
}

/// Retry a failed or cancelled workflow.
///
/// Completed steps stay completed (unless their compensation undid them);
/// the failed, cancelled and undone ones run again.
#[utoipa::path(
    tag = "workflows",
    params(("id" = uuid::Uuid, Path, description = "The workflow's id")),
    responses(
        (status = 202, description = "Running again", body = WorkflowView),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not failed or cancelled (not_retryable)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/workflows/{id}/retry")]
pub async fn retry_workflow(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let outcome = retry_with(&state, &caller, id, workflow_retry).await?;
    let view = read_view(&state, id).await?;
    match (outcome, view) {
        (Retry::Requeued(_), Some(view)) => Ok(HttpResponse::Accepted().json(view)),
        (Retry::NotRetryable(op), Some(_)) => Err(ApiError::NotRetryable(format!(
            "workflow {id} is {}; only failed or cancelled workflows can be retried",
            op.status
        ))),
        _ => Err(not_found(id)),
    }
}
