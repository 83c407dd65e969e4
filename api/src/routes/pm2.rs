//! `/api/v1/pm2`: the PM2 controller's routes. Changes enqueue `pm2.*`
//! operations (202 + the operation, as `POST /api/v1/operations` would);
//! reads answer at once from the last observation, with `observed_at`.
//!
//! Logs: the API cannot read a log file, so `POST …/{name}/logs` enqueues a
//! `pm2.logs` operation (its result holds the lines), and `GET
//! …/{name}/logs` serves the lines that the last such operation observed,
//! with their `observed_at`. The process list is refreshed by `pm2.list`
//! (`POST /api/v1/pm2/refresh`, and the monitor's `refresh-pm2` schedule).

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use opsqueue_shared::actions::pm2::ProcessName;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::enqueue::{TypedQuery, enqueue_typed};
use crate::observed::{self, ObservedList};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

const FAMILY: &str = "pm2";

fn process_name(text: &str) -> Result<ProcessName, ApiError> {
    ProcessName::parse(text).map_err(|e| ApiError::invalid_field("name", e.to_string()))
}

/// Enqueues `kind` for the app named in the path.
async fn on_app(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    kind: &str,
    name: &str,
    query: &TypedQuery,
) -> Result<HttpResponse, ApiError> {
    let name = process_name(name)?;
    enqueue_typed(state, caller, req, query, kind, json!({"name": name})).await
}

/// The apps pm2 ran when last observed.
#[utoipa::path(
    tag = "pm2",
    params(TypedQuery),
    responses(
        (status = 200, description = "Every app as last observed (whitelisted fields, never the environment), each with observed_at", body = ObservedList),
    ),
)]
#[get("/api/v1/pm2/processes")]
pub async fn list_processes(
    state: web::Data<AppState>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = observed::target(query.target.as_deref())?;
    let list = observed::list(&state, &target, FAMILY, "process").await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Start an app from a spec (`pm2.start`).
///
/// Body: `{name, script, interpreter?, cwd?, args?, env?, instances?,
/// wait_ready?, listen_timeout_ms?}`; `script` and `cwd` must lie inside
/// `[pm2] base_dir`. An app of that name that is already online is left
/// alone (`changed: false`). `env` is stored apart and shown as `"***"`.
#[utoipa::path(
    tag = "pm2",
    params(TypedQuery),
    request_body(content = Object, description = "The app's spec"),
    responses(
        (status = 202, description = "Accepted: a pm2.start operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The spec does not parse, or a path is outside the base directory", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes")]
pub async fn create_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.get("script").is_none_or(Value::is_null) {
        return Err(ApiError::invalid_field(
            "script",
            "creating an app needs a script (POST …/{name}/start starts an existing one)",
        ));
    }
    enqueue_typed(&state, &caller, &req, &query, "pm2.start", body).await
}

/// One app as last observed.
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 200, description = "The app's observed fields with observed_at", body = Object),
        (status = 404, description = "Not observed (absent, or never refreshed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/pm2/processes/{name}")]
pub async fn get_process(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = process_name(&name)?;
    let target = observed::target(query.target.as_deref())?;
    let how = "POST /api/v1/pm2/refresh observes every app";
    let app = observed::one(&state, &target, FAMILY, "process", name.as_str(), how).await?;
    Ok(HttpResponse::Ok().json(app))
}

/// Delete an app (`pm2.delete`); an absent app is `changed: false`.
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.delete operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/pm2/processes/{name}")]
pub async fn delete_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.delete", &name, &query).await
}

/// Start an existing app (`pm2.start` without a spec).
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.start operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes/{name}/start")]
pub async fn start_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.start", &name, &query).await
}

/// Stop an app (`pm2.stop`).
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.stop operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes/{name}/stop")]
pub async fn stop_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.stop", &name, &query).await
}

/// Restart an app (`pm2.restart`).
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.restart operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes/{name}/restart")]
pub async fn restart_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.restart", &name, &query).await
}

/// Reload an app (`pm2.reload`: zero-downtime in cluster mode).
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.reload operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes/{name}/reload")]
pub async fn reload_process(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.reload", &name, &query).await
}

/// The log lines the last `pm2.logs` operation observed.
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 200, description = "{name, lines, out, err, observed_at, observed_by}", body = Object),
        (status = 404, description = "No logs observed yet: POST to this path first", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/pm2/processes/{name}/logs")]
pub async fn get_logs(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = process_name(&name)?;
    let target = observed::target(query.target.as_deref())?;
    let how = format!("POST /api/v1/pm2/processes/{name}/logs reads them");
    let logs = observed::one(&state, &target, FAMILY, "logs", name.as_str(), &how).await?;
    Ok(HttpResponse::Ok().json(logs))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Which host's worker runs it (default `local`).
    pub target: Option<String>,
    /// The last N lines of each stream (default 100, at most 1000).
    pub lines: Option<u32>,
}

/// Read an app's last log lines (`pm2.logs`); the operation's result holds
/// them, and `GET` on this path serves them afterwards.
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), LogsQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.logs operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name or line count", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/pm2/processes/{name}/logs")]
pub async fn read_logs(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = process_name(&name)?;
    let mut payload = json!({"name": name});
    if let Some(lines) = query.lines {
        payload["lines"] = json!(lines);
    }
    let typed = TypedQuery {
        target: query.target.clone(),
    };
    enqueue_typed(&state, &caller, &req, &typed, "pm2.logs", payload).await
}

/// Empty an app's log files (`pm2.flush`).
#[utoipa::path(
    tag = "pm2",
    params(("name" = String, Path, description = "App name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.flush operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/pm2/processes/{name}/logs")]
pub async fn flush_logs(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    on_app(&state, &caller, &req, "pm2.flush", &name, &query).await
}

/// Observe every app now (`pm2.list`); `GET /api/v1/pm2/processes`
/// serves the result afterwards.
#[utoipa::path(
    tag = "pm2",
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: a pm2.list operation", body = opsqueue_shared::Operation),
    ),
)]
#[post("/api/v1/pm2/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(&state, &caller, &req, &query, "pm2.list", json!({})).await
}
