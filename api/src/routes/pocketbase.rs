//! `GET /api/v1/pocketbase/system/info` and `…/system/health`: the two
//! Pockestrator reads that answer with the API's own facts, at once,
//! without touching the host. Info is the opsqueue version, how long this
//! API process has run, and the pocketbase family's configuration (it
//! holds no secrets). Health is the last `pocketbase.system.validate` (its
//! checks as observed, with `observed_at`): `503`, a problem with the same
//! members, when a check failed or none ran yet (`POST …/validate/system`
//! runs one).

use actix_web::{HttpResponse, get, web};
use opsqueue_shared::families::pocketbase::{FAMILY, SYSTEM_KIND, SYSTEM_NAME};
use opsqueue_shared::names::Label;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::observed;
use crate::problem::{ApiError, PROBLEM_JSON, Problem};
use crate::state::AppState;

/// The API process's uptime as `2h30m15s`.
fn uptime() -> Option<String> {
    let running = opsqueue_shared::process::running_for(std::process::id()).ok()??;
    let secs = running.as_secs();
    Some(format!("{}h{}m{}s", secs / 3600, secs / 60 % 60, secs % 60))
}

/// The opsqueue version, the API's uptime and the family's configuration.
#[utoipa::path(
    tag = "pocketbase",
    responses((status = 200, description = "`{version, uptime, uptime_secs, config: {enabled, base_dir, versions_dir, create_users, run_as_user, proxy_url, health_timeout_secs, unit_dir, caddy_admin_url, …}}`", body = Object)),
)]
#[get("/api/v1/pocketbase/system/info")]
pub async fn system_info(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut config = serde_json::to_value(&state.config.pocketbase).map_err(ApiError::internal)?;
    config["unit_dir"] = json!(state.config.systemd.unit_dir);
    config["caddy_admin_url"] = json!(state.config.caddy.admin_url);
    let running = opsqueue_shared::process::running_for(std::process::id())
        .ok()
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "version": opsqueue_shared::VERSION,
        "uptime": uptime(),
        "uptime_secs": running.map(|r| r.as_secs()),
        "config": config,
    })))
}

/// `GET …/system/health`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Which host (default `local`).
    #[param(schema_with = Label::schema)]
    pub target: Option<String>,
}

/// The host's checks as last observed; 503 when one failed or none ran.
#[utoipa::path(
    tag = "pocketbase",
    params(HealthQuery),
    responses(
        (status = 200, description = "`{healthy: true, checks: [{name, ok, message}], observed_at}`", body = Object),
        (status = 503, description = "A check failed, or no check ran yet: a problem (`code: unhealthy`) with the same members (`healthy: false`, `checks`, `observed_at`)", body = Object, content_type = "application/problem+json"),
        (status = 400, description = "An unknown or malformed query field", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid target", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/pocketbase/system/health")]
pub async fn system_health(
    state: web::Data<AppState>,
    query: web::Query<HealthQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = match &query.target {
        Some(text) => {
            Label::parse(text).map_err(|e| ApiError::invalid_field("target", e.to_string()))?
        }
        None => Label::local(),
    };
    let seen = observed::list(&state, &target, FAMILY, SYSTEM_KIND).await?;
    let Some(checks) = seen
        .items
        .into_iter()
        .find(|item| item["name"] == SYSTEM_NAME)
    else {
        return Ok(unhealthy(json!({
            "detail": "no system check ran yet on this target: POST /api/v1/pocketbase/validate/system",
            "healthy": false,
            "checks": [],
            "observed_at": null,
        })));
    };
    let healthy = checks["valid"] == Value::Bool(true);
    let body = json!({
        "healthy": healthy,
        "checks": checks["checks"],
        "observed_at": checks["observed_at"],
        "observed_by": checks["observed_by"],
    });
    Ok(if healthy {
        HttpResponse::Ok().json(body)
    } else {
        let mut body = body;
        body["detail"] = json!("a system check failed: see checks");
        unhealthy(body)
    })
}

/// A `503` problem (`code: unhealthy`) whose extension members are the
/// checks (RFC 9457 §3.2), so it passes the API's problem handler as is.
fn unhealthy(mut members: Value) -> HttpResponse {
    for (key, value) in [
        ("type", json!("urn:opsqueue:problem:unhealthy")),
        ("title", json!("Unhealthy")),
        ("status", json!(503)),
        ("code", json!("unhealthy")),
    ] {
        members[key] = value;
    }
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::CONTENT_TYPE, PROBLEM_JSON))
        .body(members.to_string())
}
