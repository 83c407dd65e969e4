//! A workflow's page: its steps as a graph drawn in columns (a step stands
//! one column right of the last step it depends on, so every arrow of the
//! graph points right), each with its state, and the compensations that ran
//! in the order they ran. It reads `GET /api/v1/workflows/{id}`'s view and
//! follows the workflow's events, so states change without a reload.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use opsqueue_shared::store::{StepView, WorkflowView, workflow_get};

use super::layout::{self, Page, Section, badge, maybe_time};
use super::ok;
use crate::auth::Caller;
use crate::params::operation_id;
use crate::problem::ApiError;
use crate::state::AppState;

pub async fn page(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = operation_id(&id)?;
    let events = layout::events_url(&state, &format!("operation={id}")).await?;
    let view = state
        .store
        .call(move |s| s.read(|c| workflow_get(c, id)))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow {id}")))?;
    let title = format!(
        "workflow {}",
        view.name.as_deref().unwrap_or(&id.to_string())
    );
    let page = Page {
        title: &title,
        section: Section::Operations,
        caller: &caller,
        events: Some(events),
    };
    Ok(ok(layout::shell(&state, &page, content(&view))))
}

fn content(view: &WorkflowView) -> Markup {
    let op = &view.operation;
    html! {
        section.panel #workflow data-id=(op.id) {
            div.actions id={"op-" (op.id)} {
                (badge(op.status))
                span { "phase " strong #phase { (view.phase.as_str()) } }
                span.hint { "on failure: " (view.on_failure) }
                a href={"/ui/operations/" (op.id)} { "the workflow's operation (cancel, retry, log)" }
            }
            @if let Some(error) = &op.error {
                p.error { (error.code) ": " (error.message) }
            }
        }
        section.panel {
            h2 { "Steps" }
            div.graph {
                @for column in columns(&view.steps) {
                    div.column {
                        @for step in column { (step_card(step)) }
                    }
                }
            }
        }
        @if !view.compensations.is_empty() {
            section.panel {
                h2 { "Compensations" }
                div.table-wrap {
                    table #compensations {
                        thead { tr { th { "Undoes" } th { "Type" } th { "Status" } th { "Attempt" } th.wide { "Started" } th.wide { "Finished" } } }
                        tbody {
                            @for c in &view.compensations {
                                tr {
                                    td { a href={"/ui/operations/" (c.operation_id)} { (c.compensates) } }
                                    td.mono { (c.kind) }
                                    td { (badge(c.status)) }
                                    td { (c.attempt) " of " (c.max_attempts) }
                                    td.wide { (maybe_time(c.started_at)) }
                                    td.wide { (maybe_time(c.finished_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn step_card(step: &StepView) -> Markup {
    html! {
        a.card.step id={"op-" (step.operation_id)} href={"/ui/operations/" (step.operation_id)} data-step=(step.name) data-status=(step.status.as_str()) {
            div { (badge(step.status)) " " strong { (step.name) } }
            div.mono.hint { (step.kind) " @ " (step.target) }
            @if !step.depends_on.is_empty() {
                div.hint { "after " (step.depends_on.join(", ")) }
            }
            @if let Some(compensate) = &step.compensate {
                div.hint { "undone by " (compensate) }
            }
            @if let Some(error) = &step.error {
                div.error { (error.code) }
            }
        }
    }
}

/// The steps by column: a step with no dependency is in column 0, any
/// other one column right of the furthest step it depends on.
fn columns(steps: &[StepView]) -> Vec<Vec<&StepView>> {
    let by_name: BTreeMap<&str, &StepView> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth_of<'a>(
        step: &'a StepView,
        by_name: &BTreeMap<&str, &'a StepView>,
        depth: &mut BTreeMap<&'a str, usize>,
    ) -> usize {
        if let Some(known) = depth.get(step.name.as_str()) {
            return *known;
        }
        // The API refuses cycles, so this recursion ends.
        let own = step
            .depends_on
            .iter()
            .filter_map(|name| by_name.get(name.as_str()))
            .map(|dep| depth_of(dep, by_name, depth) + 1)
            .max()
            .unwrap_or(0);
        depth.insert(step.name.as_str(), own);
        own
    }
    let mut columns: Vec<Vec<&StepView>> = Vec::new();
    for step in steps {
        let at = depth_of(step, &by_name, &mut depth);
        if columns.len() <= at {
            columns.resize_with(at + 1, Vec::new);
        }
        columns[at].push(step);
    }
    columns
}
