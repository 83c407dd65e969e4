//! Schedules: every schedule with its cron, operation and last fire; a
//! write key edits the cron and turns a schedule on or off. A change is
//! `PUT /api/v1/schedules/{name}`'s own (the schedule as stored, with the
//! new cron and switch), so an invalid cron is refused the same way, and
//! said beside that schedule.

use actix_web::{HttpResponse, web};
use maud::html;
use opsqueue_shared::store::{Schedule, schedule_get, schedule_list};
use serde::Deserialize;

use super::layout::{self, Page, Section, maybe_time};
use super::{given, html, ok, see_other};
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::routes::schedules::{ScheduleBody, replace};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    cron: Option<String>,
    /// `true` or `false`; absent keeps it as it is.
    enabled: Option<String>,
}

async fn render(
    state: &AppState,
    caller: &Caller,
    refused: Option<(&str, String)>,
) -> Result<maud::Markup, ApiError> {
    let schedules = state.store.call(|s| s.read(schedule_list)).await?;
    let can_write = layout::can_write(caller);
    let page = Page {
        title: "Schedules",
        section: Section::Schedules,
        caller,
        events: None,
    };
    let content = html! {
        p.hint { "Cron is UTC: five fields (minute first) or six (seconds first). The monitor fires each due schedule once, with source cron." }
        div.table-wrap {
            table #schedules {
                thead { tr { th { "Name" } th { "Cron" } th { "Operation" } th.wide { "Target" } th { "On" } th.wide { "Last fire" } } }
                tbody {
                    @for schedule in &schedules {
                        @let error = refused.as_ref().filter(|(name, _)| *name == schedule.name).map(|(_, e)| e.as_str());
                        tr id={"schedule-" (schedule.name)} {
                            td { (schedule.name) }
                            td {
                                @if can_write {
                                    form.inline method="post" action={"/ui/schedules/" (schedule.name)} {
                                        (layout::csrf_field(caller))
                                        input.mono name="cron" value=(schedule.cron) size="16" aria-label={"Cron of " (schedule.name)}
                                            aria-invalid=[error.map(|_| "true")];
                                        " "
                                        button.small.secondary type="submit" { "Save" }
                                    }
                                    @if let Some(error) = error { div.field-error role="alert" { (error) } }
                                } @else {
                                    code { (schedule.cron) }
                                }
                            }
                            td.mono { (schedule.kind) }
                            td.wide { (schedule.target) }
                            td {
                                @if can_write {
                                    (layout::button_form(caller, &format!("/ui/schedules/{}", schedule.name),
                                        &[("enabled", if schedule.enabled { "false" } else { "true" })],
                                        if schedule.enabled { "On · turn off" } else { "Off · turn on" },
                                        None, false))
                                } @else {
                                    (if schedule.enabled { "on" } else { "off" })
                                }
                            }
                            td.wide { (maybe_time(schedule.last_fire_at)) }
                        }
                    }
                    @if schedules.is_empty() { tr { td.empty colspan="6" { "No schedules." } } }
                }
            }
        }
    };
    Ok(layout::shell(state, &page, content))
}

pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(ok(render(&state, &caller, None).await?))
}

/// The body `PUT` would take: `schedule` as stored, with `form`'s changes.
fn changed(schedule: Schedule, form: &ScheduleForm) -> Result<ScheduleBody, ApiError> {
    let enabled = match given(&form.enabled) {
        None => schedule.enabled,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(ApiError::invalid_field("enabled", "must be true or false")),
    };
    Ok(ScheduleBody {
        name: None,
        cron: given(&form.cron).map_or(schedule.cron, str::to_owned),
        kind: schedule.kind,
        payload: schedule.payload,
        target: Some(schedule.target),
        priority: Some(schedule.priority),
        timeout_secs: schedule.timeout_secs,
        max_attempts: schedule.max_attempts,
        enabled: Some(enabled),
    })
}

pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    form: web::Form<ScheduleForm>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let lookup = name.clone();
    let schedule = state
        .store
        .call(move |s| s.read(|c| schedule_get(c, &lookup)))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule named {name:?}")))?;
    let outcome = match changed(schedule, &form) {
        Ok(body) => replace(&state, &caller, name.clone(), body)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => Ok(see_other("/ui/schedules")),
        Err(error @ (ApiError::StoreBusy | ApiError::Internal)) => Err(error),
        Err(error) => Ok(html(
            HttpResponse::UnprocessableEntity(),
            render(&state, &caller, Some((&name, error.to_string()))).await?,
        )),
    }
}
