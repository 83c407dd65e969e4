//! Targets and workers: the fleet's targets as `GET /api/v1/targets`
//! shows them (status, role, labels, workers online, pending and running
//! work, the newest host facts), and each running worker as it last
//! reported itself (a heartbeat older than `api.ready_heartbeat_secs` is
//! marked stale).

use actix_web::{HttpResponse, web};
use chrono::Duration;
use maud::{Markup, html};
use opsqueue_shared::store::{Target, TargetStatus, target_list, worker_list_running};

use super::layout::{self, Page, Section, time};
use super::ok;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let now = opsqueue_shared::time::now();
    let (workers, targets) = state
        .store
        .call(move |s| s.read(|c| Ok((worker_list_running(c)?, target_list(c, None, now)?))))
        .await?;
    let fresh_after = now - Duration::seconds(state.config.api.ready_heartbeat_secs as i64);
    let page = Page {
        title: "Workers",
        section: Section::Workers,
        caller: &caller,
        events: None,
    };
    let content = html! {
        h2 { "Targets" }
        div.table-wrap {
            table #targets {
                thead { tr {
                    th { "Target" } th { "Status" } th { "Workers online" } th { "Pending" } th { "Running" }
                    th.wide { "Role, labels" } th.wide { "Host" } th.wide { "Last seen" }
                } }
                tbody {
                    @for target in &targets {
                        tr data-target=(target.name) {
                            td.mono { (target.name) }
                            td { (target_badge(target.status)) }
                            td { (target.agents.iter().filter(|a| a.online).count()) " of " (target.agents.len()) }
                            td { (target.pending) }
                            td { (target.running) }
                            td.wide.wrap {
                                @if let Some(role) = &target.role { (role) " " }
                                @for (name, value) in &target.labels { span.hint { (name) "=" (value) " " } }
                                @if let Some(description) = &target.description { br; (description) }
                            }
                            td.wide.wrap { (host_facts(target)) }
                            td.wide { (layout::maybe_time(target.last_seen_at)) }
                        }
                    }
                    @if targets.is_empty() { tr { td.empty colspan="8" { "No worker has served a target yet." } } }
                }
            }
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

fn target_badge(status: TargetStatus) -> Markup {
    // The operation badges' colours: online as completed, offline as failed.
    let class = match status {
        TargetStatus::Online => "completed",
        TargetStatus::Offline => "failed",
        TargetStatus::Unknown => "pending",
    };
    html! { span class={"badge " (class)} { (status.as_str()) } }
}

/// The newest host facts in one line: system, CPUs and load, memory.
fn host_facts(target: &Target) -> Markup {
    let Some(facts) = &target.facts else {
        return html! { span.hint { "—" } };
    };
    const GIB: f64 = (1u64 << 30) as f64;
    html! {
        @if let Some(os) = &facts.os { (os) }
        @if let Some(cpus) = facts.cpus { " · " (cpus) " CPUs" }
        @if let Some([one, _, _]) = facts.load { " · load " (format!("{one:.2}")) }
        @if let (Some(used), Some(total)) = (facts.memory_used_bytes, facts.memory_total_bytes) {
            " · " (format!("{:.1}/{:.1} GiB", used as f64 / GIB, total as f64 / GIB))
        }
    }
}
