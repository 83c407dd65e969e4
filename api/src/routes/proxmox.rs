//! `/api/v1/proxmox`: the Proxmox VE dashboard's backend over opsqueue.
//!
//! - Nodes (`/nodes`, `/nodes/{id}`) are rows of the store: create, list,
//!   read, partial update (PUT), delete. Their token secret is written for
//!   the worker and never answered: every node in an answer shows
//!   `"token_secret": "***"` (and a PUT that sends `"***"` back keeps it).
//! - Everything that talks to PVE is an operation (202 + the operation):
//!   `/nodes/{id}/test`, `/test-connection` (an unsaved configuration; its
//!   secret is a masked payload field), `/nodes/{id}/refresh`, and the guest
//!   actions `/nodes/{id}/resources/{vmid}/{start|stop|restart|shutdown|
//!   suspend|resume|migrate}` (`restart` is PVE's reboot).
//! - Reads (`/nodes/{id}/resources`, `…/{vmid}/metrics`) answer from the
//!   last observation, with its time; the API never calls PVE.
//! - History (`/history`, `/nodes/{id}/history`) is the operations table,
//!   with the dashboard's filters and field names.
//!
//! A guest action whose body does not say `guest_type` gets it from the
//! last observation, so the worker refuses to act on a vmid that now names
//! another kind of guest, and the history knows the resource type at once.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::Action;
use opsqueue_shared::families::proxmox::{
    CaCert, Connection, DEFAULT_PORT, DEFAULT_TIMEOUT_SECS, GuestType, Host, MAX_TIMEOUT_SECS,
    NodeId, NodeName, TokenId, TokenSecret, VmId,
};
use opsqueue_shared::secret::MASK;
use opsqueue_shared::store::Observation;
use opsqueue_shared::store::proxmox::{
    HISTORY_OPERATIONS, HistoryEntry, HistoryFilter, NodeWrite, ProxmoxNode, history_statuses,
    history_types, proxmox_guest_observation, proxmox_guest_observations, proxmox_history,
    proxmox_node_connection, proxmox_node_delete, proxmox_node_get, proxmox_node_insert,
    proxmox_node_list, proxmox_node_observation, proxmox_node_update,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::enqueue::{TypedQuery, enqueue_action, enqueue_typed};
use crate::params::target_label;
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

pub const DEFAULT_HISTORY_PAGE: usize = 100;
pub const MAX_HISTORY_PAGE: usize = 1_000;

/// A node's fields. On `POST` `name`, `host`, `token_id` and
/// `token_secret` are required; on `PUT` every field is optional and only
/// those given change. The dashboard's names `api_token_id`,
/// `api_token_secret`, `ssl_verify` and `timeout` are accepted too.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// Unique among nodes: letters, digits and `._-`, starting with a
    /// letter or digit, at most 100 bytes.
    pub name: Option<String>,
    /// IP address or DNS name of the PVE API.
    pub host: Option<String>,
    /// Default 8006.
    pub port: Option<i64>,
    /// `USER@REALM!TOKENID`.
    #[serde(alias = "api_token_id")]
    pub token_id: Option<String>,
    /// Stored for the worker, never shown again. On PUT, `"***"` keeps it.
    #[serde(alias = "api_token_secret")]
    pub token_secret: Option<String>,
    /// Verify PVE's certificate (default true): against `ca_cert` when
    /// given, else the built-in roots.
    #[serde(alias = "ssl_verify")]
    pub verify_tls: Option<bool>,
    /// A PEM certificate to trust (PVE's own is self-signed); `null` on PUT
    /// removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub ca_cert: Option<Value>,
    /// Per request, 1..=600 seconds (default 30).
    #[serde(alias = "timeout")]
    pub timeout_secs: Option<i64>,
}

/// Tells a field sent as `null` (`Some(Null)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl NodeBody {
    /// The node's name and connection: `existing` with this body's fields
    /// over it (an update), or this body alone (a create).
    fn merge(
        self,
        existing: Option<(String, Connection)>,
    ) -> Result<(String, Connection), ApiError> {
        let mut errors = Vec::new();
        let updating = existing.is_some();
        let (old_name, old) = match existing {
            Some((name, connection)) => (Some(name), Some(connection)),
            None => (None, None),
        };
        let keep_secret = updating && self.token_secret.as_deref() == Some(MASK);
        let secret_given = self.token_secret.filter(|_| !keep_secret);
        for (field, missing) in [
            ("name", self.name.is_none() && old_name.is_none()),
            ("host", self.host.is_none() && old.is_none()),
            ("token_id", self.token_id.is_none() && old.is_none()),
            ("token_secret", secret_given.is_none() && old.is_none()),
        ] {
            if missing {
                errors.push(FieldError::new(field, "is required"));
            }
        }
        // A field left out keeps its old value; one given is checked.
        let name = match (self.name, old_name) {
            (Some(name), _) => NodeName::parse(&name)
                .map(String::from)
                .map_err(|e| errors.push(FieldError::new("name", e.to_string()))),
            (None, Some(old)) => Ok(old),
            (None, None) => Err(()),
        };
        let host = match (self.host, &old) {
            (Some(host), _) => {
                Host::parse(&host).map_err(|e| errors.push(FieldError::new("host", e)))
            }
            (None, Some(old)) => Ok(old.host.clone()),
            (None, None) => Err(()),
        };
        let token_id = match (self.token_id, &old) {
            (Some(id), _) => {
                TokenId::parse(&id).map_err(|e| errors.push(FieldError::new("token_id", e)))
            }
            (None, Some(old)) => Ok(old.token_id.clone()),
            (None, None) => Err(()),
        };
        let token_secret = match (secret_given, &old) {
            (Some(secret), _) => TokenSecret::parse(&secret)
                .map_err(|e| errors.push(FieldError::new("token_secret", e))),
            (None, Some(old)) => Ok(old.token_secret.clone()),
            (None, None) => Err(()),
        };
        let port = self
            .port
            .or(old.as_ref().map(|c| i64::from(c.port)))
            .unwrap_or(i64::from(DEFAULT_PORT));
        if !(1..=65_535).contains(&port) {
            errors.push(FieldError::new("port", "must be between 1 and 65535"));
        }
        let timeout = self
            .timeout_secs
            .or(old.as_ref().map(|c| i64::from(c.timeout_secs)))
            .unwrap_or(i64::from(DEFAULT_TIMEOUT_SECS));
        if !(1..=i64::from(MAX_TIMEOUT_SECS)).contains(&timeout) {
            errors.push(FieldError::new(
                "timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
        let ca_cert = match self.ca_cert {
            None => Ok(old.as_ref().and_then(|c| c.ca_cert.clone())),
            Some(Value::Null) => Ok(None),
            Some(Value::String(pem)) => CaCert::parse(&pem)
                .map(Some)
                .map_err(|e| errors.push(FieldError::new("ca_cert", e))),
            Some(_) => {
                errors.push(FieldError::new("ca_cert", "must be a PEM string or null"));
                Err(())
            }
        };
        let verify_tls = self
            .verify_tls
            .or(old.as_ref().map(|c| c.verify_tls))
            .unwrap_or(true);
        match (name, host, token_id, token_secret, ca_cert) {
            (Ok(name), Ok(host), Ok(token_id), Ok(token_secret), Ok(ca_cert))
                if errors.is_empty() =>
            {
                Ok((
                    name,
                    Connection {
                        host,
                        port: port as u16,
                        token_id,
                        token_secret,
                        verify_tls,
                        ca_cert,
                        timeout_secs: timeout as u32,
                    },
                ))
            }
            _ => Err(ApiError::invalid_fields(errors)),
        }
    }
}

/// One PVE node's figures as the last refresh saw them (PVE's `/nodes`),
/// in the dashboard's units: percentages 0–100, bytes, seconds. An offline
/// PVE node has only its name and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct NodeMetrics {
    /// CPU in use, percent of all its cores.
    pub cpu_usage: Option<f64>,
    pub cpu_count: Option<u64>,
    /// Memory in use and in all, bytes.
    pub memory_usage: Option<u64>,
    pub memory_total: Option<u64>,
    pub memory_percentage: Option<f64>,
    /// Root filesystem in use and in all, bytes.
    pub disk_usage: Option<u64>,
    pub disk_total: Option<u64>,
    pub disk_percentage: Option<f64>,
    /// Seconds since it booted.
    pub uptime: Option<u64>,
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

impl NodeMetrics {
    /// From one entry of PVE's `/nodes` (`cpu` a fraction, `maxcpu`,
    /// `mem`, `maxmem`, `disk`, `maxdisk`, `uptime`).
    fn of_pve(entry: &Value) -> Self {
        let number = |key: &str| entry.get(key).and_then(Value::as_u64);
        let (memory_usage, memory_total) = (number("mem"), number("maxmem"));
        let (disk_usage, disk_total) = (number("disk"), number("maxdisk"));
        Self {
            cpu_usage: entry
                .get("cpu")
                .and_then(Value::as_f64)
                .map(|fraction| (fraction * 1000.0).round() / 10.0),
            cpu_count: number("maxcpu"),
            memory_usage,
            memory_total,
            memory_percentage: memory_usage
                .zip(memory_total)
                .and_then(|(u, t)| percent(u, t)),
            disk_usage,
            disk_total,
            disk_percentage: disk_usage.zip(disk_total).and_then(|(u, t)| percent(u, t)),
            uptime: number("uptime"),
        }
    }

    /// The whole endpoint (a cluster's nodes together; a standalone host's
    /// own figures): cores, memory and disk summed, CPU weighted by cores,
    /// the shortest uptime. `None` when no node reported figures.
    fn total(nodes: &[PveNode]) -> Option<Self> {
        let reporting: Vec<&NodeMetrics> = nodes
            .iter()
            .map(|n| &n.metrics)
            .filter(|m| m.cpu_count.is_some())
            .collect();
        if reporting.is_empty() {
            return None;
        }
        let sum = |get: fn(&NodeMetrics) -> Option<u64>| {
            reporting.iter().filter_map(|m| get(m)).sum::<u64>()
        };
        let cpu_count = sum(|m| m.cpu_count);
        let busy: f64 = reporting
            .iter()
            .map(|m| m.cpu_usage.unwrap_or(0.0) * m.cpu_count.unwrap_or(0) as f64)
            .sum();
        let (memory_usage, memory_total) = (sum(|m| m.memory_usage), sum(|m| m.memory_total));
        let (disk_usage, disk_total) = (sum(|m| m.disk_usage), sum(|m| m.disk_total));
        Some(Self {
            cpu_usage: (cpu_count > 0).then(|| (busy * 10.0 / cpu_count as f64).round() / 10.0),
            cpu_count: Some(cpu_count),
            memory_usage: Some(memory_usage),
            memory_total: Some(memory_total),
            memory_percentage: percent(memory_usage, memory_total),
            disk_usage: Some(disk_usage),
            disk_total: Some(disk_total),
            disk_percentage: percent(disk_usage, disk_total),
            uptime: reporting.iter().filter_map(|m| m.uptime).min(),
        })
    }
}

/// One PVE node of the registered node's cluster.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PveNode {
    /// Its PVE name (`pve1`).
    pub node: String,
    /// `online` or `offline`, as PVE says.
    pub status: String,
    #[serde(flatten)]
    pub metrics: NodeMetrics,
}

/// The node's last observed connection state and figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeStatus {
    /// `online`, `offline` or `unknown` (never tested nor refreshed).
    pub status: String,
    pub is_connected: bool,
    /// PVE's version, once connected.
    pub version: Option<String>,
    /// Why the last test or refresh could not connect.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// When this was observed (null: never).
    pub last_updated: Option<DateTime<Utc>>,
    /// The figures of the whole endpoint (every PVE node together; a
    /// standalone host's own), from the last refresh; null before one.
    #[serde(flatten)]
    pub metrics: NodeMetrics,
    /// The cluster's PVE nodes with their figures, as the last refresh saw
    /// them; null before one.
    pub nodes: Option<Vec<PveNode>>,
}

impl NodeStatus {
    fn from(observation: Option<Observation>) -> Self {
        let Some(observation) = observation else {
            return Self {
                status: "unknown".into(),
                is_connected: false,
                version: None,
                error: None,
                last_updated: None,
                metrics: NodeMetrics::default(),
                nodes: None,
            };
        };
        let data = &observation.data;
        let connected = data["connected"].as_bool().unwrap_or(false);
        let nodes: Option<Vec<PveNode>> = data["nodes"].as_array().map(|list| {
            list.iter()
                .map(|entry| PveNode {
                    node: entry["node"].as_str().unwrap_or_default().to_owned(),
                    status: entry["status"].as_str().unwrap_or("unknown").to_owned(),
                    metrics: NodeMetrics::of_pve(entry),
                })
                .collect()
        });
        Self {
            status: if connected { "online" } else { "offline" }.into(),
            is_connected: connected,
            version: data["version"].as_str().map(str::to_owned),
            error: data.get("error").filter(|e| !e.is_null()).cloned(),
            last_updated: Some(observation.observed_at),
            metrics: nodes
                .as_deref()
                .and_then(NodeMetrics::total)
                .unwrap_or_default(),
            nodes,
        }
    }
}

/// A registered node as every answer shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: ProxmoxNode,
    /// Always `"***"`: the secret is never answered.
    pub token_secret: &'static str,
    #[serde(flatten)]
    pub observed: NodeStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeView>,
}

fn node_id(text: &str) -> Result<NodeId, ApiError> {
    text.parse().map_err(ApiError::InvalidId)
}

fn node_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::NotFound(format!("no Proxmox node {id}"))
}

fn name_taken(name: &str) -> ApiError {
    ApiError::NameTaken(format!("a Proxmox node named {name:?} already exists"))
}

impl NodeView {
    fn new(node: ProxmoxNode, observed: Option<Observation>) -> Self {
        Self {
            node,
            token_secret: MASK,
            observed: NodeStatus::from(observed),
        }
    }
}

async fn view(state: &AppState, node: ProxmoxNode) -> Result<NodeView, ApiError> {
    let id = node.id;
    let observed = state
        .store
        .call(move |s| s.read(|c| proxmox_node_observation(c, id)))
        .await?;
    Ok(NodeView::new(node, observed))
}

async fn existing_node(state: &AppState, id: NodeId) -> Result<ProxmoxNode, ApiError> {
    state
        .store
        .call(move |s| s.read(|c| proxmox_node_get(c, id)))
        .await?
        .ok_or_else(|| node_not_found(id))
}

/// Enqueues `kind` about the node `id` (404 when it is not registered).
async fn enqueue_for_node(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: &TypedQuery,
    id: &str,
    kind: &str,
) -> Result<HttpResponse, ApiError> {
    let id = node_id(id)?;
    existing_node(state, id).await?;
    enqueue_typed(
        state,
        caller,
        req,
        query,
        kind,
        json!({"node": id.to_string()}),
    )
    .await
}

/// Register a Proxmox node.
#[utoipa::path(
    tag = "proxmox",
    request_body = NodeBody,
    responses(
        (status = 201, description = "Registered", body = NodeView, headers(("Location" = String))),
        (status = 409, description = "The name is taken (name_taken)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/proxmox/nodes")]
pub async fn create_node(
    state: web::Data<AppState>,
    body: web::Json<NodeBody>,
) -> Result<HttpResponse, ApiError> {
    let (name, connection) = body.into_inner().merge(None)?;
    let id = NodeId::new();
    let written = {
        let name = name.clone();
        state
            .store
            .call(move |s| {
                s.write(|tx| {
                    proxmox_node_insert(tx, id, &name, &connection, opsqueue_shared::time::now())
                })
            })
            .await?
    };
    let NodeWrite::Written(node) = written else {
        return Err(name_taken(&name));
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/proxmox/nodes/{id}")))
        .json(view(&state, node).await?))
}

/// List the registered nodes, by name, with their last observed status.
#[utoipa::path(tag = "proxmox", responses((status = 200, description = "Every node", body = NodeList)))]
#[get("/api/v1/proxmox/nodes")]
pub async fn list_nodes(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state
        .store
        .call(|s| {
            s.read(|c| {
                let nodes = proxmox_node_list(c)?;
                nodes
                    .into_iter()
                    .map(|node| {
                        let observed = proxmox_node_observation(c, node.id)?;
                        Ok(NodeView::new(node, observed))
                    })
                    .collect()
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(NodeList { items }))
}

/// Read a node.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/proxmox/nodes/{id}")]
pub async fn get_node(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let node = existing_node(&state, node_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view(&state, node).await?))
}

/// Change some of a node's fields.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id")),
    request_body = NodeBody,
    responses(
        (status = 200, description = "Updated", body = NodeView),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken (name_taken)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/api/v1/proxmox/nodes/{id}")]
pub async fn update_node(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<NodeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = node_id(&id)?;
    let existing = state
        .store
        .call(move |s| s.read(|c| proxmox_node_connection(c, id)))
        .await?
        .ok_or_else(|| node_not_found(id))?;
    let (name, connection) = body
        .into_inner()
        .merge(Some((existing.node.name, existing.connection)))?;
    let written = {
        let name = name.clone();
        state
            .store
            .call(move |s| {
                s.write(|tx| {
                    proxmox_node_update(tx, id, &name, &connection, opsqueue_shared::time::now())
                })
            })
            .await?
    };
    match written {
        NodeWrite::Written(node) => Ok(HttpResponse::Ok().json(view(&state, node).await?)),
        NodeWrite::NameTaken => Err(name_taken(&name)),
        NodeWrite::NotFound => Err(node_not_found(id)),
    }
}

/// Forget a node and what was observed of it (its history stays).
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/proxmox/nodes/{id}")]
pub async fn delete_node(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = node_id(&id)?;
    let deleted = state
        .store
        .call(move |s| s.write(|tx| proxmox_node_delete(tx, id)))
        .await?;
    if !deleted {
        return Err(node_not_found(id));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Test a node's connection: an operation whose result says `connected`
/// and PVE's `version`.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: the `proxmox.node.test` operation", body = opsqueue_shared::Operation),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/proxmox/nodes/{id}/test")]
pub async fn test_node(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_for_node(&state, &caller, &req, &query, &id, "proxmox.node.test").await
}

/// Test an unsaved configuration: an operation whose result says
/// `connected` and PVE's `version`. Its token secret is shown as `***`.
#[utoipa::path(
    tag = "proxmox",
    request_body = NodeBody,
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: the `proxmox.test_connection` operation", body = opsqueue_shared::Operation),
        (status = 422, description = "A field is missing or invalid", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/proxmox/test-connection")]
pub async fn test_connection(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<NodeBody>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    // The name is the dashboard's; a test does not need one.
    body.name.get_or_insert_with(|| "unsaved".into());
    let (_, connection) = body.merge(None)?;
    let action = Action::Proxmox(
        opsqueue_shared::families::proxmox::ProxmoxAction::TestConnection(connection),
    );
    let target = target_label(query.target.as_deref())?;
    enqueue_action(&state, &caller, &req, action, target).await
}

/// Refresh a node's observed guests (also done on the `refresh-proxmox`
/// schedule).
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: the `proxmox.refresh` operation", body = opsqueue_shared::Operation),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/proxmox/nodes/{id}/refresh")]
pub async fn refresh_node(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_for_node(&state, &caller, &req, &query, &id, "proxmox.refresh").await
}

/// A node's guests as last observed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resources {
    pub node_id: String,
    pub node: String,
    /// When the newest of these was observed (null: never refreshed).
    pub observed_at: Option<DateTime<Utc>>,
    /// QEMU VMs: vmid, name, node, status, uptime, cpu_usage, cpu_count,
    /// memory_usage/total/percentage, disk_usage/total/percentage,
    /// network_in/out, last_updated.
    #[schema(value_type = Vec<Object>)]
    pub vms: Vec<Value>,
    /// LXC containers, the same fields.
    #[schema(value_type = Vec<Object>)]
    pub containers: Vec<Value>,
}

fn with_time(observation: Observation) -> Value {
    let mut data = observation.data;
    if let Some(fields) = data.as_object_mut() {
        fields.insert("last_updated".into(), json!(observation.observed_at));
    }
    data
}

/// The node's VMs and containers, from the last observation.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id")),
    responses(
        (status = 200, description = "The guests as last observed", body = Resources),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/proxmox/nodes/{id}/resources")]
pub async fn node_resources(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = node_id(&id)?;
    let node = existing_node(&state, id).await?;
    let guests = state
        .store
        .call(move |s| s.read(|c| proxmox_guest_observations(c, id)))
        .await?;
    let observed_at = guests.iter().map(|g| g.observed_at).max();
    let (mut vms, mut containers) = (Vec::new(), Vec::new());
    for guest in guests {
        match guest.data["type"].as_str() {
            Some("lxc") => containers.push(with_time(guest)),
            _ => vms.push(with_time(guest)),
        }
    }
    Ok(HttpResponse::Ok().json(Resources {
        node_id: id.to_string(),
        node: node.name,
        observed_at,
        vms,
        containers,
    }))
}

fn vmid(text: &str) -> Result<VmId, ApiError> {
    text.parse().map_err(ApiError::InvalidId)
}

/// One guest's figures, from the last observation.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id"), ("vmid" = u32, Path, minimum = 100, maximum = 999_999_999, description = "Guest id")),
    responses(
        (status = 200, description = "The guest as last observed, with last_updated", body = Object),
        (status = 404, description = "No such node, or the guest was never observed", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/proxmox/nodes/{id}/resources/{vmid}/metrics")]
pub async fn resource_metrics(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, vm) = path.into_inner();
    let (id, vm) = (node_id(&id)?, vmid(&vm)?);
    existing_node(&state, id).await?;
    let observed = state
        .store
        .call(move |s| s.read(|c| proxmox_guest_observation(c, id, vm.get())))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "guest {vm} of node {id} was never observed; refresh the node first"
            ))
        })?;
    Ok(HttpResponse::Ok().json(with_time(observed)))
}

/// The actions of `…/resources/{vmid}/{action}`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestRoute {
    Start,
    Stop,
    /// PVE's reboot.
    Restart,
    Reboot,
    Shutdown,
    Suspend,
    Resume,
    Migrate,
}

impl GuestRoute {
    /// The operation type it enqueues.
    fn kind(self) -> &'static str {
        match self {
            GuestRoute::Start => "proxmox.guest.start",
            GuestRoute::Stop => "proxmox.guest.stop",
            GuestRoute::Restart | GuestRoute::Reboot => "proxmox.guest.reboot",
            GuestRoute::Shutdown => "proxmox.guest.shutdown",
            GuestRoute::Suspend => "proxmox.guest.suspend",
            GuestRoute::Resume => "proxmox.guest.resume",
            GuestRoute::Migrate => "proxmox.guest.migrate",
        }
    }
}

/// The route's action and the operation type it enqueues.
fn guest_kind(route: &str) -> Option<&'static str> {
    serde_json::from_value::<GuestRoute>(json!(route))
        .ok()
        .map(GuestRoute::kind)
}

/// Act on a guest: 202 + the operation. The optional JSON body takes the
/// action's own fields: stop `{force}`, shutdown `{timeout, force}`,
/// restart `{timeout}`, migrate `{target, online, restart}`, and for every
/// action `{guest_type}` (`qemu` or `lxc`; default: as last observed).
#[utoipa::path(
    tag = "proxmox",
    params(
        ("id" = uuid::Uuid, Path, description = "Node id"),
        ("vmid" = u32, Path, minimum = 100, maximum = 999_999_999, description = "Guest id"),
        ("action" = inline(GuestRoute), Path, description = "start, stop, restart (PVE's reboot), shutdown, suspend, resume or migrate"),
        TypedQuery,
    ),
    request_body(content = Object, description = "Optional: the action's fields", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: a `proxmox.guest.*` operation", body = opsqueue_shared::Operation),
        (status = 404, description = "No such node or action", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/proxmox/nodes/{id}/resources/{vmid}/{action}")]
pub async fn guest_action(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    query: web::Query<TypedQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, vm, route) = path.into_inner();
    let kind = guest_kind(&route).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no guest action {route:?}; one of start, stop, restart, shutdown, suspend, resume, migrate"
        ))
    })?;
    let (id, vm) = (node_id(&id)?, vmid(&vm)?);
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(ApiError::invalid_field("body", "must be a JSON object")),
            Err(e) => return Err(ApiError::MalformedJson(e.to_string())),
        }
    };
    existing_node(&state, id).await?;
    if !fields.contains_key("guest_type") {
        let observed = state
            .store
            .call(move |s| s.read(|c| proxmox_guest_observation(c, id, vm.get())))
            .await?;
        if let Some(guest_type) = observed
            .as_ref()
            .and_then(|o| o.data["type"].as_str())
            .and_then(GuestType::parse)
        {
            fields.insert("guest_type".into(), json!(guest_type));
        }
    }
    fields.insert("node".into(), json!(id.to_string()));
    fields.insert("vmid".into(), json!(vm.get()));
    enqueue_typed(&state, &caller, &req, &query, kind, Value::Object(fields)).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A node's name (or id).
    pub node: Option<String>,
    /// `vm`, `lxc` or `node`.
    #[param(pattern = "^(vm|lxc|node)$")]
    pub resource_type: Option<String>,
    /// `start`, `stop`, `restart`, `shutdown`, `suspend`, `resume`,
    /// `migrate`, `test` or `refresh`.
    #[param(pattern = "^(start|stop|restart|shutdown|suspend|resume|migrate|test|refresh)$")]
    pub operation_type: Option<String>,
    /// `success`, `failed` or `in_progress`.
    #[param(pattern = "^(success|failed|in_progress)$")]
    pub status: Option<String>,
    /// Default 100, at most 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Entries to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub offset: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The history's documented filters are the ones it takes.
    #[test]
    fn the_history_query_documents_the_filters_it_takes() {
        let names: Vec<&str> = HISTORY_OPERATIONS.iter().map(|(n, _)| *n).collect();
        let params = <HistoryQuery as IntoParams>::into_params(|| None);
        let param = |name: &str| {
            let p = params.iter().find(|p| p.name == name).unwrap();
            serde_json::to_value(p).unwrap()["schema"].clone()
        };
        assert_eq!(
            param("operation_type")["pattern"],
            format!("^({})$", names.join("|"))
        );
        assert_eq!(param("limit")["maximum"], MAX_HISTORY_PAGE);
        for status in ["success", "failed", "in_progress"] {
            assert!(history_statuses(status).is_some(), "{status}");
        }
    }
}

/// One page of the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub operations: Vec<HistoryEntry>,
    /// How many entries match the filters in all.
    pub total: i64,
    pub limit: usize,
    pub offset: usize,
    #[schema(value_type = Object)]
    pub filters: Value,
}

impl HistoryQuery {
    fn filter(&self, node: Option<String>) -> Result<HistoryFilter, ApiError> {
        let refuse = |field: &str, allowed: &str| {
            ApiError::InvalidQuery(format!("{field} must be one of {allowed}"))
        };
        let resource_type = match self.resource_type.as_deref() {
            None => None,
            Some(t @ ("vm" | "lxc" | "node")) => Some(t.to_owned()),
            Some(_) => return Err(refuse("resource_type", "vm, lxc, node")),
        };
        let types = match self.operation_type.as_deref() {
            None => None,
            Some(op) => Some(history_types(op).map(<[_]>::to_vec).ok_or_else(|| {
                let names: Vec<&str> = HISTORY_OPERATIONS.iter().map(|(n, _)| *n).collect();
                refuse("operation_type", &names.join(", "))
            })?),
        };
        let statuses = match self.status.as_deref() {
            None => None,
            Some(s) => Some(
                history_statuses(s)
                    .map(<[_]>::to_vec)
                    .ok_or_else(|| refuse("status", "success, failed, in_progress"))?,
            ),
        };
        let limit = self.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
        if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_HISTORY_PAGE}"
            )));
        }
        Ok(HistoryFilter {
            node: node.or_else(|| self.node.clone()),
            resource_type,
            types,
            statuses,
            limit,
            offset: self.offset.unwrap_or(0) as usize,
        })
    }
}

async fn history(
    state: &AppState,
    query: &HistoryQuery,
    node: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter(node)?;
    let (operations, total) = {
        let filter = filter.clone();
        state
            .store
            .call(move |s| s.read(|c| proxmox_history(c, &filter)))
            .await?
    };
    Ok(HttpResponse::Ok().json(HistoryPage {
        operations,
        total,
        limit: filter.limit,
        offset: filter.offset,
        filters: json!({
            "node": filter.node,
            "resource_type": query.resource_type,
            "operation_type": query.operation_type,
            "status": query.status,
        }),
    }))
}

/// The proxmox operations, newest first, with the dashboard's filters.
#[utoipa::path(
    tag = "proxmox",
    params(HistoryQuery),
    responses(
        (status = 200, description = "One page of the history", body = HistoryPage),
        (status = 400, description = "A filter has an unknown value", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/proxmox/history")]
pub async fn all_history(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    history(&state, &query, None).await
}

/// One node's proxmox operations, newest first.
#[utoipa::path(
    tag = "proxmox",
    params(("id" = uuid::Uuid, Path, description = "Node id"), HistoryQuery),
    responses(
        (status = 200, description = "One page of the node's history", body = HistoryPage),
        (status = 400, description = "A filter has an unknown value", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/proxmox/nodes/{id}/history")]
pub async fn node_history(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    // A deleted node's history stays readable by its id.
    let id = node_id(&id)?;
    history(&state, &query, Some(id.to_string())).await
}
