//! SQL for the Proxmox VE family: registered nodes (`proxmox_nodes`), the
//! reads of their observed guests, and their operation history.
//!
//! Secrets: [`ProxmoxNode`], which every API answer is built from, has no
//! token secret at all; only [`proxmox_node_connection`] reads it, for the
//! worker (and for the API's partial update, which writes it back without
//! showing it).
//!
//! Observations: a node's state is kind [`NODE_KIND`] named by the node id;
//! its guests are kind `guests:<node id>` named by vmid, so a refresh's
//! `ObservedAll` replaces one node's guests and no other's. Reads here
//! ignore the observing worker's target: a node is the same whoever saw it.
//!
//! History is the `operations` table itself, filtered to the family, with
//! the dashboard's filters and names (see [`HistoryFilter`]).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, named_params};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::state::{OBSERVATION_COLUMNS, observation_from_row};
use super::{Observation, Result, StoreError, json_column, time_column};
use crate::families::proxmox::{
    CaCert, Connection as PveConnection, Host, NodeId, TokenId, TokenSecret,
};
use crate::time::{Timestamp, to_db};

/// Observation kind of a node's own state (connected, version, …).
pub const NODE_KIND: &str = "node";
pub const FAMILY: &str = crate::families::proxmox::FAMILY;

/// Observation kind of one node's guests.
pub fn guests_kind(node: NodeId) -> String {
    format!("guests:{node}")
}

/// A registered node as the API shows it: never its token secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProxmoxNode {
    #[schema(value_type = String, format = Uuid)]
    pub id: NodeId,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub token_id: String,
    pub verify_tls: bool,
    /// PEM, trusted instead of the system roots.
    pub ca_cert: Option<String>,
    pub timeout_secs: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A node with what it takes to reach it, secret included: for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConnection {
    pub node: ProxmoxNode,
    pub connection: PveConnection,
}

/// What an insert or update did.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeWrite {
    Written(ProxmoxNode),
    /// Another node has this name.
    NameTaken,
    NotFound,
}

const COLUMNS: &str =
    "id, name, host, port, token_id, verify_tls, ca_cert, timeout_secs, created_at, updated_at";

fn corrupt(id: &str, what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("proxmox node {id}: bad {what}: {why}"))
}

fn node_from_row(row: &rusqlite::Row) -> Result<ProxmoxNode> {
    let id: String = row.get(0)?;
    Ok(ProxmoxNode {
        id: id.parse().map_err(|e| corrupt(&id, "id", e))?,
        name: row.get(1)?,
        host: row.get(2)?,
        port: row.get(3)?,
        token_id: row.get(4)?,
        verify_tls: row.get(5)?,
        ca_cert: row.get(6)?,
        timeout_secs: row.get(7)?,
        created_at: time_column(Some(row.get(8)?), "created_at")?.expect("some"),
        updated_at: time_column(Some(row.get(9)?), "updated_at")?.expect("some"),
    })
}

fn is_name_taken(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, Some(message))
        if e.code == ErrorCode::ConstraintViolation && message.contains("proxmox_nodes.name"))
}

/// Runs an insert or update of a node that binds its name and connection
/// and returns the row written.
fn node_write(
    conn: &Connection,
    sql: &str,
    id: NodeId,
    name: &str,
    connection: &PveConnection,
    now: Timestamp,
) -> rusqlite::Result<Result<ProxmoxNode>> {
    conn.prepare_cached(sql)?.query_row(
        named_params! {
            ":id": id.to_string(), ":name": name, ":host": connection.host.as_str(),
            ":port": connection.port, ":token_id": connection.token_id.as_str(),
            ":secret": connection.token_secret.expose(), ":verify_tls": connection.verify_tls,
            ":ca_cert": connection.ca_cert.as_ref().map(CaCert::as_str),
            ":timeout_secs": connection.timeout_secs, ":now": to_db(now),
        },
        |row| Ok(node_from_row(row)),
    )
}

/// Registers a node; `NameTaken` if another has this name.
pub fn proxmox_node_insert(
    conn: &Connection,
    id: NodeId,
    name: &str,
    connection: &PveConnection,
    now: Timestamp,
) -> Result<NodeWrite> {
    let sql = format!(
        "INSERT INTO proxmox_nodes (id, name, host, port, token_id, token_secret, verify_tls,
             ca_cert, timeout_secs, created_at, updated_at)
         VALUES (:id, :name, :host, :port, :token_id, :secret, :verify_tls, :ca_cert,
             :timeout_secs, :now, :now)
         RETURNING {COLUMNS}"
    );
    match node_write(conn, &sql, id, name, connection, now) {
        Ok(node) => Ok(NodeWrite::Written(node?)),
        Err(e) if is_name_taken(&e) => Ok(NodeWrite::NameTaken),
        Err(e) => Err(e.into()),
    }
}

pub fn proxmox_node_get(conn: &Connection, id: NodeId) -> Result<Option<ProxmoxNode>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM proxmox_nodes WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id.to_string()])?;
    rows.next()?.map(node_from_row).transpose()
}

/// Every registered node, by name.
pub fn proxmox_node_list(conn: &Connection) -> Result<Vec<ProxmoxNode>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM proxmox_nodes ORDER BY name, id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut nodes = Vec::new();
    while let Some(row) = rows.next()? {
        nodes.push(node_from_row(row)?);
    }
    Ok(nodes)
}

/// A node with its connection, token secret included. For the worker, and
/// for an update that keeps what the caller did not change; never for an
/// answer.
pub fn proxmox_node_connection(conn: &Connection, id: NodeId) -> Result<Option<NodeConnection>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, token_secret FROM proxmox_nodes WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id.to_string()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let node = node_from_row(row)?;
    let key = node.id.to_string();
    let secret: String = row.get(10)?;
    let connection = PveConnection {
        host: Host::parse(&node.host).map_err(|e| corrupt(&key, "host", e))?,
        port: node.port,
        token_id: TokenId::parse(&node.token_id).map_err(|e| corrupt(&key, "token id", e))?,
        token_secret: TokenSecret::parse(&secret).map_err(|e| corrupt(&key, "token secret", e))?,
        verify_tls: node.verify_tls,
        ca_cert: node
            .ca_cert
            .as_deref()
            .map(CaCert::parse)
            .transpose()
            .map_err(|e| corrupt(&key, "ca_cert", e))?,
        timeout_secs: node.timeout_secs,
    };
    Ok(Some(NodeConnection { node, connection }))
}

/// Replaces a node's name and connection (the API merges a partial update
/// first).
pub fn proxmox_node_update(
    conn: &Connection,
    id: NodeId,
    name: &str,
    connection: &PveConnection,
    now: Timestamp,
) -> Result<NodeWrite> {
    let sql = format!(
        "UPDATE proxmox_nodes SET name = :name, host = :host, port = :port,
             token_id = :token_id, token_secret = :secret, verify_tls = :verify_tls,
             ca_cert = :ca_cert, timeout_secs = :timeout_secs, updated_at = :now
         WHERE id = :id
         RETURNING {COLUMNS}"
    );
    match node_write(conn, &sql, id, name, connection, now) {
        Ok(node) => Ok(NodeWrite::Written(node?)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(NodeWrite::NotFound),
        Err(e) if is_name_taken(&e) => Ok(NodeWrite::NameTaken),
        Err(e) => Err(e.into()),
    }
}

/// Forgets a node and what was observed of it; false if there was none.
/// Its operations stay, as history.
pub fn proxmox_node_delete(conn: &Connection, id: NodeId) -> Result<bool> {
    let key = id.to_string();
    let deleted = conn
        .prepare_cached("DELETE FROM proxmox_nodes WHERE id = ?1")?
        .execute([&key])?;
    conn.prepare_cached(
        "DELETE FROM observations WHERE family = ?1 AND ((kind = ?2 AND name = ?3) OR kind = ?4)",
    )?
    .execute([FAMILY, NODE_KIND, &key, &guests_kind(id)])?;
    Ok(deleted == 1)
}

fn observations(conn: &Connection, kind: &str, name: Option<&str>) -> Result<Vec<Observation>> {
    // The newest observation of each name, whichever worker target made it.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OBSERVATION_COLUMNS} FROM observations o
         WHERE family = :family AND kind = :kind AND (:name IS NULL OR name = :name)
           AND observed_at = (SELECT max(observed_at) FROM observations n
                              WHERE n.family = o.family AND n.kind = o.kind AND n.name = o.name)"
    ))?;
    let mut rows = stmt.query(named_params! {":family": FAMILY, ":kind": kind, ":name": name})?;
    let mut found: Vec<Observation> = Vec::new();
    while let Some(row) = rows.next()? {
        let observation = observation_from_row(row)?;
        if !found.iter().any(|o| o.name == observation.name) {
            found.push(observation);
        }
    }
    Ok(found)
}

/// The last observed guests of a node, by vmid.
pub fn proxmox_guest_observations(conn: &Connection, node: NodeId) -> Result<Vec<Observation>> {
    let mut guests = observations(conn, &guests_kind(node), None)?;
    guests.sort_by_key(|o| o.name.parse::<u64>().unwrap_or(u64::MAX));
    Ok(guests)
}

/// The last observation of one guest of a node.
pub fn proxmox_guest_observation(
    conn: &Connection,
    node: NodeId,
    vmid: u32,
) -> Result<Option<Observation>> {
    Ok(observations(conn, &guests_kind(node), Some(&vmid.to_string()))?.pop())
}

/// The last observed state of a node itself (connected, version).
pub fn proxmox_node_observation(conn: &Connection, node: NodeId) -> Result<Option<Observation>> {
    Ok(observations(conn, NODE_KIND, Some(&node.to_string()))?.pop())
}

/// The dashboard's history `status`: `success`, `failed` (failed or
/// cancelled) or `in_progress` (pending or running).
pub fn history_statuses(status: &str) -> Option<&'static [&'static str]> {
    Some(match status {
        "success" => &["completed"],
        "failed" => &["failed", "cancelled"],
        "in_progress" => &["pending", "running"],
        _ => return None,
    })
}

fn history_status(status: &str) -> &'static str {
    match status {
        "completed" => "success",
        "failed" | "cancelled" => "failed",
        _ => "in_progress",
    }
}

/// The dashboard's `operation` names and the operation types behind them.
pub const HISTORY_OPERATIONS: &[(&str, &[&str])] = &[
    ("start", &["proxmox.guest.start"]),
    ("stop", &["proxmox.guest.stop"]),
    ("restart", &["proxmox.guest.reboot"]),
    ("shutdown", &["proxmox.guest.shutdown"]),
    ("suspend", &["proxmox.guest.suspend"]),
    ("resume", &["proxmox.guest.resume"]),
    ("migrate", &["proxmox.guest.migrate"]),
    ("test", &["proxmox.node.test", "proxmox.test_connection"]),
    ("refresh", &["proxmox.refresh"]),
];

/// The operation types an `operation_type` filter names.
pub fn history_types(operation: &str) -> Option<&'static [&'static str]> {
    HISTORY_OPERATIONS
        .iter()
        .find(|(name, _)| *name == operation)
        .map(|(_, types)| *types)
}

fn history_operation(kind: &str) -> &'static str {
    HISTORY_OPERATIONS
        .iter()
        .find(|(_, types)| types.contains(&kind))
        .map_or("unknown", |(name, _)| name)
}

/// History filters; every one is optional. Newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// A registered node's id or name.
    pub node: Option<String>,
    /// `vm`, `lxc` or `node`.
    pub resource_type: Option<String>,
    /// Operation types (from [`history_types`]).
    pub types: Option<Vec<&'static str>>,
    /// Operation statuses (from [`history_statuses`]).
    pub statuses: Option<Vec<&'static str>>,
    pub limit: usize,
    pub offset: usize,
}

/// One line of the history, with the dashboard's field names.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// The operation id.
    pub id: String,
    /// When it was accepted.
    pub timestamp: DateTime<Utc>,
    /// The registered node's name (null once deleted, or for an unsaved test).
    pub node: Option<String>,
    pub node_id: Option<String>,
    /// `vm`, `lxc` or `node`; null while unknown.
    pub resource_type: Option<String>,
    pub resource_id: Option<u32>,
    pub resource_name: Option<String>,
    /// `start`, `stop`, `restart`, `shutdown`, `suspend`, `resume`,
    /// `migrate`, `test` or `refresh`.
    pub operation: String,
    /// `success`, `failed` or `in_progress`.
    pub status: String,
    /// The operation's own status.
    pub operation_status: String,
    /// Seconds from start to end, once ended.
    pub duration: Option<f64>,
    /// The operation's source (`api`, `ui`, `cron`, …).
    pub user: String,
    pub error_message: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// `WITH h AS (…)`: each proxmox operation with its node's name, the guest's
/// observed name and type, and its dashboard resource type.
const HISTORY_CTE: &str = "
WITH h AS (
  SELECT o.id, o.type, o.payload, o.status, o.source, o.result, o.error, o.created_at,
         o.started_at, o.finished_at, o.attempt,
         json_extract(o.payload, '$.node') AS node_id,
         n.name AS node_name,
         obs.name_seen AS observed_name,
         CASE
           WHEN o.type IN ('proxmox.test_connection', 'proxmox.node.test', 'proxmox.refresh') THEN 'node'
           -- What PVE said when it ran, else as last observed, else as asked.
           ELSE CASE COALESCE(json_extract(o.result, '$.guest_type'), obs.type,
                              json_extract(o.payload, '$.guest_type'))
                  WHEN 'qemu' THEN 'vm' WHEN 'lxc' THEN 'lxc' END
         END AS resource_type
  FROM operations o
  LEFT JOIN proxmox_nodes n ON n.id = json_extract(o.payload, '$.node')
  LEFT JOIN (
    -- SQLite takes the bare columns from the row holding max(observed_at).
    SELECT kind, name, max(observed_at), json_extract(data, '$.name') AS name_seen,
           json_extract(data, '$.type') AS type
    FROM observations WHERE family = 'proxmox' GROUP BY kind, name
  ) obs ON obs.kind = 'guests:' || json_extract(o.payload, '$.node')
       AND obs.name = CAST(json_extract(o.payload, '$.vmid') AS TEXT)
  WHERE o.type >= 'proxmox.' AND o.type < 'proxmox/'
)";

const HISTORY_WHERE: &str = "
WHERE (:node IS NULL OR node_id = :node OR node_name = :node)
  AND (:types IS NULL OR type IN (SELECT value FROM json_each(:types)))
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:resource_type IS NULL OR resource_type = :resource_type)";

/// One page of the history and how many entries match in all.
pub fn proxmox_history(
    conn: &Connection,
    filter: &HistoryFilter,
) -> Result<(Vec<HistoryEntry>, i64)> {
    let types = filter
        .types
        .as_ref()
        .map(|t| serde_json::to_string(t).expect("strings serialize"));
    let statuses = filter
        .statuses
        .as_ref()
        .map(|s| serde_json::to_string(s).expect("strings serialize"));
    let params = named_params! {
        ":node": filter.node, ":types": types, ":statuses": statuses,
        ":resource_type": filter.resource_type,
    };
    let total: i64 = conn
        .prepare_cached(&format!(
            "{HISTORY_CTE} SELECT count(*) FROM h {HISTORY_WHERE}"
        ))?
        .query_row(params, |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "{HISTORY_CTE}
         SELECT h.id, h.type, h.payload, h.status, h.source, h.result, h.error, h.created_at,
                h.started_at, h.finished_at, h.node_id, h.node_name, h.resource_type,
                h.observed_name
         FROM h {HISTORY_WHERE}
         ORDER BY h.id DESC LIMIT :limit OFFSET :offset"
    ))?;
    let mut rows = stmt.query(named_params! {
        ":node": filter.node, ":types": types, ":statuses": statuses,
        ":resource_type": filter.resource_type,
        ":limit": filter.limit as i64, ":offset": filter.offset as i64,
    })?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let kind: String = row.get(1)?;
        let payload: Value = json_column(Some(row.get(2)?), "payload")?.expect("some");
        let status: String = row.get(3)?;
        let result: Option<Value> = json_column(row.get(5)?, "result")?;
        let error: Option<Value> = json_column(row.get(6)?, "error")?;
        let started = time_column(row.get(8)?, "started_at")?;
        let finished = time_column(row.get(9)?, "finished_at")?;
        let observed_name: Option<String> = row.get(13)?;
        let result_name = result
            .as_ref()
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let duration = match (started, finished) {
            (Some(start), Some(end)) => {
                Some((end - start).num_microseconds().unwrap_or(0) as f64 / 1e6)
            }
            _ => None,
        };
        entries.push(HistoryEntry {
            id: row.get(0)?,
            timestamp: time_column(Some(row.get(7)?), "created_at")?.expect("some"),
            node: row.get(11)?,
            node_id: row.get(10)?,
            resource_type: row.get(12)?,
            resource_id: payload
                .get("vmid")
                .and_then(Value::as_u64)
                .map(|v| v as u32),
            resource_name: result_name.or(observed_name),
            operation: history_operation(&kind).to_owned(),
            status: history_status(&status).to_owned(),
            duration,
            user: row.get(4)?,
            error_message: (status != "completed")
                .then(|| {
                    error
                        .as_ref()
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                })
                .flatten()
                .map(str::to_owned),
            details: serde_json::json!({"type": kind, "payload": payload, "result": result}),
            operation_status: status,
        });
    }
    Ok((entries, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;
    use crate::store::testing;
    use crate::time;
    use serde_json::json;

    #[test]
    fn the_dashboard_statuses_cover_every_operation_status_once_and_map_back() {
        let mut covered = Vec::new();
        for name in ["success", "failed", "in_progress"] {
            for status in history_statuses(name).unwrap() {
                assert_eq!(history_status(status), name, "{status}");
                covered.push(*status);
            }
        }
        covered.sort_unstable();
        let mut every: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        every.sort_unstable();
        assert_eq!(covered, every);
        assert_eq!(history_statuses("completed"), None);
    }

    #[test]
    fn each_history_operation_names_its_types_and_is_named_by_them() {
        assert_eq!(
            history_types("restart"),
            Some(&["proxmox.guest.reboot"][..])
        );
        assert_eq!(history_types("reboot"), None);
        for (name, types) in HISTORY_OPERATIONS {
            for kind in *types {
                assert_eq!(history_operation(kind), *name);
            }
        }
        assert_eq!(history_operation("proxmox.something_new"), "unknown");
    }

    /// The store, with node `lab` registered and guest 101 of it last
    /// observed as container `ct1`.
    fn store_with_lab() -> (crate::Store, tempfile::TempDir, NodeId) {
        let (store, dir) = testing::store();
        let lab = NodeId::new();
        let connection = PveConnection {
            host: Host::parse("pve.example").unwrap(),
            port: 8006,
            token_id: TokenId::parse("root@pam!ci").unwrap(),
            token_secret: TokenSecret::parse("not-shown").unwrap(),
            verify_tls: true,
            ca_cert: None,
            timeout_secs: 30,
        };
        store
            .write(|tx| {
                proxmox_node_insert(tx, lab, "lab", &connection, time::now())?;
                tx.execute(
                    "INSERT INTO observations (target, family, kind, name, data, observed_at)
                     VALUES ('local', 'proxmox', ?1, '101', ?2, ?3)",
                    rusqlite::params![
                        guests_kind(lab),
                        json!({"name": "ct1", "type": "lxc"}).to_string(),
                        to_db(time::now())
                    ],
                )?;
                Ok(())
            })
            .unwrap();
        (store, dir, lab)
    }

    /// Inserts operation `op-{n}` (ids sort in `n` order) as the worker
    /// leaves it: a started one started a second after it was accepted, a
    /// finished one took 2.5 s; `ended` may hold its `result` and `error`.
    fn insert(
        store: &crate::Store,
        n: usize,
        kind: &str,
        payload: &Value,
        status: Status,
        ended: &Value,
    ) {
        let created = time::add_secs(time::now(), n as f64 * 10.0);
        let started = (status != Status::Pending).then(|| time::add_secs(created, 1.0));
        let finished = status.is_terminal().then(|| time::add_secs(created, 3.5));
        let running = status == Status::Running;
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO operations (id, type, payload, status, run_at, timeout_secs,
                         worker_id, lease_expires_at, result, error, created_at, started_at,
                         finished_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 60, ?6, ?7, ?8, ?9, ?5, ?10, ?11, ?5)",
                    rusqlite::params![
                        format!("op-{n:02}"),
                        kind,
                        payload.to_string(),
                        status.as_str(),
                        to_db(created),
                        running.then_some("w1"),
                        running.then(|| to_db(time::add_secs(created, 60.0))),
                        ended.get("result").map(Value::to_string),
                        ended.get("error").map(Value::to_string),
                        started.map(to_db),
                        finished.map(to_db),
                    ],
                )?;
                Ok(())
            })
            .unwrap();
    }

    /// No filter, one page for everything.
    fn everything() -> HistoryFilter {
        HistoryFilter {
            limit: 100,
            ..Default::default()
        }
    }

    #[test]
    fn the_history_filters_and_pages_proxmox_operations_newest_first() {
        let (store, _dir, lab) = store_with_lab();
        let elsewhere = NodeId::new();
        let on = |node: NodeId, vmid: u32| json!({"node": node.to_string(), "vmid": vmid});
        let mut asked_vm = on(lab, 102);
        asked_vm["guest_type"] = json!("qemu");
        let rows = [
            (
                "proxmox.guest.start",
                on(lab, 100),
                Status::Completed,
                json!({"result": {"guest_type": "qemu", "name": "web1"}}),
            ),
            (
                "proxmox.guest.stop",
                on(lab, 101),
                Status::Failed,
                json!({"error": {"code": "proxmox_task_failed", "message": "boom"}}),
            ),
            ("proxmox.guest.reboot", asked_vm, Status::Pending, json!({})),
            (
                "proxmox.refresh",
                json!({"node": lab.to_string()}),
                Status::Running,
                json!({}),
            ),
            ("diag.noop", json!({}), Status::Completed, json!({})),
            (
                "proxmox.guest.start",
                on(elsewhere, 300),
                Status::Completed,
                json!({"result": {"guest_type": "lxc"}}),
            ),
        ];
        for (i, (kind, payload, status, ended)) in rows.iter().enumerate() {
            insert(&store, i + 1, kind, payload, *status, ended);
        }
        let history = |filter: HistoryFilter| store.read(|c| proxmox_history(c, &filter)).unwrap();
        let ids = |filter: HistoryFilter| -> String {
            let (entries, _) = history(filter);
            entries
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };

        let (all, total) = history(everything());
        assert_eq!(total, 5, "no diag.noop");
        let page = HistoryFilter {
            limit: 2,
            offset: 1,
            ..Default::default()
        };
        assert_eq!(history(page.clone()).1, 5, "the total counts every match");
        assert_eq!(ids(page), "op-04 op-03");
        assert_eq!(ids(everything()), "op-06 op-04 op-03 op-02 op-01");

        let statuses = |name| Some(history_statuses(name).unwrap().to_vec());
        let by_status = |name| {
            ids(HistoryFilter {
                statuses: statuses(name),
                ..everything()
            })
        };
        assert_eq!(by_status("in_progress"), "op-04 op-03");
        assert_eq!(by_status("success"), "op-06 op-01");
        assert_eq!(by_status("failed"), "op-02");

        // The type PVE reported, else the last observation's, else the one
        // asked for; node-wide operations are the node's.
        let by_type = |t: &str| {
            ids(HistoryFilter {
                resource_type: Some(t.into()),
                ..everything()
            })
        };
        assert_eq!(by_type("vm"), "op-03 op-01");
        assert_eq!(by_type("lxc"), "op-06 op-02");
        assert_eq!(by_type("node"), "op-04");

        // A registered node by its name or its id, another by its id.
        let by_node = |node: String| {
            ids(HistoryFilter {
                node: Some(node),
                ..everything()
            })
        };
        assert_eq!(by_node("lab".into()), "op-04 op-03 op-02 op-01");
        assert_eq!(by_node(lab.to_string()), "op-04 op-03 op-02 op-01");
        assert_eq!(by_node(elsewhere.to_string()), "op-06");

        let combined = HistoryFilter {
            node: Some("lab".into()),
            resource_type: Some("vm".into()),
            types: history_types("start").map(<[_]>::to_vec),
            statuses: statuses("success"),
            ..everything()
        };
        assert_eq!(ids(combined), "op-01");

        let entry = |id: &str| all.iter().find(|e| e.id == id).unwrap().clone();
        let failed = entry("op-02");
        assert_eq!(failed.operation, "stop");
        assert_eq!(
            (failed.status.as_str(), failed.operation_status.as_str()),
            ("failed", "failed")
        );
        assert_eq!(failed.error_message.as_deref(), Some("boom"));
        assert_eq!(
            failed.resource_name.as_deref(),
            Some("ct1"),
            "the observed name"
        );
        assert_eq!(failed.node.as_deref(), Some("lab"));
        assert_eq!(failed.duration, Some(2.5));
        let pending = entry("op-03");
        assert_eq!(
            (pending.operation.as_str(), pending.duration),
            ("restart", None)
        );
        assert_eq!(pending.resource_id, Some(102));
        let done = entry("op-01");
        assert_eq!(
            done.resource_name.as_deref(),
            Some("web1"),
            "the name PVE reported"
        );
        assert_eq!(
            (done.status.as_str(), done.error_message),
            ("success", None)
        );
        let unregistered = entry("op-06");
        assert_eq!(
            (unregistered.node, unregistered.node_id),
            (None, Some(elsewhere.to_string()))
        );
    }
}
