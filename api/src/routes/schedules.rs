//! `/api/v1/schedules`: named cron expressions with an operation template,
//! fired by the monitor with source `cron`.
//!
//! Everything is checked before it is stored: the name is a label, the cron
//! expression parses (five fields, minute first, or six, seconds first;
//! UTC), and `{type, payload}` parses into an action, stored normalized so
//! the monitor enqueues exactly what the catalogue accepts. A new schedule's
//! `last_fire_at` is its creation time, so it waits for its next fire
//! instead of firing at once. `PUT` replaces an existing schedule (404 if
//! there is none) and keeps its `last_fire_at`.
//!
//! A key bound to a source may not write schedules: their operations carry
//! the source `cron`, which such a key may not use. Admin keys may.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, put, web};
use opsqueue_shared::Action;
use opsqueue_shared::names::Label;
use opsqueue_shared::operation::{DEFAULT_PRIORITY, MAX_MAX_ATTEMPTS, MAX_TIMEOUT_SECS};
use opsqueue_shared::store::{
    ApiKey, Schedule, Scope, schedule_delete, schedule_get, schedule_insert, schedule_list,
    schedule_update,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::enqueue::check_range;
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// `POST /api/v1/schedules` and `PUT /api/v1/schedules/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Required on POST; on PUT it may be left out, or must match the path.
    pub name: Option<String>,
    /// Five fields (minute first) or six (seconds first), UTC.
    pub cron: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Value,
    /// Default `local`.
    pub target: Option<String>,
    /// 0..=9, default 5.
    pub priority: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub max_attempts: Option<i64>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<Schedule>,
}

impl ScheduleBody {
    /// The schedule to store under `name`, as of `now`.
    fn parse(self, name: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Schedule, ApiError> {
        let mut errors = Vec::new();
        if let Err(e) = Label::parse(name) {
            errors.push(FieldError::new("name", e.to_string()));
        }
        if let Err(e) = opsqueue_shared::cron::parse(&self.cron) {
            errors.push(FieldError::new("cron", e.to_string()));
        }
        let target = match self.target.as_deref().map(Label::parse).transpose() {
            Ok(target) => target.unwrap_or_else(Label::local),
            Err(e) => {
                errors.push(FieldError::new("target", e.to_string()));
                Label::local()
            }
        };
        check_range(&mut errors, "priority", self.priority, 0, 9);
        check_range(
            &mut errors,
            "timeout_secs",
            self.timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        );
        check_range(
            &mut errors,
            "max_attempts",
            self.max_attempts,
            1,
            MAX_MAX_ATTEMPTS,
        );
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(errors));
        }
        let action = Action::parse(&self.kind, self.payload)?;
        Ok(Schedule {
            name: name.to_owned(),
            cron: self.cron,
            kind: action.kind().to_owned(),
            payload: action.payload(),
            target: target.to_string(),
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            timeout_secs: self.timeout_secs,
            max_attempts: self.max_attempts,
            enabled: self.enabled.unwrap_or(true),
            last_fire_at: Some(now),
            created_at: now,
            updated_at: now,
        })
    }
}

fn may_write_schedules(key: &ApiKey) -> Result<(), ApiError> {
    match &key.source {
        Some(source) if !key.allows(Scope::Admin) => Err(ApiError::SourceNotAllowed(format!(
            "this API key is bound to source {source:?}; scheduled operations carry source \"cron\""
        ))),
        _ => Ok(()),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no schedule named {name:?}"))
}

/// Create a schedule.
#[utoipa::path(
    tag = "schedules",
    request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created", body = Schedule, headers(("Location" = String))),
        (status = 409, description = "The name is taken (schedule_exists)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, cron, type or payload", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/schedules")]
pub async fn create_schedule(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<ScheduleBody>,
) -> Result<HttpResponse, ApiError> {
    may_write_schedules(caller.key())?;
    let body = body.into_inner();
    let Some(name) = body.name.clone() else {
        return Err(ApiError::invalid_field("name", "is required"));
    };
    let schedule = body.parse(&name, opsqueue_shared::time::now())?;
    let created = state
        .store
        .call(move |s| {
            s.write(|tx| match schedule_insert(tx, &schedule)? {
                true => schedule_get(tx, &schedule.name),
                false => Ok(None),
            })
        })
        .await?;
    let Some(created) = created else {
        return Err(ApiError::ScheduleExists(name));
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/schedules/{name}")))
        .json(created))
}

/// List schedules, by name.
#[utoipa::path(tag = "schedules", responses((status = 200, description = "Every schedule", body = ScheduleList)))]
#[get("/api/v1/schedules")]
pub async fn list_schedules(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.call(|s| s.read(schedule_list)).await?;
    Ok(HttpResponse::Ok().json(ScheduleList { items }))
}

/// Read a schedule.
#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/schedules/{name}")]
pub async fn get_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let lookup = name.clone();
    let schedule = state
        .store
        .call(move |s| s.read(|c| schedule_get(c, &lookup)))
        .await?;
    Ok(HttpResponse::Ok().json(schedule.ok_or_else(|| not_found(&name))?))
}

/// Replace a schedule.
#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path)),
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "Replaced", body = Schedule),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid cron, type or payload", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/api/v1/schedules/{name}")]
pub async fn replace_schedule(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<ScheduleBody>,
) -> Result<HttpResponse, ApiError> {
    let stored = replace(&state, &caller, name.into_inner(), body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(stored))
}

/// Replaces the schedule `name` with `body` (checked as `PUT` checks it);
/// the schedule as stored.
pub async fn replace(
    state: &AppState,
    caller: &Caller,
    name: String,
    body: ScheduleBody,
) -> Result<Schedule, ApiError> {
    may_write_schedules(caller.key())?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::invalid_field(
            "name",
            "must match the name in the path",
        ));
    }
    let schedule = body.parse(&name, opsqueue_shared::time::now())?;
    let lookup = name.clone();
    let stored = state
        .store
        .call(move |s| {
            s.write(|tx| {
                if !schedule_update(tx, &schedule)? {
                    return Ok(None);
                }
                schedule_get(tx, &lookup)
            })
        })
        .await?;
    stored.ok_or_else(|| not_found(&name))
}

/// Delete a schedule.
#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/schedules/{name}")]
pub async fn delete_schedule(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    may_write_schedules(caller.key())?;
    let name = name.into_inner();
    let lookup = name.clone();
    let deleted = state
        .store
        .call(move |s| s.write(|tx| schedule_delete(tx, &lookup)))
        .await?;
    if !deleted {
        return Err(not_found(&name));
    }
    Ok(HttpResponse::NoContent().finish())
}
