//! `/api/v1/systemd`: unit management (the Pockestrator's). Changes and
//! host reads enqueue `systemd.*` operations (202 + the operation, as
//! `POST /api/v1/operations` would); the unit list answers at once from the
//! last observation joined with the units opsqueue installed.
//!
//! Reach is checked here too, before anything is stored: a unit a `[systemd]
//! deny` pattern matches is `403 forbidden` on every route; the actions on
//! an existing unit also need an `allow` pattern or a unit opsqueue
//! installed on that target. (The worker checks again with its own
//! configuration: it decides.)
//!
//! Logs are an operation (`POST …/{unit}/logs`): its result holds the
//! journal lines.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::Action;
use opsqueue_shared::actions::systemd::{
    self as actions, FAMILY, SystemdAction, UNIT_KIND, UnitName, UnitVerb,
};
use opsqueue_shared::names::Label;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::enqueue::{TypedQuery, enqueue_action, enqueue_typed};
use crate::managed;
use crate::observed::{self, ObservedList};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn unit_name(text: &str) -> Result<UnitName, ApiError> {
    UnitName::parse(text).map_err(|e| ApiError::invalid_field("unit", e.to_string()))
}

/// `403` for a unit the configuration denies.
fn refuse_denied(state: &AppState, unit: &UnitName) -> Result<(), ApiError> {
    actions::check_not_denied(&state.config, unit).map_err(ApiError::Forbidden)
}

/// `403` unless an `allow` pattern names the unit or opsqueue installed it
/// on `target`.
async fn require_reach(state: &AppState, target: &Label, unit: &UnitName) -> Result<(), ApiError> {
    refuse_denied(state, unit)?;
    if actions::allowed_by_config(&state.config, unit)
        || managed::is_managed(state, target, FAMILY, UNIT_KIND, unit.as_str()).await?
    {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{unit} is neither matched by a [systemd] allow pattern nor installed by opsqueue on {target}"
    )))
}

/// Checks the unit's reach (an install: only that it is not denied), then
/// enqueues (which refuses a disabled family with 422).
async fn enqueue_checked(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: &TypedQuery,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    if state.config.systemd.enabled
        && let Action::Systemd(systemd) = &action
        && let Some(unit) = systemd.unit()
    {
        if matches!(systemd, SystemdAction::Install(_)) {
            refuse_denied(state, unit)?;
        } else {
            let target = observed::target(query.target.as_deref())?;
            require_reach(state, &target, unit).await?;
        }
    }
    enqueue_action(state, caller, req, action, query).await
}

async fn enqueue_on_unit(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: &TypedQuery,
    kind: &str,
    payload: Value,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse(kind, payload)?;
    enqueue_checked(state, caller, req, query, action).await
}

/// The units as last observed, and those opsqueue installed.
#[utoipa::path(
    tag = "systemd",
    params(TypedQuery),
    responses(
        (status = 200, description = "Each unit's observed state (active, sub, load and file state, main pid, …) with observed_at, and `managed` (the install spec) for the units opsqueue installed", body = ObservedList),
    ),
)]
#[get("/api/v1/systemd/units")]
pub async fn list_units(
    state: web::Data<AppState>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = observed::target(query.target.as_deref())?;
    let list = managed::list(&state, &target, FAMILY, UNIT_KIND).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// One unit as last observed (and its install spec, if opsqueue installed it).
#[utoipa::path(
    tag = "systemd",
    params(("unit" = String, Path, description = "Unit name (`web` means `web.service`)"), TypedQuery),
    responses(
        (status = 200, description = "The unit's observed state with observed_at, and `managed`", body = Object),
        (status = 404, description = "Neither observed nor installed by opsqueue", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid unit name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/systemd/units/{unit}")]
pub async fn get_unit(
    state: web::Data<AppState>,
    unit: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let unit = unit_name(&unit)?;
    let target = observed::target(query.target.as_deref())?;
    let how = format!(
        "POST /api/v1/systemd/units/{unit}/status observes it, POST /api/v1/systemd/refresh every unit opsqueue may touch"
    );
    let found = managed::one(&state, &target, FAMILY, UNIT_KIND, unit.as_str(), &how).await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Install a service unit from a spec (`systemd.unit.install`).
///
/// Body: `{unit, exec_start: [program, args…], description?,
/// working_directory?, user?, group?, environment?: {NAME: value}, type?
/// (exec|simple|notify|oneshot), restart? (on-failure|always|no|…),
/// restart_sec?, hardening? (basic|strict|none), wanted_by?, enable?,
/// start?}`. The unit is rendered (never taken as text), checked with
/// `systemd-analyze verify`, written atomically to `[systemd] unit_dir`
/// and systemd reloaded. The same spec again is `changed: false`.
#[utoipa::path(
    tag = "systemd",
    params(TypedQuery),
    request_body(content = Object, description = "The unit's spec"),
    responses(
        (status = 202, description = "Accepted: a systemd.unit.install operation", body = opsqueue_shared::Operation),
        (status = 403, description = "The unit is denied by [systemd] deny", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The spec does not parse, or the family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/systemd/units")]
pub async fn install_unit(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse("systemd.unit.install", body.into_inner())?;
    enqueue_checked(&state, &caller, &req, &query, action).await
}

/// Remove a unit opsqueue installed (`systemd.unit.remove`): stopped,
/// disabled, its file deleted; an absent unit an `allow` pattern names is
/// `changed: false` (one reachable only because opsqueue installed it is
/// out of reach once removed).
#[utoipa::path(
    tag = "systemd",
    params(("unit" = String, Path, description = "Unit name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a systemd.unit.remove operation", body = opsqueue_shared::Operation),
        (status = 403, description = "Denied, or neither allowed nor installed by opsqueue", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid unit name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/systemd/units/{unit}")]
pub async fn remove_unit(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    unit: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let unit = unit_name(&unit)?;
    let payload = json!({"unit": unit});
    enqueue_on_unit(
        &state,
        &caller,
        &req,
        &query,
        "systemd.unit.remove",
        payload,
    )
    .await
}

/// `POST …/{unit}/logs`: which journal lines.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Which host's worker runs it (default `local`).
    pub target: Option<String>,
    /// The last this many lines (1 to 10000, default 100).
    pub lines: Option<u32>,
    /// Only lines from this time on (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

/// Read a unit's journal (`systemd.logs`): the operation's result holds
/// `{unit, count, truncated, lines: [{time, priority, pid, identifier,
/// message}]}`.
#[utoipa::path(
    tag = "systemd",
    params(("unit" = String, Path, description = "Unit name"), LogsQuery),
    responses(
        (status = 202, description = "Accepted: a systemd.logs operation", body = opsqueue_shared::Operation),
        (status = 403, description = "Denied, or neither allowed nor installed by opsqueue", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid unit name or lines", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/systemd/units/{unit}/logs")]
pub async fn unit_logs(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    unit: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let unit = unit_name(&unit)?;
    let query = query.into_inner();
    let mut payload = json!({"unit": unit});
    if let Some(lines) = query.lines {
        payload["lines"] = json!(lines);
    }
    if let Some(since) = query.since {
        payload["since"] = json!(since);
    }
    let typed = TypedQuery {
        target: query.target,
    };
    enqueue_on_unit(&state, &caller, &req, &typed, "systemd.logs", payload).await
}

/// Act on a unit: `start`, `stop`, `restart`, `reload`, `enable`,
/// `disable`, or `status` (observe it).
///
/// Start of an active unit, stop of a stopped one, enable of an enabled
/// one (…) complete with `changed: false`.
#[utoipa::path(
    tag = "systemd",
    params(
        ("unit" = String, Path, description = "Unit name"),
        ("verb" = String, Path, description = "start, stop, restart, reload, enable, disable or status"),
        TypedQuery,
    ),
    responses(
        (status = 202, description = "Accepted: a systemd.<verb> operation", body = opsqueue_shared::Operation),
        (status = 403, description = "Denied, or neither allowed nor installed by opsqueue", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such verb", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid unit name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/systemd/units/{unit}/{verb}")]
pub async fn unit_action(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let (unit, verb) = path.into_inner();
    let verb = match verb.as_str() {
        "status" => UnitVerb::Status,
        other => UnitVerb::from_route(other).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no unit action {other:?}; use start, stop, restart, reload, enable, disable, status or logs"
            ))
        })?,
    };
    let unit = unit_name(&unit)?;
    let payload = json!({"unit": unit});
    enqueue_on_unit(&state, &caller, &req, &query, verb.kind(), payload).await
}

/// Observe every unit opsqueue may touch (`systemd.refresh`); the monitor
/// also schedules one (`refresh-systemd`).
#[utoipa::path(
    tag = "systemd",
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: a systemd.refresh operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/systemd/refresh")]
pub async fn refresh_units(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(&state, &caller, &req, &query, "systemd.refresh", json!({})).await
}
