//! Operations: the list (the API's filters kept in the URL, cursor paging,
//! new rows and state changes live), one operation (its payload with
//! secrets as `***`, timeline, attempts, result or error, progress, the log
//! following live, cancel and retry), and the fragments the script fetches
//! to stay current (one row, one operation's summary).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};
use opsqueue_shared::store::{
    ListFilter, LogEntry, operation_get, operation_list, operation_log_list,
};
use opsqueue_shared::{Operation, OperationId, Status};
use serde::Deserialize;

use super::layout::{self, Page, Section, badge, button_form, json_block, time};
use super::{given, ok, query_string, see_other};
use crate::auth::Caller;
use crate::params::operation_id;
use crate::problem::ApiError;
use crate::routes::operations::{self as api, DEFAULT_PAGE};
use crate::state::AppState;

/// Log lines shown before the live log takes over.
const LOG_LINES: usize = 1_000;

/// The list's filters, as the URL carries them (a blank field is no filter).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    resource: Option<String>,
    /// `15m`, `1h`, `24h`, `7d`, or an RFC 3339 time.
    since: Option<String>,
    cursor: Option<String>,
}

const SINCE_CHOICES: &[(&str, &str, i64)] = &[
    ("15m", "last 15 minutes", 15 * 60),
    ("1h", "last hour", 3600),
    ("24h", "last day", 86_400),
    ("7d", "last week", 7 * 86_400),
];

fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some((_, _, secs)) = SINCE_CHOICES.iter().find(|(key, _, _)| *key == text) {
        return Ok(now - Duration::seconds(*secs));
    }
    text.parse::<DateTime<Utc>>()
        .map_err(|e| format!("since: {e} (use 15m, 1h, 24h, 7d or an RFC 3339 time)"))
}

impl ListParams {
    /// The store's filter, or what was wrong with the URL.
    fn filter(&self, now: DateTime<Utc>) -> Result<ListFilter, String> {
        let status = given(&self.status)
            .map(|s| {
                s.parse::<Status>()
                    .map_err(|_| format!("status: unknown status {s:?}"))
            })
            .transpose()?;
        let since = given(&self.since)
            .map(|s| parse_since(s, now))
            .transpose()?;
        let before = given(&self.cursor)
            .map(|c| c.parse::<OperationId>().map_err(|e| format!("cursor: {e}")))
            .transpose()?;
        Ok(ListFilter {
            status,
            kind: given(&self.kind).map(str::to_owned),
            source: given(&self.source).map(str::to_owned),
            target: given(&self.target).map(str::to_owned),
            resource: given(&self.resource).map(str::to_owned),
            parent_id: None,
            since,
            until: None,
            before,
            limit: DEFAULT_PAGE + 1,
        })
    }

    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("status", &self.status),
            ("type", &self.kind),
            ("source", &self.source),
            ("target", &self.target),
            ("resource", &self.resource),
            ("since", &self.since),
        ]
        .into_iter()
        .filter_map(|(key, value)| given(value).map(|v| (key, v)))
        .collect()
    }
}

pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let events = layout::events_url(&state, "type=operation.*").await?;
    let (rows, problem) = match params.filter(opsqueue_shared::time::now()) {
        Ok(filter) => (
            state
                .store
                .call(move |s| s.read(|c| operation_list(c, &filter)))
                .await?,
            None,
        ),
        Err(problem) => (Vec::new(), Some(problem)),
    };
    let more = rows.len() > DEFAULT_PAGE;
    let rows = &rows[..rows.len().min(DEFAULT_PAGE)];
    let next = more
        .then(|| rows.last().map(|op| op.id.to_string()))
        .flatten();
    let page = Page {
        title: "Operations",
        section: Section::Operations,
        caller: &caller,
        events: Some(events),
    };
    let first = given(&params.cursor).is_none();
    let filters = params.pairs();
    let content = html! {
        form.filters method="get" action="/ui/operations" role="search" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for status in Status::ALL {
                        option value=(status.as_str()) selected[given(&params.status) == Some(status.as_str())] { (status.as_str()) }
                    }
                }
            }
            label { "Type" input name="type" value=[given(&params.kind)] placeholder="diag.sleep" size="14"; }
            label { "Target" input name="target" value=[given(&params.target)] placeholder="local" size="8"; }
            label { "Source" input name="source" value=[given(&params.source)] placeholder="api" size="8"; }
            label { "Resource" input name="resource" value=[given(&params.resource)] placeholder="pm2:web" size="12"; }
            label { "Created"
                select name="since" {
                    option value="" { "any time" }
                    @for (key, label, _) in SINCE_CHOICES {
                        option value=(key) selected[given(&params.since) == Some(*key)] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if !filters.is_empty() { a.button.secondary href="/ui/operations" { "Clear" } }
        }
        @if let Some(problem) = &problem { (layout::notice(problem, true)) }
        p #more.notice hidden { "More new operations arrived than are shown: "
            a href={"/ui/operations?" (query_string(filters.iter().copied()))} { "reload the list" } "." }
        div.table-wrap {
            table #operations
                data-first=(if first { "true" } else { "false" })
                data-status=[given(&params.status)] data-type=[given(&params.kind)]
                data-source=[given(&params.source)] data-target=[given(&params.target)]
                data-resource=[given(&params.resource)] {
                (header_row())
                tbody {
                    @for op in rows { (row_markup(op)) }
                    @if rows.is_empty() {
                        tr { td.empty colspan="8" { "No operations match." } }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !first { a.button.secondary href={"/ui/operations?" (query_string(filters.iter().copied()))} { "Newest" } }
            @if let Some(next) = &next {
                a.button.secondary rel="next" href={"/ui/operations?" (query_string(filters.iter().copied().chain([("cursor", next.as_str())])))} { "Older →" }
            }
        }
    };
    Ok(ok(layout::shell(&state, &page, content)))
}

fn header_row() -> Markup {
    html! {
        thead { tr {
            th { "Operation" } th { "Type" } th { "Status" } th.wide { "Target" } th.wide { "Source" }
            th { "Tries" } th.wide { "Created" } th { "Progress" }
        } }
    }
}

fn short_id(id: &OperationId) -> String {
    let text = id.to_string();
    format!("…{}", &text[text.len() - 12..])
}

fn took(op: &Operation) -> Option<f64> {
    let started = op.started_at?;
    let end = op.finished_at.unwrap_or_else(opsqueue_shared::time::now);
    Some((end - started).num_milliseconds() as f64 / 1000.0)
}

/// One row of the list (also served alone, for rows that appear live).
pub fn row_markup(op: &Operation) -> Markup {
    html! {
        tr id={"op-" (op.id)} data-status=(op.status.as_str()) {
            td { a.mono href={"/ui/operations/" (op.id)} title=(op.id) { (short_id(&op.id)) } }
            td.mono { (op.kind) }
            td { (badge(op.status)) }
            td.wide { (op.target) }
            td.wide { (op.source) }
            td data-attempt data-max=(op.max_attempts) { (op.attempt) "/" (op.max_attempts) }
            td.wide { (time(op.created_at)) }
            td.progress-cell data-progress {
                @if let Some(percent) = op.progress.as_ref().and_then(|p| p.percent) {
                    progress max="100" value=(percent) {}
                } @else if op.status.is_terminal() {
                    @if let Some(took) = took(op) { (layout::duration(took)) }
                }
            }
        }
    }
}

async fn load(state: &AppState, id: &str) -> Result<Operation, ApiError> {
    let id = operation_id(id)?;
    state
        .store
        .call(move |s| s.read(|c| operation_get(c, id)))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no operation {id}")))
}

pub async fn row(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let op = load(&state, &id).await?;
    Ok(ok(row_markup(&op)))
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    notice: Option<String>,
}

pub async fn detail(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, ApiError> {
    let events = layout::events_url(&state, &format!("operation={}", id.as_str())).await;
    let op = load(&state, &id).await?;
    let events = events?;
    let op_id = op.id;
    let lines = state
        .store
        .call(move |s| s.read(|c| operation_log_list(c, op_id, 0, LOG_LINES)))
        .await?;
    let title = format!("{} · {}", op.kind, short_id(&op.id));
    let page = Page {
        title: &title,
        section: Section::Operations,
        caller: &caller,
        events: Some(events),
    };
    let last_seq = lines.last().map_or(0, |l| l.seq);
    let follow = (!op.status.is_terminal() || lines.len() == LOG_LINES).then(|| {
        format!(
            "/api/v1/operations/{}/logs?follow=true&after={last_seq}",
            op.id
        )
    });
    let content = html! {
        @if let Some(notice) = given(&query.notice) { (layout::notice(notice, true)) }
        div.two {
            section #summary data-id=(op.id) data-src={"/ui/operations/" (op.id) "/summary"} {
                (summary_markup(&op, &caller))
            }
            section.panel {
                h2 { "Log" }
                (log_markup(&lines, follow.as_deref()))
            }
        }
        div.two {
            section.panel {
                h2 { "Payload" }
                p.hint { "Secret fields are stored apart and shown as ***." }
                (json_block(&op.payload))
            }
            section.panel {
                h2 { "Details" }
                dl.facts {
                    dt { "Id" } dd.mono { (op.id) }
                    dt { "Source" } dd { (op.source) }
                    dt { "Target" } dd { (op.target) }
                    dt { "Resource" } dd { (op.resource.as_deref().unwrap_or("—")) }
                    dt { "Priority" } dd { (op.priority) }
                    dt { "Timeout" } dd { (op.timeout_secs) " s" }
                    dt { "Safe to re-run" } dd { (if op.rerun_safe { "yes" } else { "no" }) }
                    @if let Some(key) = &op.idempotency_key { dt { "Idempotency key" } dd.mono { (key) } }
                    @if let Some(parent) = &op.parent_id {
                        dt { "Part of" } dd { a.mono href={"/ui/operations/" (parent)} { (parent) } }
                    }
                }
            }
        }
    };
    Ok(ok(layout::shell(&state, &page, content)))
}

pub async fn summary(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let op = load(&state, &id).await?;
    Ok(ok(summary_markup(&op, &caller)))
}

/// What changes while an operation runs: status, actions, progress,
/// timeline, result or error.
fn summary_markup(op: &Operation, caller: &Caller) -> Markup {
    let can_write = layout::can_write(caller);
    let cancellable = !op.status.is_terminal();
    let retryable = matches!(op.status, Status::Failed | Status::Cancelled);
    html! {
        div.panel {
            div.actions {
                (badge(op.status))
                span { "attempt " (op.attempt) " of " (op.max_attempts) }
                @if let Some(took) = took(op) { span.hint { (layout::duration(took)) } }
                @if op.cancel_requested_at.is_some() && !op.status.is_terminal() {
                    span.hint { "cancel requested" }
                }
                @if can_write && cancellable {
                    (button_form(caller, &format!("/ui/operations/{}/cancel", op.id), &[], "Cancel",
                        Some(&format!("Cancel {} ({})?", op.kind, op.id)), true))
                }
                @if can_write && retryable {
                    (button_form(caller, &format!("/ui/operations/{}/retry", op.id), &[], "Retry",
                        Some(&format!("Run {} ({}) again?", op.kind, op.id)), false))
                }
            }
            @if op.kind == "workflow.run" {
                p { a href={"/ui/workflows/" (op.id)} { "Its steps, as a graph" } }
            }
            @if let (Some(parent), Some(step)) = (op.parent_id, &op.step) {
                p { "Step " strong { (step) } " of " a href={"/ui/workflows/" (parent)} { "workflow " (short_id(&parent)) } }
            }
            @if let (Some(parent), Some(step)) = (op.parent_id, &op.compensates) {
                p { "Undoes step " strong { (step) } " of " a href={"/ui/workflows/" (parent)} { "workflow " (short_id(&parent)) } }
            }
            @if let Some(progress) = &op.progress {
                p {
                    @if let Some(percent) = progress.percent {
                        progress max="100" value=(percent) {} " " (format!("{percent:.0}%")) " "
                    }
                    @if let Some(step) = &progress.step { span { (step) } }
                }
            }
            h2 { "Timeline" }
            ol.timeline {
                li { (time(op.created_at)) " accepted from " (op.source) }
                @if op.run_at > op.created_at + Duration::seconds(1) && op.started_at.is_none_or(|s| s < op.run_at) {
                    li { (time(op.run_at)) " due" }
                }
                @if let Some(started) = op.started_at {
                    li.now[op.status == Status::Running] {
                        (time(started)) " attempt " (op.attempt) " started"
                        @if let Some(worker) = &op.worker_id { " on worker " span.mono { (worker) } }
                    }
                }
                @if let Some(at) = op.cancel_requested_at { li { (time(at)) " cancel requested" } }
                @if let Some(finished) = op.finished_at {
                    li.now { (time(finished)) " " (op.status.as_str()) }
                } @else if op.status == Status::Pending {
                    li.now { "waiting for a worker" @if op.attempt > 0 { " (attempt " (op.attempt + 1) ")" } }
                }
            }
            @if let Some(error) = &op.error {
                h2 { "Error" }
                dl.facts {
                    dt { "Code" } dd.mono { (error.code) }
                    dt { "Message" } dd { (error.message) }
                    dt { "Retryable" } dd { (if error.retryable { "yes" } else { "no" }) }
                }
            }
            @if let Some(result) = &op.result {
                h2 { "Result" }
                (json_block(result))
            }
        }
    }
}

fn log_markup(lines: &[LogEntry], follow: Option<&str>) -> Markup {
    // Where each attempt's lines begin.
    let starts: Vec<bool> = lines
        .iter()
        .scan(0, |attempt, line| {
            let starts = line.attempt != *attempt;
            *attempt = line.attempt;
            Some(starts)
        })
        .collect();
    html! {
        pre.log #log data-follow=[follow] data-attempt=(lines.last().map_or(0, |l| l.attempt)) tabindex="0" aria-label="Log" aria-live="polite" {
            @if lines.is_empty() { span.none.at { "no lines yet" } }
            @for (line, starts) in lines.iter().zip(&starts) {
                @if *starts {
                    span.attempt { "— attempt " (line.attempt) " —" }
                }
                span class={"line " (line.stream)} {
                    span.at { (line.at.format("%H:%M:%S")) }
                    (line.line)
                }
            }
        }
    }
}

async fn act(
    state: &AppState,
    caller: &Caller,
    id: &str,
    what: &str,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(id)?;
    let outcome = match what {
        "cancel" => api::cancel(state, caller, id).await,
        _ => api::retry(state, caller, id).await,
    };
    Ok(match outcome {
        Ok(op) => see_other(&format!("/ui/operations/{}", op.id)),
        Err(error @ (ApiError::NotCancellable(_) | ApiError::NotRetryable(_))) => {
            see_other(&format!(
                "/ui/operations/{id}?{}",
                query_string([("notice", error.to_string().as_str())])
            ))
        }
        Err(error) => return Err(error),
    })
}

pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &caller, &id, "cancel").await
}

pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &caller, &id, "retry").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_s_filters_come_from_the_url_and_a_bad_one_is_said() {
        let now = opsqueue_shared::time::now();
        let params = ListParams {
            status: Some("failed".into()),
            kind: Some(" diag.sleep ".into()),
            target: Some(String::new()),
            since: Some("1h".into()),
            ..ListParams::default()
        };
        let filter = params.filter(now).unwrap();
        assert_eq!(filter.status, Some(Status::Failed));
        assert_eq!(filter.kind.as_deref(), Some("diag.sleep"));
        assert_eq!(filter.target, None, "a blank field is no filter");
        assert_eq!(filter.since, Some(now - Duration::hours(1)));
        assert_eq!(
            params.pairs(),
            [
                ("status", "failed"),
                ("type", "diag.sleep"),
                ("since", "1h")
            ]
        );
        let bad = ListParams {
            status: Some("exploded".into()),
            ..ListParams::default()
        };
        assert!(bad.filter(now).unwrap_err().contains("exploded"));
        let bad = ListParams {
            since: Some("yesterday".into()),
            ..ListParams::default()
        };
        assert!(bad.filter(now).unwrap_err().starts_with("since"));
    }
}
