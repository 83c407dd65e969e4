//! `/api/v1/workers`: the worker processes registered and not stopped, as
//! they last reported themselves (newest heartbeat first).

use actix_web::{HttpResponse, get, web};
use opsqueue_shared::store::{WorkerRow, worker_list_running};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    pub items: Vec<WorkerRow>,
}

/// List running workers.
#[utoipa::path(tag = "workers", responses((status = 200, description = "Workers not stopped", body = WorkerList)))]
#[get("/api/v1/workers")]
pub async fn list_workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.call(|s| s.read(worker_list_running)).await?;
    Ok(HttpResponse::Ok().json(WorkerList { items }))
}
