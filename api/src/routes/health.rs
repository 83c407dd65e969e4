//! Probes and telemetry: `/health` (open: the process answers), `/ready`
//! (the store commits a real write, so a full disk fails it, and some
//! worker's heartbeat is fresh) and
//! `/metrics` (Prometheus text; see `metrics.rs`), and the OpenAPI document.

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::StoreError;
use opsqueue_shared::store::worker_list_running;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::{CONTENT_TYPE, Snapshot, render};
use crate::openapi::Document;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
    /// The server's clock when it answered.
    pub timestamp: DateTime<Utc>,
    /// opsqueue's version.
    pub version: String,
}

/// Liveness: the process serves requests. Needs no key.
#[utoipa::path(tag = "health", security(()), responses((status = 200, description = "Alive", body = Health)))]
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        timestamp: opsqueue_shared::time::now(),
        version: opsqueue_shared::VERSION.to_owned(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// Workers with a heartbeat within `ready_heartbeat_secs`.
    pub fresh_workers: usize,
    pub newest_heartbeat_at: Option<DateTime<Utc>>,
}

/// Readiness: the store is writable and a worker heartbeat is fresh.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; `detail` says why", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut problems = Vec::new();
    match state.store.call(|s| s.probe_write()).await {
        Ok(()) => {}
        Err(StoreError::Full) => {
            problems.push("the database's filesystem is full: no write can commit".to_owned());
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store does not take a write");
            problems.push("the store does not take a write".to_owned());
        }
    }
    let workers = state.store.call(|s| s.read(worker_list_running)).await;
    let now = opsqueue_shared::time::now();
    let fresh_after = now - chrono::Duration::seconds(state.config.api.ready_heartbeat_secs as i64);
    let (fresh_workers, newest_heartbeat_at) = match &workers {
        Ok(workers) => (
            workers
                .iter()
                .filter(|w| w.heartbeat_at >= fresh_after)
                .count(),
            workers.iter().map(|w| w.heartbeat_at).max(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: cannot read the workers");
            problems.push("cannot read the workers table".to_owned());
            (0, None)
        }
    };
    if workers.is_ok() && fresh_workers == 0 {
        problems.push(match newest_heartbeat_at {
            Some(at) => format!(
                "no worker heartbeat within {} s (newest at {})",
                state.config.api.ready_heartbeat_secs,
                opsqueue_shared::time::to_db(at)
            ),
            None => "no worker is running".to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::NotReady(problems));
    }
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready".into(),
        fresh_workers,
        newest_heartbeat_at,
    }))
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Gauges and counters", body = String, content_type = "text/plain; version=0.0.4")),
)]
#[get("/metrics")]
pub async fn prometheus_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let heartbeat_secs = state.config.api.ready_heartbeat_secs;
    let mut snapshot = state
        .store
        .call(move |s| s.read(|c| Snapshot::read(c, opsqueue_shared::time::now(), heartbeat_secs)))
        .await?;
    snapshot.store_full = state.store.is_full();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
        .body(render(&snapshot)))
}

/// The OpenAPI document of this API.
#[utoipa::path(tag = "health", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
#[get("/api/v1/openapi.json")]
pub async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.json.clone())
}
