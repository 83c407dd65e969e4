//! Workers and the targets they serve: each running worker as it last
//! reported itself (a heartbeat older than `api.ready_heartbeat_secs` is
//! marked stale), and per target how many fresh workers serve it. The
//! fleet's targets (`GET /api/v1/targets`, with facts) belong here too once
//! they exist.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::Duration;
use maud::html;
use opsqueue_shared::store::worker_list_running;

use super::layout::{self, Page, Section, time};
use super::ok;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let workers = state.store.call(|s| s.read(worker_list_running)).await?;
    let now = opsqueue_shared::time::now();
    let fresh_after = now - Duration::seconds(state.config.api.ready_heartbeat_secs as i64);
    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for worker in &workers {
        for target in &worker.targets {
            *targets.entry(target.as_str()).or_default() +=
                usize::from(worker.heartbeat_at >= fresh_after);
        }
    }
    let page = Page {
        title: "Workers",
        section: Section::Workers,
        caller: &caller,
        events: None,
    };
    let content = html! {
        h2 { "Targets" }
        div.cards {
            @for (target, fresh) in &targets {
                div.card {
                    div.value { (fresh) }
                    div.label { (target) ": workers online" }
                }
            }
            @if targets.is_empty() { div.card { div.value { "0" } div.label { "no worker is running" } } }
        }
        h2 { "Workers" }
        div.table-wrap {
            table #workers {
                thead { tr {
                    th { "Worker" } th.wide { "Host" } th { "Heartbeat" } th { "Targets" }
                    th.wide { "Families" } th.wide { "Concurrency" } th.wide { "Version" } th.wide { "Started" }
                } }
                tbody {
                    @for worker in &workers {
                        tr {
                            td.mono { (worker.id) }
                            td.wide { (worker.host) " (pid " (worker.pid) ")" }
                            td {
                                (time(worker.heartbeat_at))
                                @if worker.heartbeat_at < fresh_after { " " span.badge.failed { "stale" } }
                            }
                            td { (worker.targets.join(", ")) }
                            td.wide.wrap { (worker.drivers.join(", ")) }
                            td.wide { (worker.concurrency) }
                            td.wide { (worker.version) }
                            td.wide { (time(worker.started_at)) }
                        }
                    }
                    @if workers.is_empty() { tr { td.empty colspan="8" { "No worker is running." } } }
                }
            }
        }
    };
    Ok(ok(layout::shell(&state, &page, content)))
}
