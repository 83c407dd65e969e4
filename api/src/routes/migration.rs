//! The process migration system's REST API under `/api/v1/`: servers (the
//! fleet's targets), processes (the workloads opsqueue manages on them),
//! migrations (each a workflow, see `families/migration/`), the overview
//! and the system log. Shapes follow the seed's so its dashboard's calls
//! map one to one; every id in a path is parsed (`422` when hostile).
//!
//! `POST /api/v1/migrations` reads the app's record on the source (its
//! declared `state_dir`), builds the workflow and stores it with the
//! migration's row in one transaction, refused with `409
//! migration_active` while another migration of the same process is
//! pending or running.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::families::migration::{Pm2Migration, ProcessId, ProcessKind};
use opsqueue_shared::families::pm2::ProcessName;
use opsqueue_shared::names::{AbsolutePath, Label, Port};
use opsqueue_shared::store::{
    Counters, Inserted, MigrationInserted, MigrationRow, ProcessRow, Scope, Target, WorkflowView,
    counters_apply, family_label, managed_list, migration_counts, migration_get, migration_insert,
    migration_list, names, process_list, system_log_clear, system_log_list, target_created,
    target_get, target_list, workflow_get,
};
use opsqueue_shared::wake::Role;
use opsqueue_shared::{OperationId, Status, time};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::enqueue::resolve_source;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn invalid_id(field: &str, e: impl ToString) -> ApiError {
    ApiError::invalid_field(field, e.to_string())
}

fn server_id(text: &str) -> Result<Label, ApiError> {
    Label::parse(text).map_err(|e| invalid_id("id", e))
}

/// `"2.1GB"`, as the seed writes memory.
fn gigabytes(bytes: u64) -> String {
    format!("{:.1}GB", bytes as f64 / 1e9)
}

/// A target in the seed's shape.
fn server(target: &Target, created: Option<&DateTime<Utc>>, process_count: usize) -> Value {
    let facts = target.facts.as_ref();
    let cpu = facts.and_then(|f| Some(f.load?[0] / f64::from(f.cpus?.max(1)) * 100.0));
    json!({
        "id": target.name,
        "name": target.name,
        "host": target.agents.first().map(|a| a.host.as_str()),
        "port": null,
        "status": target.status,
        "cpu_usage": cpu.map(|c| (c * 10.0).round() / 10.0),
        "memory_usage": facts.and_then(|f| f.memory_used_bytes).map(gigabytes),
        "memory_used_bytes": facts.and_then(|f| f.memory_used_bytes),
        "process_count": process_count,
        "role": target.role,
        "created_at": created.or(target.status_changed_at.as_ref()),
        "last_seen_at": target.last_seen_at,
        "agents": target.agents.len(),
    })
}

fn kinds() -> Vec<(&'static str, &'static str)> {
    ProcessKind::ALL.iter().map(|k| k.managed()).collect()
}

fn kind_of(family: &str) -> Option<ProcessKind> {
    ProcessKind::ALL
        .into_iter()
        .find(|k| k.managed().0 == family)
}

/// The status a process was last seen in (`running` for pm2's `online`).
fn process_status(row: &ProcessRow) -> String {
    let Some(observed) = &row.observed else {
        return "unknown".into();
    };
    let raw = observed["status"]
        .as_str()
        .or_else(|| observed["active_state"].as_str())
        .or_else(|| observed["state"].as_str())
        .unwrap_or("unknown");
    match raw {
        "online" | "active" => "running".into(),
        other => other.to_owned(),
    }
}

fn process(row: &ProcessRow, servers: &BTreeMap<String, &Target>) -> Value {
    let kind = kind_of(&row.family).expect("process_list reads the kinds it is given");
    let id = ProcessId::new(kind, &row.name, &row.target)
        .map(|id| id.to_string())
        .unwrap_or_else(|_| format!("{}:{}@{}", kind.as_str(), row.name, row.target));
    let state_dir = match kind {
        ProcessKind::Pocketbase => row.spec["data_dir"].as_str().map(str::to_owned),
        _ => row.spec["state_dir"].as_str().map(str::to_owned),
    };
    let server = servers.get(&row.target);
    json!({
        "id": id,
        "kind": kind.as_str(),
        "type": kind.as_str(),
        "name": row.name,
        "status": process_status(row),
        "server_id": row.target,
        "state_dir": state_dir,
        "state_data": null,
        "spec": row.spec,
        "observed": row.observed,
        "observed_at": row.observed_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "server": server.map(|t| json!({
            "id": t.name, "name": t.name,
            "host": t.agents.first().map(|a| a.host.as_str()), "status": t.status,
        })),
    })
}

/// The fleet's targets and the processes on them.
async fn fleet(
    state: &AppState,
    only: Option<(String, &'static str, String)>,
) -> Result<
    (
        Vec<Target>,
        BTreeMap<String, DateTime<Utc>>,
        Vec<ProcessRow>,
    ),
    ApiError,
> {
    Ok(state
        .store
        .call(move |s| {
            s.read(|c| {
                let targets = target_list(c, None, time::now())?;
                let created = target_created(c)?;
                let only = only.as_ref().map(|(t, f, n)| (t.as_str(), *f, n.as_str()));
                Ok((targets, created, process_list(c, &kinds(), only)?))
            })
        })
        .await?)
}

/// List servers.
#[utoipa::path(
    tag = "migration",
    responses((status = 200, description = "Every target in the seed's shape: `[{id, name, host, status, cpu_usage, memory_usage, process_count, role, created_at}]`", body = Vec<Object>)),
)]
#[get("/api/v1/servers")]
pub async fn list_servers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (targets, created, processes) = fleet(&state, None).await?;
    let servers: Vec<Value> = targets
        .iter()
        .map(|t| {
            let count = processes.iter().filter(|p| p.target == t.name).count();
            server(t, created.get(&t.name), count)
        })
        .collect();
    Ok(HttpResponse::Ok().json(servers))
}

/// Read one server.
#[utoipa::path(
    tag = "migration",
    params(("id" = inline(Label), Path, description = "The target's name")),
    responses(
        (status = 200, description = "The server", body = Object),
        (status = 404, description = "No such server", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a target's name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/servers/{id}")]
pub async fn get_server(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&id)?;
    let (targets, created, processes) = fleet(&state, None).await?;
    let target = targets
        .iter()
        .find(|t| t.name == id.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no server {id}")))?;
    let count = processes.iter().filter(|p| p.target == target.name).count();
    Ok(HttpResponse::Ok().json(server(target, created.get(&target.name), count)))
}

/// A process id as the OpenAPI document states it.
pub struct ProcessIdText;

impl utoipa::PartialSchema for ProcessIdText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        ProcessId::schema()
    }
}

impl utoipa::ToSchema for ProcessIdText {}

/// List processes.
#[utoipa::path(
    tag = "migration",
    responses((status = 200, description = "Every workload opsqueue manages on every target (pm2 apps, PocketBase services, systemd units) with its last observed status: `[{id, kind, name, status, server_id, state_dir, spec, server}]`", body = Vec<Object>)),
)]
#[get("/api/v1/processes")]
pub async fn list_processes(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (targets, _, processes) = fleet(&state, None).await?;
    let servers: BTreeMap<String, &Target> = targets.iter().map(|t| (t.name.clone(), t)).collect();
    let items: Vec<Value> = processes.iter().map(|p| process(p, &servers)).collect();
    Ok(HttpResponse::Ok().json(items))
}

/// Read one process.
#[utoipa::path(
    tag = "migration",
    params(("id" = inline(ProcessIdText), Path, description = "`<kind>:<name>@<server>`, e.g. `pm2:web@server-a`")),
    responses(
        (status = 200, description = "The process", body = Object),
        (status = 404, description = "opsqueue manages no such process", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a process id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/processes/{id}")]
pub async fn get_process(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = ProcessId::parse(&id).map_err(|e| invalid_id("id", e))?;
    let only = (
        id.server().to_owned(),
        id.kind().managed().0,
        id.name().to_owned(),
    );
    let (targets, _, processes) = fleet(&state, Some(only)).await?;
    let servers: BTreeMap<String, &Target> = targets.iter().map(|t| (t.name.clone(), t)).collect();
    let found = processes
        .first()
        .ok_or_else(|| ApiError::NotFound(format!("opsqueue manages no process {id}")))?;
    Ok(HttpResponse::Ok().json(process(found, &servers)))
}

/// The overview.
#[utoipa::path(
    tag = "migration",
    responses((status = 200, description = "`{totalProcesses, activeMigrations, serverNodes, successRate}`; successRate is completed over ended migrations (`n/a` before any ended)", body = Object)),
)]
#[get("/api/v1/overview")]
pub async fn overview(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (targets, _, processes) = fleet(&state, None).await?;
    let (active, completed, failed) = state.store.call(|s| s.read(migration_counts)).await?;
    let ended = completed + failed;
    let rate = if ended == 0 {
        "n/a".to_owned()
    } else {
        format!("{:.1}%", completed as f64 * 100.0 / ended as f64)
    };
    Ok(HttpResponse::Ok().json(json!({
        "totalProcesses": processes.len(),
        "activeMigrations": active,
        "serverNodes": targets.len(),
        "successRate": rate,
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many, newest first: default 100, 1 to 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl LimitQuery {
    fn get(&self, default: u32) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(limit @ 1..=1000) => Ok(limit),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                "must be between 1 and 1000",
            )),
        }
    }
}

/// Read the system log.
#[utoipa::path(
    tag = "migration",
    params(LimitQuery),
    responses(
        (status = 200, description = "`[{id, level, message, component, timestamp}]`, newest first: migrations started, completed, failed and rolled back; servers online and offline", body = Vec<Object>),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/logs")]
pub async fn list_logs(
    state: web::Data<AppState>,
    query: web::Query<LimitQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.get(100)?;
    let lines = state
        .store
        .call(move |s| s.read(|c| system_log_list(c, limit)))
        .await?;
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            json!({"id": format!("log-{}", l.id), "level": l.level, "message": l.message,
                   "component": l.component, "timestamp": l.at})
        })
        .collect();
    Ok(HttpResponse::Ok().json(lines))
}

/// Clear the system log (admin).
#[utoipa::path(
    tag = "migration",
    responses(
        (status = 200, description = "`{deleted}`", body = Object),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/logs")]
pub async fn clear_logs(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    if !caller.key().allows(Scope::Admin) {
        return Err(ApiError::Forbidden(
            "clearing the system log needs an admin key".into(),
        ));
    }
    let deleted = state
        .store
        .call(|s| s.write(|tx| system_log_clear(tx)))
        .await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": deleted})))
}

/// `POST /api/v1/migrations`, as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationBody {
    /// `<kind>:<name>@<server>`; only pm2 apps for now.
    #[schema(schema_with = ProcessId::schema)]
    pub process_id: String,
    #[schema(schema_with = Label::schema)]
    pub source_server_id: String,
    #[schema(schema_with = Label::schema)]
    pub target_server_id: String,
    /// The port the app listens on: checked free on the target before, and
    /// answering there after.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    /// Switching a Caddy site to the target: not implemented yet (`422`).
    #[schema(value_type = Option<Object>)]
    pub switch_proxy: Option<Value>,
}

/// The migration's view: its row, its workflow's state, its steps, the
/// bytes moved and the downtime.
fn migration_view(row: &MigrationRow, workflow: Option<&WorkflowView>) -> Value {
    let step = |name: &str| workflow.and_then(|w| w.steps.iter().find(|s| s.name == name));
    let operation = workflow.map(|w| &w.operation);
    let status = match operation.map(|o| o.status) {
        Some(Status::Failed)
            if operation
                .and_then(|o| o.result.as_ref())
                .is_some_and(|r| r["compensated"] == true) =>
        {
            "rolled_back".to_owned()
        }
        Some(status) => status.as_str().to_owned(),
        None => "unknown".to_owned(),
    };
    let downtime = match (step("stop"), step("health")) {
        (Some(stop), Some(health)) if health.status == Status::Completed => stop
            .started_at
            .zip(health.finished_at)
            .map(|(from, to)| (to - from).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let error = operation.and_then(|o| o.error.as_ref()).map(|e| {
        let failed = workflow.and_then(|w| {
            w.steps
                .iter()
                .find(|s| s.status == Status::Failed)
                .and_then(|s| {
                    s.error
                        .as_ref()
                        .map(|e| format!("{}: {}", s.name, e.message))
                })
        });
        failed.unwrap_or_else(|| e.message.clone())
    });
    json!({
        "id": row.id,
        "workflow_id": row.workflow_id,
        "process_id": row.process_id,
        "source_server_id": row.source,
        "target_server_id": row.target,
        "status": status,
        "phase": workflow.map(|w| w.phase),
        "started_at": operation.and_then(|o| o.started_at).unwrap_or(row.created_at),
        "completed_at": operation.and_then(|o| o.finished_at),
        "error_message": error,
        "bytes_moved": step("upload").and_then(|s| s.result.as_ref()).and_then(|r| r["bytes"].as_u64()),
        "downtime_secs": downtime,
        "steps": workflow.map(|w| &w.steps),
        "compensations": workflow.map(|w| &w.compensations),
        "process": {"id": row.process_id, "type": row.kind},
        "source_server": {"id": row.source, "name": row.source},
        "target_server": {"id": row.target, "name": row.target},
        "created_at": row.created_at,
    })
}

fn location(id: &str) -> String {
    format!("/api/v1/migrations/{id}")
}

/// Start a migration.
///
/// Moves a pm2 app and its declared `state_dir` from its server to
/// another: preflight on the target, a warm copy on the source, stop, a
/// final consistent copy (SQLite through `VACUUM INTO`), upload through the
/// API host, restore verified against the source's sha256 manifest, start
/// and health check on the target. A failure undoes what was done: the
/// target's copy and app removed, the source started again.
#[utoipa::path(
    tag = "migration",
    request_body = MigrationBody,
    responses(
        (status = 202, description = "The migration (`Location: /api/v1/migrations/{id}`)", body = Object),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "opsqueue manages no such process, or no such target server", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`migration_active`: another migration of this process is pending or running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A hostile or wrong id, a process without a state_dir, a kind not migratable yet", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/migrations")]
pub async fn create_migration(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<MigrationBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let process = ProcessId::parse(&body.process_id).map_err(|e| invalid_id("process_id", e))?;
    let source =
        Label::parse(&body.source_server_id).map_err(|e| invalid_id("source_server_id", e))?;
    let target =
        Label::parse(&body.target_server_id).map_err(|e| invalid_id("target_server_id", e))?;
    let port = body
        .port
        .map(Port::parse)
        .transpose()
        .map_err(|e| invalid_id("port", e))?;
    if body.switch_proxy.is_some() {
        return Err(ApiError::invalid_field(
            "switch_proxy",
            "switching a proxy is not implemented yet",
        ));
    }
    if process.server() != source.as_str() {
        return Err(ApiError::invalid_field(
            "source_server_id",
            format!("process {process} runs on {}", process.server()),
        ));
    }
    if source == target {
        return Err(ApiError::invalid_field(
            "target_server_id",
            "the target must be another server than the source",
        ));
    }
    if process.kind() != ProcessKind::Pm2 {
        return Err(ApiError::invalid_field(
            "process_id",
            "only pm2 apps can be migrated yet",
        ));
    }
    let (family, kind) = process.kind().managed();
    let (lookup_source, lookup_target, name) = (
        source.to_string(),
        target.to_string(),
        process.name().to_owned(),
    );
    let (record, target_known) = state
        .store
        .call(move |s| {
            s.read(|c| {
                let record = managed_list(c, &lookup_source, family, kind, Some(&name))?;
                let target = target_get(c, &lookup_target, time::now())?;
                Ok((record.into_iter().next(), target.is_some()))
            })
        })
        .await?;
    let record = record
        .ok_or_else(|| ApiError::NotFound(format!("opsqueue manages no process {process}")))?;
    if !target_known {
        return Err(ApiError::NotFound(format!("no server {target}")));
    }
    let state_dir = record.spec["state_dir"]
        .as_str()
        .ok_or_else(|| {
            ApiError::invalid_field(
                "process_id",
                format!("{process} declares no state_dir: start it with one (pm2.start state_dir)"),
            )
        })
        .and_then(|dir| {
            AbsolutePath::parse(dir)
                .map_err(|e| ApiError::internal(format!("stored state_dir: {e}")))
        })?;
    let migration = OperationId::new();
    let plan = Pm2Migration {
        migration,
        name: ProcessName::parse(process.name()).map_err(|e| invalid_id("process_id", e))?,
        source: source.clone(),
        target: target.clone(),
        state_dir,
        port,
        health_timeout_secs: state.config.migration.health_timeout_secs as i64
            + state.config.migration.settle_secs as i64
            + 60,
    };
    let request = plan
        .plan()
        .parse(resolve_source(None, caller.key())?)
        .map_err(ApiError::refused)?;
    let refused = request.check_config(&state.config);
    if !refused.is_empty() {
        return Err(ApiError::refused(refused));
    }
    let new = request.prepare(time::now());
    let row = MigrationRow::new(migration, &process, target.as_str(), &new, time::now());
    let families: Vec<&'static str> = request
        .steps
        .iter()
        .map(|step| step.request.action.family())
        .collect();
    let stored = row.clone();
    let (inserted, view) = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let inserted = migration_insert(tx, &stored, &new)?;
                if let MigrationInserted::Created(created) = &inserted
                    && let Inserted::Created(_) = created.as_ref()
                {
                    let mut counters = Counters::default();
                    counters.add(names::ENQUEUED, &family_label("workflow"), 1.0);
                    for family in &families {
                        counters.add(names::ENQUEUED, &family_label(family), 1.0);
                    }
                    counters_apply(tx, &counters)?;
                }
                Ok((inserted, workflow_get(tx, new.parent.id)?))
            })
        })
        .await?;
    if let MigrationInserted::Busy(active) = inserted {
        return Err(ApiError::Conflict(
            "migration_active",
            format!("migration {active} of {process} is still pending or running"),
        ));
    }
    state.waker.wake(Role::Worker);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location(&row.id)))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(migration_view(&row, view.as_ref())))
}

async fn read_migration(state: &AppState, row: MigrationRow) -> Result<Value, ApiError> {
    let workflow: OperationId = row
        .workflow_id
        .parse()
        .map_err(|e| ApiError::internal(format!("stored workflow id: {e}")))?;
    let view = state
        .store
        .call(move |s| s.read(|c| workflow_get(c, workflow)))
        .await?;
    Ok(migration_view(&row, view.as_ref()))
}

/// List migrations.
#[utoipa::path(
    tag = "migration",
    params(LimitQuery),
    responses(
        (status = 200, description = "Newest first (default 100)", body = Vec<Object>),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/migrations")]
pub async fn list_migrations(
    state: web::Data<AppState>,
    query: web::Query<LimitQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.get(100)?;
    Ok(HttpResponse::Ok().json(read_migrations(&state, limit).await?))
}

/// The newest `limit` migrations as `GET /api/v1/migrations` answers them
/// (the dashboard's migrations page shows the same).
pub(crate) async fn read_migrations(state: &AppState, limit: u32) -> Result<Vec<Value>, ApiError> {
    let rows = state
        .store
        .call(move |s| s.read(|c| migration_list(c, limit)))
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(read_migration(state, row).await?);
    }
    Ok(items)
}

/// Read one migration.
#[utoipa::path(
    tag = "migration",
    params(("id" = uuid::Uuid, Path, description = "The migration's id")),
    responses(
        (status = 200, description = "`{id, process_id, source_server_id, target_server_id, status, started_at, completed_at, error_message, steps, compensations, bytes_moved, downtime_secs}`; status `rolled_back` when it failed and every compensation completed", body = Object),
        (status = 404, description = "No such migration", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a migration id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/migrations/{id}")]
pub async fn get_migration(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: OperationId = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "a migration id is a UUID"))?;
    let key = id.to_string();
    let row = state
        .store
        .call(move |s| s.read(|c| migration_get(c, &key)))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))?;
    Ok(HttpResponse::Ok().json(read_migration(&state, row).await?))
}
