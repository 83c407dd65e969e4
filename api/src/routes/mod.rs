//! The routes, one module per resource, and the one place they are
//! registered ([`configure`]) — the OpenAPI document lists the same
//! handlers (see `openapi.rs`).

pub mod caddy;
pub mod cloudpanel;
pub mod health;
pub mod operations;
pub mod pm2;
pub mod proxmox;
pub mod schedules;
pub mod systemd;
pub mod workers;

use actix_web::{HttpRequest, HttpResponse, get, web};
use opsqueue_shared::OperationId;

use crate::openapi;
use crate::problem::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(health::prometheus_metrics)
        .service(openapi_json)
        .service(operations::enqueue)
        .service(operations::list_operations)
        .service(operations::get_operation)
        .service(operations::operation_logs)
        .service(operations::cancel_operation)
        .service(operations::retry_operation)
        .service(schedules::create_schedule)
        .service(schedules::list_schedules)
        .service(schedules::get_schedule)
        .service(schedules::replace_schedule)
        .service(schedules::delete_schedule)
        .service(workers::list_workers)
        .service(proxmox::create_node)
        .service(proxmox::list_nodes)
        .service(proxmox::get_node)
        .service(proxmox::update_node)
        .service(proxmox::delete_node)
        .service(proxmox::test_node)
        .service(proxmox::test_connection)
        .service(proxmox::refresh_node)
        .service(proxmox::node_resources)
        .service(proxmox::resource_metrics)
        .service(proxmox::guest_action)
        .service(proxmox::all_history)
        .service(proxmox::node_history)
        .service(pm2::list_processes)
        .service(pm2::create_process)
        .service(pm2::refresh)
        .service(pm2::get_logs)
        .service(pm2::read_logs)
        .service(pm2::flush_logs)
        .service(pm2::start_process)
        .service(pm2::stop_process)
        .service(pm2::restart_process)
        .service(pm2::reload_process)
        .service(pm2::get_process)
        .service(pm2::delete_process)
        .service(cloudpanel::add_site)
        .service(cloudpanel::delete_site)
        .service(cloudpanel::add_database)
        .service(cloudpanel::add_user)
        .service(cloudpanel::delete_user)
        .service(systemd::list_units)
        .service(systemd::install_unit)
        .service(systemd::refresh_units)
        .service(systemd::get_unit)
        .service(systemd::remove_unit)
        // `…/{unit}/logs` before `…/{unit}/{verb}`, which would take it.
        .service(systemd::unit_logs)
        .service(systemd::unit_action)
        .service(caddy::caddy_list_sites)
        .service(caddy::caddy_add_site)
        .service(caddy::caddy_get_site)
        .service(caddy::caddy_remove_site)
        .service(caddy::caddy_reload)
        .service(caddy::caddy_validate)
        .service(caddy::caddy_refresh);
}

/// The OpenAPI document of this API.
#[utoipa::path(tag = "health", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
#[get("/api/v1/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi::document_json())
}

/// Every request no route matched.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

pub fn parse_operation_id(text: &str) -> Result<OperationId, ApiError> {
    text.parse()
        .map_err(|e: opsqueue_shared::operation::InvalidOperationId| {
            ApiError::InvalidId(e.to_string())
        })
}
