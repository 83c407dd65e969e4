//! The routes, one module per resource, and the one place they are
//! registered ([`configure`]) — the OpenAPI document lists the same
//! handlers (see `openapi.rs`).

pub mod health;
pub mod operations;
pub mod schedules;
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
        .service(workers::list_workers);
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
