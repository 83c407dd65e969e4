//! Migrations: every process migration as `GET /api/v1/migrations` shows
//! it (the process, from where to where, its status with `rolled_back` for
//! a failure that was undone, how many of its steps are done and which one
//! runs, the bytes moved and the downtime measured), newest first, each
//! linking to its workflow's page for the steps and compensations. The rows
//! are fetched again when a `migration.*` event arrives.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{self, Page, Section};
use super::ok;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::routes::migration::read_migrations;
use crate::state::AppState;

/// The rows' fragment, fetched again on each migration event.
pub const ROWS_PATH: &str = "/ui/migrations/rows";

/// How many migrations the page shows.
const SHOWN: u32 = 100;

pub async fn page(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let events = layout::events_url(&state, "type=migration.*").await?;
    let migrations = read_migrations(&state, SHOWN).await?;
    let page = Page {
        title: "Migrations",
        section: Section::Migrations,
        caller: &caller,
        events: Some(events),
    };
    let content = html! {
        p.hint {
            "Process migrations, newest first; start one with "
            code { "POST /api/v1/migrations" } ". "
            "A failed migration that was undone (the target cleaned, the source started again) shows "
            span.badge.rolled_back { "rolled_back" } "."
        }
        div.table-wrap {
            table #migrations data-src=(ROWS_PATH) {
                thead { tr {
                    th { "Process" } th { "From → to" } th { "Status" } th { "Steps" }
                    th.wide { "Moved" } th.wide { "Downtime" } th.wide { "Started" } th.wide { "Error" }
                } }
                tbody { (rows(&migrations)) }
            }
        }
    };
    Ok(ok(layout::shell(&state, &page, content)))
}

/// The table's rows alone (`<tr>`s), for the live refresh.
pub async fn rows_fragment(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(ok(rows(&read_migrations(&state, SHOWN).await?)))
}

fn rows(migrations: &[Value]) -> Markup {
    html! {
        @for migration in migrations {
            (row(migration))
        }
        @if migrations.is_empty() {
            tr { td.empty colspan="8" { "No migration yet." } }
        }
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn row(migration: &Value) -> Markup {
    let steps = migration["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let done = steps.iter().filter(|s| s["status"] == "completed").count();
    let running: Vec<&str> = steps
        .iter()
        .filter(|s| s["status"] == "running")
        .map(|s| text(&s["name"]))
        .collect();
    let status = text(&migration["status"]);
    let started = serde_json::from_value::<DateTime<Utc>>(migration["started_at"].clone()).ok();
    html! {
        tr id={"migration-" (text(&migration["id"]))} data-status=(status) {
            td.mono {
                a href={"/ui/workflows/" (text(&migration["workflow_id"]))} { (text(&migration["process_id"])) }
            }
            td { (text(&migration["source_server_id"])) " → " (text(&migration["target_server_id"])) }
            td { span class={"badge " (status)} { (status) } }
            td {
                progress max=(steps.len().max(1)) value=(done) {}
                " " (done) " of " (steps.len())
                @if !running.is_empty() { " " span.hint { "(" (running.join(", ")) ")" } }
            }
            td.wide { (bytes(migration["bytes_moved"].as_u64())) }
            td.wide {
                @match migration["downtime_secs"].as_f64() {
                    Some(secs) => { (format!("{secs:.1} s")) }
                    None => { "–" }
                }
            }
            td.wide { (layout::maybe_time(started)) }
            td.wide.wrap { (text(&migration["error_message"])) }
        }
    }
}

/// `12.3 MiB`, or a dash before anything moved.
fn bytes(count: Option<u64>) -> String {
    match count {
        None => "–".into(),
        Some(n) if n < 1024 => format!("{n} B"),
        Some(n) if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        Some(n) if n < 1024 * 1024 * 1024 => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        Some(n) => format!("{:.2} GiB", n as f64 / (1024.0 * 1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_counts_the_done_steps_names_the_running_one_and_sizes_what_moved() {
        let migration = json!({
            "id": "m1", "workflow_id": "w1", "process_id": "pm2:web@a",
            "source_server_id": "a", "target_server_id": "b", "status": "running",
            "started_at": "2026-12-05T10:00:00Z", "bytes_moved": 3_145_728,
            "downtime_secs": null, "error_message": null,
            "steps": [
                {"name": "inspect", "status": "completed"},
                {"name": "preflight", "status": "completed"},
                {"name": "upload", "status": "running"},
                {"name": "restore", "status": "pending"},
            ],
        });
        let html = row(&migration).into_string();
        assert!(html.contains("2 of 4"), "{html}");
        assert!(html.contains("(upload)"), "{html}");
        assert!(html.contains("3.0 MiB"), "{html}");
        assert!(html.contains(r#"href="/ui/workflows/w1""#), "{html}");
        assert_eq!(bytes(None), "–");
        assert_eq!(bytes(Some(512)), "512 B");
    }
}
