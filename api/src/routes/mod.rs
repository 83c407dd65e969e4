//! The hand-written routes, one module per resource (operations, events,
//! schedules, workers, targets, the agent protocol, probes, Proxmox nodes
//! and history), and the one list
//! that both registers and documents them ([`hand_written!`]): a handler
//! named there is served and appears in the OpenAPI document, from its own
//! `#[utoipa::path]`. The families' typed routes are data (see `typed.rs`).

pub mod agent;
pub mod artifacts;
pub mod events;
pub mod health;
pub mod migration;
pub mod operations;
pub mod pocketbase;
pub mod processes;
pub mod proxmox;
pub mod schedules;
pub mod targets;
pub mod workers;
pub mod workflows;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::openapi::Document;
use crate::problem::ApiError;

macro_rules! hand_written {
    ($($module:ident::$handler:ident),+ $(,)?) => {
        /// Registers every hand-written route.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.service($module::$handler);)+
        }

        /// The OpenAPI paths of the same routes.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$handler),+))]
        pub struct HandWritten;
    };
}

hand_written!(
    health::health,
    health::ready,
    health::prometheus_metrics,
    health::openapi_json,
    operations::enqueue,
    operations::list_operations,
    operations::get_operation,
    operations::operation_logs,
    operations::cancel_operation,
    operations::retry_operation,
    events::follow_events,
    schedules::create_schedule,
    schedules::list_schedules,
    schedules::get_schedule,
    schedules::replace_schedule,
    schedules::delete_schedule,
    workers::list_workers,
    workflows::submit_workflow,
    workflows::list_workflows,
    workflows::get_workflow,
    workflows::cancel_workflow,
    workflows::retry_workflow,
    targets::list_targets,
    targets::get_target,
    targets::describe_target,
    agent::agent_writes,
    agent::agent_claim,
    agent::agent_managed,
    artifacts::artifact_create,
    artifacts::artifact_status,
    artifacts::artifact_chunk,
    artifacts::artifact_content,
    migration::list_servers,
    migration::get_server,
    migration::list_processes,
    migration::get_process,
    processes::create_process,
    processes::change_process,
    processes::delete_process,
    migration::overview,
    migration::list_logs,
    migration::clear_logs,
    migration::create_migration,
    migration::list_migrations,
    migration::get_migration,
    proxmox::create_node,
    proxmox::list_nodes,
    proxmox::get_node,
    proxmox::update_node,
    proxmox::delete_node,
    proxmox::test_node,
    proxmox::test_connection,
    proxmox::refresh_node,
    proxmox::node_resources,
    proxmox::resource_metrics,
    proxmox::guest_action,
    proxmox::all_history,
    proxmox::node_history,
    pocketbase::system_info,
    pocketbase::system_health,
);

/// Every request no route matched: `405` with `Allow` when another method
/// is served at its path (`TRACE`, `OPTIONS`, …), else `404`.
pub async fn no_route(
    req: HttpRequest,
    document: web::Data<Document>,
) -> Result<HttpResponse, ApiError> {
    let allow = document.allowed(req.path());
    if !allow.is_empty() {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            allow,
        });
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
