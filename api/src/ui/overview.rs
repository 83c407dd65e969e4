//! The overview: operations by status, what ended in the last hour (a
//! small chart, from the kept `operation.finished` events), how long the
//! oldest due operation has waited, the workers online, and the latest
//! failures. The figures are those of `/metrics` (the same snapshot), and
//! the script fetches them again when operations move.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{Duration, Timelike};
use maud::{Markup, html};
use opsqueue_shared::Status;
use opsqueue_shared::store::{ListFilter, event_finished_by_minute, operation_list};

use super::layout::{self, Page, Section, badge, time};
use super::ok;
use crate::auth::Caller;
use crate::metrics::Snapshot;
use crate::problem::ApiError;
use crate::state::AppState;

const MINUTES: i64 = 60;
/// At most this many finished events are counted for the chart.
const CHART_EVENTS: usize = 500_000;

pub async fn page(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let events = layout::events_url(&state, "type=operation.*").await?;
    let stats = stats_markup(&state).await?;
    let page = Page {
        title: "Overview",
        section: Section::Overview,
        caller: &caller,
        events: Some(events),
    };
    let content = html! {
        section #stats data-src="/ui/overview/stats" { (stats) }
    };
    Ok(ok(layout::shell(&state, &page, content)))
}

pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(ok(stats_markup(&state).await?))
}

async fn stats_markup(state: &AppState) -> Result<Markup, ApiError> {
    let now = opsqueue_shared::time::now();
    let heartbeat = state.config.api.ready_heartbeat_secs;
    let since = (now - Duration::minutes(MINUTES - 1))
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let (snapshot, finished, failures) = state
        .store
        .call(move |s| {
            s.read(|c| {
                let failed = ListFilter {
                    status: Some(Status::Failed),
                    limit: 8,
                    ..ListFilter::default()
                };
                Ok((
                    Snapshot::read(c, now, heartbeat)?,
                    event_finished_by_minute(c, since, CHART_EVENTS)?,
                    operation_list(c, &failed)?,
                ))
            })
        })
        .await?;
    let count = |status: Status| {
        snapshot
            .by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    };
    let done_last_hour: i64 = finished.iter().map(|(_, _, n)| n).sum();
    let failed_last_hour: i64 = finished
        .iter()
        .filter(|(_, status, _)| status == "failed")
        .map(|(_, _, n)| n)
        .sum();
    Ok(html! {
        div.cards {
            @for status in Status::ALL {
                a.card href={"/ui/operations?status=" (status.as_str())} {
                    div.value data-count=(status.as_str()) { (count(status)) }
                    div.label { (status.as_str()) }
                }
            }
            div.card {
                div.value { (layout::duration(snapshot.oldest_pending_age_secs)) }
                div.label { "oldest due pending" }
            }
            a.card href="/ui/workers" {
                div.value { (snapshot.fresh_workers) }
                div.label { "workers online" }
            }
        }
        section.panel {
            h2 { "Last hour: " (done_last_hour) " ended, " (failed_last_hour) " failed" }
            (chart(&finished, since))
            div.legend {
                span { span.swatch.completed {} "completed" }
                span { span.swatch.failed {} "failed or cancelled" }
            }
        }
        section {
            h2 { "Recent failures" }
            div.table-wrap {
                table {
                    thead { tr { th { "Operation" } th { "Type" } th { "Status" } th.wide { "Error" } th { "Ended" } } }
                    tbody {
                        @for op in &failures {
                            tr {
                                td { a.mono href={"/ui/operations/" (op.id)} { (op.id) } }
                                td.mono { (op.kind) }
                                td { (badge(op.status)) }
                                td.wide.wrap { @if let Some(e) = &op.error { code { (e.code) } ": " (e.message) } }
                                td { (layout::maybe_time(op.finished_at)) }
                            }
                        }
                        @if failures.is_empty() { tr { td.empty colspan="5" { "Nothing failed." } } }
                    }
                }
            }
        }
    })
}

/// Bars per minute over the last hour: completed below, failed (and
/// cancelled) on top.
fn chart(finished: &[(String, String, i64)], since: chrono::DateTime<chrono::Utc>) -> Markup {
    let mut per_minute: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (minute, status, count) in finished {
        let entry = per_minute.entry(minute.clone()).or_default();
        if status == "completed" {
            entry.0 += count;
        } else {
            entry.1 += count;
        }
    }
    let minutes: Vec<(i64, i64)> = (0..MINUTES)
        .map(|i| {
            let key = (since + Duration::minutes(i))
                .format("%Y-%m-%dT%H:%M")
                .to_string();
            per_minute.get(&key).copied().unwrap_or_default()
        })
        .collect();
    let top = minutes.iter().map(|(c, f)| c + f).max().unwrap_or(0).max(1) as f64;
    let (width, height, bar) = (1000.0, 110.0, 1000.0 / MINUTES as f64);
    let scale = |n: i64| n as f64 / top * (height - 14.0);
    html! {
        svg.chart viewBox="0 0 1000 124" role="img" aria-label="Operations ended per minute over the last hour" {
            @for (i, (completed, failed)) in minutes.iter().enumerate() {
                @let x = i as f64 * bar + 1.0;
                @let ok_height = scale(*completed);
                @let bad_height = scale(*failed);
                @if *completed > 0 {
                    rect.completed x=(x) y=(height - ok_height) width=(bar - 2.0) height=(ok_height) {
                        title { (completed) " completed" }
                    }
                }
                @if *failed > 0 {
                    rect.failed x=(x) y=(height - ok_height - bad_height) width=(bar - 2.0) height=(bad_height) {
                        title { (failed) " failed or cancelled" }
                    }
                }
            }
            line.axis x1="0" y1=(height) x2=(width) y2=(height) {}
            text x="0" y="122" { "60 min ago" }
            text x="500" y="122" text-anchor="middle" { "30" }
            text x="1000" y="122" text-anchor="end" { "now" }
            text x="0" y="10" { (top as i64) "/min" }
        }
        p.hint { "From the kept events (" (time(since)) " on)." }
    }
}
