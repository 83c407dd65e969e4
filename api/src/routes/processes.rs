//! The process migration system's process writes under `/api/v1/`:
//! `POST processes` starts one on a server, `PATCH processes/{id}`
//! `{status: paused | running}` stops or starts it (the seed's
//! PauseProcess and ResumeProcess), `DELETE processes/{id}` stops and
//! removes it. Each is the family's own operation on the server's target
//! (`pm2.start`, `pm2.stop`, `pm2.delete`), answered `202` with the
//! operation as `POST /api/v1/operations` would. Only pm2 apps yet.

use actix_web::{HttpRequest, HttpResponse, delete, patch, post, web};
use opsqueue_shared::Action;
use opsqueue_shared::families::migration::{ProcessId, ProcessKind};
use opsqueue_shared::names::Label;
use opsqueue_shared::store::managed_list;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::migration::ProcessIdText;
use crate::auth::Caller;
use crate::enqueue::enqueue_action;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn parse_id(text: &str) -> Result<ProcessId, ApiError> {
    let id = ProcessId::parse(text).map_err(|e| ApiError::invalid_field("id", e.to_string()))?;
    if id.kind() != ProcessKind::Pm2 {
        return Err(ApiError::invalid_field(
            "id",
            "only pm2 apps can be changed here yet",
        ));
    }
    Ok(id)
}

/// The process, which opsqueue must manage on its server (`404` otherwise).
async fn managed(state: &AppState, id: &ProcessId) -> Result<(), ApiError> {
    let (family, kind) = id.kind().managed();
    let (server, name) = (id.server().to_owned(), id.name().to_owned());
    let found = state
        .store
        .call(move |s| s.read(|c| managed_list(c, &server, family, kind, Some(&name))))
        .await?;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!(
            "opsqueue manages no process {id}"
        )));
    }
    Ok(())
}

async fn enqueue(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    kind: &str,
    payload: Value,
    server: &str,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse(kind, payload)?;
    let target =
        Label::parse(server).map_err(|e| ApiError::invalid_field("server_id", e.to_string()))?;
    enqueue_action(state, caller, req, action, target).await
}

/// `POST /api/v1/processes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProcess {
    /// `pm2` only, yet.
    #[schema(pattern = "^pm2$")]
    pub kind: String,
    /// The app's name, as its family names it.
    #[schema(schema_with = opsqueue_shared::families::pm2::ProcessName::schema)]
    pub name: String,
    #[schema(schema_with = Label::schema)]
    pub server_id: String,
    /// The family's start spec without its name (a pm2 app's `script`,
    /// `interpreter`, `cwd`, `state_dir`, `args`, `env`, …).
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// Start a process on a server.
#[utoipa::path(
    tag = "migration",
    request_body = NewProcess,
    responses(
        (status = 202, description = "The `pm2.start` operation on the server's target", body = Object),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A kind not handled yet, a hostile name or server, a spec its family refuses", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/processes")]
pub async fn create_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<NewProcess>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let kind = ProcessKind::parse(&body.kind)
        .map_err(|e| ApiError::invalid_field("kind", e.to_string()))?;
    ProcessId::new(kind, &body.name, &body.server_id)
        .map_err(|e| ApiError::invalid_field("name", e.to_string()))?;
    if kind != ProcessKind::Pm2 {
        return Err(ApiError::invalid_field(
            "kind",
            "only pm2 apps can be started here yet",
        ));
    }
    let Value::Object(mut payload) = body.spec else {
        return Err(ApiError::invalid_field("spec", "must be an object"));
    };
    if payload.get("name").is_some_and(|n| n != &json!(body.name)) {
        return Err(ApiError::invalid_field("spec.name", "differs from name"));
    }
    payload.insert("name".into(), json!(body.name));
    enqueue(
        &state,
        &caller,
        &req,
        "pm2.start",
        Value::Object(payload),
        &body.server_id,
    )
    .await
}

/// `PATCH /api/v1/processes/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessChange {
    pub status: ProcessStatus,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    Paused,
    Running,
}

/// Pause (stop) or resume (start) a process.
#[utoipa::path(
    tag = "migration",
    params(("id" = inline(ProcessIdText), Path, description = "`<kind>:<name>@<server>`")),
    request_body = ProcessChange,
    responses(
        (status = 202, description = "The `pm2.stop` (paused) or `pm2.start` (running) operation", body = Object),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "opsqueue manages no such process", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a process id, a kind not handled yet, or another status", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[patch("/api/v1/processes/{id}")]
pub async fn change_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<ProcessChange>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    managed(&state, &id).await?;
    let kind = match body.status {
        ProcessStatus::Paused => "pm2.stop",
        ProcessStatus::Running => "pm2.start",
    };
    enqueue(
        &state,
        &caller,
        &req,
        kind,
        json!({"name": id.name()}),
        id.server(),
    )
    .await
}

/// Stop and remove a process.
#[utoipa::path(
    tag = "migration",
    params(("id" = inline(ProcessIdText), Path, description = "`<kind>:<name>@<server>`")),
    responses(
        (status = 202, description = "The `pm2.delete` operation", body = Object),
        (status = 404, description = "opsqueue manages no such process", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a process id, or a kind not handled yet", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/processes/{id}")]
pub async fn delete_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    managed(&state, &id).await?;
    enqueue(
        &state,
        &caller,
        &req,
        "pm2.delete",
        json!({"name": id.name()}),
        id.server(),
    )
    .await
}
