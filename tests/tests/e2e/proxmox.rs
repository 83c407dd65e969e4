//! The Proxmox VE family over the real binaries, against fakepve (PyPI,
//! AGPL: a separate HTTPS process on loopback per test, never linked):
//! node registration and its secret, token auth, VM and container power
//! with real UPID task polling, a task that fails, injected 500s and an
//! offline node, LXC and QEMU migration, observed resources, the default
//! refresh schedule and the history.
//!
//! Where fakepve does not behave as real PVE does, the test says so.

use chrono::{DateTime, Utc};
use opsqueue_tests::fakepve::{self, FakePve};
use opsqueue_tests::{Cluster, Proc, Response, completed};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A cluster with the proxmox family on, and one fakepve registered as a
/// node (pinned to its self-signed certificate).
struct Pve {
    cluster: Cluster,
    pve: FakePve,
    node: String,
}

impl Pve {
    async fn start(guests: Value, tweak: impl FnOnce(&mut Cluster)) -> Pve {
        let pve = FakePve::start(fakepve::scenario(guests));
        let mut cluster = Cluster::new();
        cluster.set_env("OPSQUEUE_PROXMOX__ENABLED", "true");
        cluster.set_env("OPSQUEUE_PROXMOX__POLL_INTERVAL_MS", "50");
        tweak(&mut cluster);
        cluster.start_api();
        cluster.start_worker(&[]);
        let created = cluster
            .post(
                "/api/v1/proxmox/nodes",
                json!({"name": "lab", "host": "127.0.0.1", "port": pve.port,
                       "token_id": fakepve::TOKEN_ID, "token_secret": fakepve::TOKEN_SECRET,
                       "ca_cert": pve.ca_cert, "timeout_secs": 10}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let node = created.body["id"].as_str().unwrap().to_owned();
        Pve { cluster, pve, node }
    }

    fn path(&self, rest: &str) -> String {
        format!("/api/v1/proxmox/nodes/{}{rest}", self.node)
    }

    /// Fires a guest action through its typed route; returns its id.
    async fn fire(&self, vmid: u32, action: &str, body: Value) -> String {
        let response = self
            .cluster
            .post(&self.path(&format!("/resources/{vmid}/{action}")), body)
            .await;
        response.accepted_id(&format!("{vmid} {action}"))
    }

    /// Fires a guest action and waits for its end.
    async fn act(&self, vmid: u32, action: &str, body: Value) -> Value {
        let id = self.fire(vmid, action, body).await;
        self.cluster.wait_terminal(&id).await
    }

    async fn lines(&self, op: &Value) -> Vec<String> {
        self.cluster
            .logs(op["id"].as_str().unwrap())
            .await
            .iter()
            .map(|l| l["line"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn refresh(&self) -> Value {
        let id = self
            .cluster
            .post(&self.path("/refresh"), json!({}))
            .await
            .accepted_id("refresh");
        self.cluster.wait_terminal(&id).await
    }
}

fn failed(op: &Value) -> &Value {
    assert_eq!(op["status"], "failed", "{op:#}");
    &op["error"]
}

const GUESTS: &str = r#"[
    {"vmid": 100, "name": "web1", "status": "running", "node": "pve1", "config": {"memory": 2048}},
    {"vmid": 101, "name": "db1", "status": "stopped", "node": "pve1"},
    {"vmid": 102, "name": "backup1", "status": "stopped", "node": "pve1", "lock": "backup"},
    {"vmid": 200, "type": "lxc", "name": "ct1", "status": "running", "node": "pve1"},
    {"vmid": 201, "type": "lxc", "name": "ct2", "status": "stopped", "node": "pve2"}
]"#;

fn guests() -> Value {
    serde_json::from_str(GUESTS).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_is_parsed_like_every_name_and_a_hostile_one_is_never_stored() {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_PROXMOX__ENABLED", "true");
    cluster.start_api();
    let node = |name: &str| json!({"name": name, "host": "pve.example", "token_id": "root@pam!x", "token_secret": "y"});
    let long = "x".repeat(101);
    for hostile in [
        "../../etc/passwd",
        "$(id)",
        "a;id",
        "-rf",
        "a b",
        "<x>",
        "\u{202e}lab",
        "lab\u{202e}",
        "",
        "a\nb",
        long.as_str(),
    ] {
        let refused = cluster.post("/api/v1/proxmox/nodes", node(hostile)).await;
        refused.assert_problem("invalid_request", hostile);
        assert_eq!(
            refused.body["errors"][0]["field"], "name",
            "{:?}",
            refused.body
        );
    }
    let stored: i64 = cluster
        .sqlite()
        .query_row("SELECT count(*) FROM proxmox_nodes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a refused name was stored");

    let created = cluster
        .post("/api/v1/proxmox/nodes", node("pve-prod.1_a"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let path = format!(
        "/api/v1/proxmox/nodes/{}",
        created.body["id"].as_str().unwrap()
    );
    let renamed = cluster
        .request(reqwest::Method::PUT, &path, Some(json!({"name": "a;id"})))
        .await;
    renamed.assert_problem("invalid_request", "a rename to a hostile name");
    assert_eq!(cluster.get(&path).await.body["name"], "pve-prod.1_a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_validated_on_the_way_in_and_updated_in_part() {
    let pve = Pve::start(json!([]), |_| {}).await;
    let c = &pve.cluster;

    let missing = c.post("/api/v1/proxmox/nodes", json!({"port": 8006})).await;
    assert_eq!(
        missing.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        missing.body
    );
    let fields: Vec<&str> = missing.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "host", "token_id", "token_secret"]);
    let bad = c
        .post(
            "/api/v1/proxmox/nodes",
            json!({"name": "x", "host": "pve;reboot", "api_token_id": "root",
                   "api_token_secret": "s", "port": 70000, "timeout": 0}),
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    assert_eq!(
        bad.body["errors"].as_array().unwrap().len(),
        4,
        "{:?}",
        bad.body
    );
    let unknown = c
        .post("/api/v1/proxmox/nodes", json!({"name": "x", "hots": "pve"}))
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        unknown.body
    );
    let taken = c
        .post(
            "/api/v1/proxmox/nodes",
            json!({"name": "lab", "host": "pve2.example", "token_id": "root@pam!x", "token_secret": "y"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{:?}", taken.body);
    assert_eq!(taken.body["code"], "name_taken");

    // The dashboard's names work, defaults fill in, and the secret is masked.
    let second = c
        .post(
            "/api/v1/proxmox/nodes",
            json!({"name": "Production-Server", "host": "192.168.1.100",
                   "api_token_id": "root@pam!monitoring", "api_token_secret": "dash-secret",
                   "ssl_verify": false}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    let id = second.body["id"].as_str().unwrap().to_owned();
    assert_eq!(second.body["port"], 8006);
    assert_eq!(second.body["timeout_secs"], 30);
    assert_eq!(second.body["verify_tls"], false);
    assert_eq!(second.body["token_secret"], "***");
    assert_eq!(second.body["status"], "unknown");

    // PUT changes only what it names; "***" keeps the secret.
    let path = format!("/api/v1/proxmox/nodes/{id}");
    let put = c
        .request(
            reqwest::Method::PUT,
            &path,
            Some(json!({"port": 8007, "token_secret": "***"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["port"], 8007);
    assert_eq!(put.body["name"], "Production-Server");
    assert_eq!(put.body["host"], "192.168.1.100");
    let stored: String = c
        .sqlite()
        .query_row(
            "SELECT token_secret FROM proxmox_nodes WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, "dash-secret");
    let clash = c
        .request(reqwest::Method::PUT, &path, Some(json!({"name": "lab"})))
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT, "{:?}", clash.body);

    let list = c.get("/api/v1/proxmox/nodes").await;
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Production-Server", "lab"]);

    let deleted = c.request(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&path).await.status, StatusCode::NOT_FOUND);
    let gone = c
        .post(&format!("{path}/resources/100/start"), json!({}))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:?}", gone.body);
    let bad_id = c.get("/api/v1/proxmox/nodes/not-a-uuid").await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let bad_vmid = c.post(&pve.path("/resources/99/start"), json!({})).await;
    assert_eq!(
        bad_vmid.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        bad_vmid.body
    );
    let bad_action = c.post(&pve.path("/resources/100/explode"), json!({})).await;
    assert_eq!(
        bad_action.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        bad_action.body
    );
    let doc = c.get("/api/v1/openapi.json").await;
    for path in [
        "/api/v1/proxmox/nodes",
        "/api/v1/proxmox/nodes/{id}",
        "/api/v1/proxmox/test-connection",
        "/api/v1/proxmox/nodes/{id}/resources/{vmid}/{action}",
        "/api/v1/proxmox/history",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    let bad_field = c
        .post(&pve.path("/resources/100/start"), json!({"force": true}))
        .await;
    assert_eq!(
        bad_field.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad_field.body
    );
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tests_use_the_token_and_the_secret_never_leaves_the_store() {
    // Every opsqueue crate logs at debug (the worker's step lines among
    // them), so the search below covers the chattiest logs.
    let mut pve = Pve::start(guests(), |c| {
        c.set_env(
            "RUST_LOG",
            "info,opsqueue_api=debug,opsqueue_worker=debug,opsqueue_monitor=debug,opsqueue_shared=debug",
        )
    })
    .await;
    pve.cluster.start_monitor();
    let c = &pve.cluster;
    let unsaved_secret = "unsaved-secret-7c1e";
    let mut answers: Vec<Response> = Vec::new();

    let tested = c.post(&pve.path("/test"), json!({})).await;
    assert_eq!(tested.status, StatusCode::ACCEPTED, "{:?}", tested.body);
    let op = c.wait_terminal(tested.body["id"].as_str().unwrap()).await;
    let result = completed(&op);
    assert_eq!(result["connected"], true);
    assert_eq!(result["version"], "9.0.10");
    assert_eq!(result["message"], "Connected to Proxmox VE 9.0.10");
    let node = c.get(&pve.path("")).await;
    assert_eq!(node.body["status"], "online", "{:?}", node.body);
    assert_eq!(node.body["version"], "9.0.10");
    answers.push(tested);
    answers.push(node);

    // An unsaved configuration: its secret travels masked.
    let config = |secret: &str| {
        json!({"host": "127.0.0.1", "port": pve.pve.port, "api_token_id": fakepve::TOKEN_ID,
               "api_token_secret": secret, "ca_cert": pve.pve.ca_cert})
    };
    let fine = c
        .post(
            "/api/v1/proxmox/test-connection",
            config(fakepve::TOKEN_SECRET),
        )
        .await;
    assert_eq!(fine.status, StatusCode::ACCEPTED, "{:?}", fine.body);
    assert_eq!(fine.body["payload"]["token_secret"], "***");
    let op = c.wait_terminal(fine.body["id"].as_str().unwrap()).await;
    assert_eq!(completed(&op)["connected"], true);
    answers.push(fine);
    let wrong = c
        .post("/api/v1/proxmox/test-connection", config(unsaved_secret))
        .await;
    let op = c.wait_terminal(wrong.body["id"].as_str().unwrap()).await;
    let result = completed(&op);
    assert_eq!(result["connected"], false);
    assert_eq!(result["error"]["code"], "proxmox_auth_failed", "{result:#}");
    answers.push(wrong);
    // Without the pinned certificate, fakepve's self-signed one is refused.
    let mut unpinned = config(fakepve::TOKEN_SECRET);
    unpinned.as_object_mut().unwrap().remove("ca_cert");
    let unpinned = c.post("/api/v1/proxmox/test-connection", unpinned).await;
    let op = c.wait_terminal(unpinned.body["id"].as_str().unwrap()).await;
    assert_eq!(completed(&op)["error"]["code"], "proxmox_tls", "{op:#}");

    // A saved node with a wrong secret: its actions fail for good, at once.
    let wrong_node = c
        .request(
            reqwest::Method::PUT,
            &pve.path(""),
            Some(json!({"token_secret": unsaved_secret})),
        )
        .await;
    assert_eq!(wrong_node.body["token_secret"], "***");
    answers.push(wrong_node);
    let op = pve.act(100, "stop", json!({})).await;
    let error = failed(&op);
    assert_eq!(error["code"], "proxmox_auth_failed", "{error:#}");
    assert_eq!(op["attempt"], 1, "an auth failure is not retried");
    assert_eq!(pve.pve.guest(100)["status"], "running");
    let put_back = c
        .request(
            reqwest::Method::PUT,
            &pve.path(""),
            Some(json!({"token_secret": fakepve::TOKEN_SECRET})),
        )
        .await;
    answers.push(put_back);
    let op = pve.act(100, "stop", json!({})).await;
    assert_eq!(completed(&op)["changed"], true);
    let refreshed = pve.refresh().await;
    completed(&refreshed);

    // Every answer, every operation and its log, every process log.
    for path in [
        "/api/v1/proxmox/nodes".to_owned(),
        pve.path(""),
        pve.path("/resources"),
        "/api/v1/proxmox/history".to_owned(),
        "/api/v1/operations?limit=500".to_owned(),
    ] {
        answers.push(c.get(&path).await);
    }
    let operations = c.get("/api/v1/operations?limit=500").await;
    let mut texts: Vec<String> = answers.iter().map(|a| a.body.to_string()).collect();
    for op in operations.body["items"].as_array().unwrap() {
        let id = op["id"].as_str().unwrap();
        texts.push(
            c.get(&format!("/api/v1/operations/{id}"))
                .await
                .body
                .to_string(),
        );
        texts.push(json!(c.logs(id).await).to_string());
    }
    let procs: Vec<&Proc> = c.api.iter().chain(&c.workers).chain(&c.monitors).collect();
    assert_eq!(
        procs.len(),
        3,
        "the API's, the worker's and the monitor's logs"
    );
    for proc in procs {
        texts.push(proc.log_text());
    }
    let worker_log = c.workers[0].log_text();
    assert!(
        worker_log
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("connecting to https://127.0.0.1")),
        "the worker logged its steps at debug:\n{worker_log}"
    );
    for secret in [fakepve::TOKEN_SECRET, unsaved_secret] {
        for text in &texts {
            assert!(!text.contains(secret), "the secret leaked into: {text}");
        }
    }
    assert!(texts.len() > 20, "the search covered every operation");
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_and_containers_start_stop_and_shut_down_through_pve_tasks() {
    let began = Utc::now();
    let pve = Pve::start(guests(), |_| {}).await;

    // Before any refresh, a typed route works with no observation at all.
    let op = pve.act(100, "shutdown", json!({"timeout": 120})).await;
    let result = completed(&op);
    assert_eq!(result["changed"], true);
    assert_eq!(result["guest_type"], "qemu");
    assert_eq!(result["status"], "stopped");
    let upid = result["upid"].as_str().unwrap();
    assert!(
        upid.starts_with("UPID:pve1:") && upid.contains(":qmshutdown:100:root@pam!ci:"),
        "{upid}"
    );
    let lines = pve.lines(&op).await;
    assert!(lines.contains(&format!("PVE task {upid}")), "{lines:?}");
    assert!(lines.iter().any(|l| l == "pve: TASK OK"), "{lines:?}");
    assert_eq!(pve.pve.guest(100)["status"], "stopped");

    let refreshed = pve.refresh().await;
    assert_eq!(completed(&refreshed)["guests"], 5);
    let resources = pve.cluster.get(&pve.path("/resources")).await;
    assert_eq!(resources.status, StatusCode::OK);
    let body = &resources.body;
    assert!(body["observed_at"].is_string(), "{body:#}");
    let vmids = |list: &str| -> Vec<u64> {
        body[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["vmid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(vmids("vms"), [100, 101, 102]);
    assert_eq!(vmids("containers"), [200, 201]);
    let ct = &body["containers"][0];
    assert_eq!(
        (ct["name"].as_str(), ct["status"].as_str()),
        (Some("ct1"), Some("running"))
    );
    for field in [
        "cpu_usage",
        "memory_total",
        "disk_total",
        "network_in",
        "uptime",
        "last_updated",
    ] {
        assert!(!ct[field].is_null(), "{field} missing: {ct:#}");
    }
    let metrics = pve.cluster.get(&pve.path("/resources/100/metrics")).await;
    assert_eq!(metrics.body["status"], "stopped", "{:?}", metrics.body);
    assert_eq!(metrics.body["memory_total"], 2048 * 1024 * 1024u64);
    assert_eq!(
        pve.cluster
            .get(&pve.path("/resources/999/metrics"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A container stops and starts; an empty body is fine.
    let op = pve.act(200, "stop", json!({"force": true})).await;
    assert_eq!(completed(&op)["guest_type"], "lxc");
    assert!(
        op["result"]["upid"]
            .as_str()
            .unwrap()
            .contains(":vzstop:200:")
    );
    assert_eq!(
        op["payload"]["guest_type"], "lxc",
        "the API took the type from the observation"
    );
    assert_eq!(pve.pve.guest(200)["status"], "stopped");
    let accepted = pve
        .cluster
        .request(
            reqwest::Method::POST,
            &pve.path("/resources/201/start"),
            None,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let op = pve
        .cluster
        .wait_terminal(accepted.body["id"].as_str().unwrap())
        .await;
    assert_eq!(completed(&op)["node"], "pve2");
    assert_eq!(pve.pve.guest(201)["status"], "running");

    // Start, pause and resume a VM; each again is a no-op.
    let op = pve.act(101, "start", json!({})).await;
    assert_eq!(completed(&op)["changed"], true);
    let op = pve.act(101, "start", json!({})).await;
    let result = completed(&op);
    assert_eq!(result["changed"], false);
    assert_eq!(result["reason"], "already running");
    let op = pve.act(101, "suspend", json!({})).await;
    assert_eq!(completed(&op)["status"], "paused");
    assert_eq!(pve.pve.guest(101)["qmpstatus"], "paused");
    let op = pve.act(101, "suspend", json!({})).await;
    assert_eq!(completed(&op)["changed"], false);
    let op = pve.act(101, "resume", json!({})).await;
    assert_eq!(completed(&op)["status"], "running");
    let op = pve.act(101, "restart", json!({})).await;
    assert!(
        completed(&op)["upid"]
            .as_str()
            .unwrap()
            .contains(":qmreboot:101:")
    );
    assert_eq!(op["type"], "proxmox.guest.reboot");
    // A stopped VM cannot reboot: refused before PVE is asked.
    let op = pve.act(100, "restart", json!({})).await;
    assert_eq!(failed(&op)["code"], "proxmox_guest_not_running");
    let op = pve.act(100, "stop", json!({})).await;
    assert_eq!(completed(&op)["changed"], false);

    // A vmid the observation knows as a VM is refused if named a container.
    let op = pve.act(101, "stop", json!({"guest_type": "lxc"})).await;
    assert_eq!(failed(&op)["code"], "proxmox_guest_type_mismatch");
    assert_eq!(pve.pve.guest(101)["status"], "running");

    // The locked guest: PVE's task fails with its own message, once.
    let op = pve.act(102, "start", json!({})).await;
    let error = failed(&op);
    assert_eq!(error["code"], "proxmox_task_failed");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("VM is locked (backup)"),
        "{error:#}"
    );
    assert_eq!(op["attempt"], 1);
    let lines = pve.lines(&op).await;
    assert!(
        lines
            .iter()
            .any(|l| l == "pve: TASK ERROR: VM is locked (backup)"),
        "{lines:?}"
    );

    // The history, with the dashboard's filters.
    let c = &pve.cluster;
    let all = c.get("/api/v1/proxmox/history").await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["total"], 14, "{:#}", all.body);
    let latest = &all.body["operations"][0];
    assert_eq!(latest["operation"], "start");
    assert_eq!(latest["resource_type"], "vm");
    assert_eq!(latest["resource_id"], 102);
    assert_eq!(latest["resource_name"], "backup1");
    assert_eq!(latest["node"], "lab");
    assert_eq!(latest["status"], "failed");
    assert!(
        latest["error_message"]
            .as_str()
            .unwrap()
            .contains("VM is locked (backup)")
    );
    assert!(latest["duration"].as_f64().unwrap() >= 0.0);
    // `timestamp` is when the operation was accepted: its created_at.
    let time = |value: &Value| -> DateTime<Utc> {
        let text = value.as_str().unwrap_or_else(|| panic!("no time: {value}"));
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    let accepted = c.operation(latest["id"].as_str().unwrap()).await;
    assert_eq!(time(&latest["timestamp"]), time(&accepted["created_at"]));
    let timestamps: Vec<DateTime<Utc>> = all.body["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| time(&o["timestamp"]))
        .collect();
    let now = Utc::now();
    assert!(
        timestamps.iter().all(|t| began <= *t && *t <= now),
        "accepted during this test: {timestamps:?}"
    );
    assert!(timestamps.is_sorted_by(|a, b| a >= b), "newest first");
    let failures = c.get("/api/v1/proxmox/history?status=failed").await;
    assert_eq!(failures.body["total"], 3, "{:#}", failures.body);
    let statuses = |page: &Response, field: &str| -> Vec<String> {
        page.body["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o[field].as_str().unwrap_or("null").to_owned())
            .collect()
    };
    let successes = c.get("/api/v1/proxmox/history?status=success").await;
    assert_eq!(successes.body["total"], 11, "{:#}", successes.body);
    assert!(
        statuses(&successes, "status")
            .iter()
            .all(|s| s == "success"),
        "{:#}",
        successes.body
    );
    assert!(
        statuses(&successes, "operation_status")
            .iter()
            .all(|s| s == "completed")
    );
    // Nothing is under way once every operation ended.
    let under_way = c.get("/api/v1/proxmox/history?status=in_progress").await;
    assert_eq!(under_way.body["total"], 0, "{:#}", under_way.body);
    // VMs: every action on 100, 101 and 102 (the refresh is the node's, the
    // container actions are lxc), the type-mismatch failure included: it
    // named lxc, but 101 is a VM as PVE and the observation say.
    let vms = c.get("/api/v1/proxmox/history?resource_type=vm").await;
    assert_eq!(vms.body["total"], 11, "{:#}", vms.body);
    assert!(
        statuses(&vms, "resource_type").iter().all(|t| t == "vm"),
        "{:#}",
        vms.body
    );
    let lxc = c.get("/api/v1/proxmox/history?resource_type=lxc").await;
    let ops: Vec<&str> = lxc.body["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["start", "stop"]);
    let restarts = c
        .get("/api/v1/proxmox/history?operation_type=restart&node=lab&limit=1&offset=1")
        .await;
    assert_eq!(restarts.body["total"], 2, "{:#}", restarts.body);
    assert_eq!(restarts.body["operations"].as_array().unwrap().len(), 1);
    assert_eq!(restarts.body["operations"][0]["status"], "success");
    let by_node = c.get(&pve.path("/history?operation_type=refresh")).await;
    assert_eq!(by_node.body["operations"][0]["resource_type"], "node");
    let elsewhere = c.get("/api/v1/proxmox/history?node=nowhere").await;
    assert_eq!(elsewhere.body["total"], 0);
    let bad = c.get("/api/v1/proxmox/history?status=done").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_500s_and_an_offline_node_are_retried_until_pve_answers_or_attempts_run_out() {
    // Backoff from 1 s, so the test can bring the node back between attempts.
    let pve = Pve::start(guests(), |c| {
        c.set_env("OPSQUEUE_WORKER__BACKOFF_BASE_MS", "1000")
    })
    .await;
    let c = &pve.cluster;
    pve.pve.fail(
        "POST",
        "/nodes/pve1/qemu/101/status/start",
        500,
        "fake failure",
        Some(2),
    );
    let op = pve.act(101, "start", json!({})).await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(op["attempt"], 3, "two 500s, then the start");
    let lines = pve.lines(&op).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("proxmox_server_error") && l.contains("fake failure")),
        "{lines:?}"
    );

    // fakepve answers 595 for an offline node, as a cluster member that
    // cannot reach it does.
    pve.pve.set_node_offline("pve1", true);
    let gives_up = c
        .enqueue(json!({"type": "proxmox.guest.stop", "max_attempts": 2,
                        "payload": {"node": pve.node, "vmid": 100}}))
        .await;
    let op = c.wait_terminal(gives_up["id"].as_str().unwrap()).await;
    let error = failed(&op);
    assert_eq!(error["code"], "proxmox_server_error", "{error:#}");
    assert!(
        error["message"].as_str().unwrap().contains("595"),
        "{error:#}"
    );
    assert_eq!(error["retryable"], true);
    assert_eq!(op["attempt"], 2);

    let recovers = c
        .enqueue(json!({"type": "proxmox.guest.stop", "max_attempts": 10,
                        "payload": {"node": pve.node, "vmid": 100}}))
        .await;
    let id = recovers["id"].as_str().unwrap();
    c.wait_until(id, |op| op["error"]["code"] == "proxmox_server_error")
        .await;
    pve.pve.set_node_offline("pve1", false);
    let op = c.wait_terminal(id).await;
    assert_eq!(completed(&op)["changed"], true);
    assert!(op["attempt"].as_i64().unwrap() >= 2, "{op:#}");
    assert_eq!(pve.pve.guest(100)["status"], "stopped");
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_migrates_only_with_restart() {
    let pve = Pve::start(guests(), |_| {}).await;

    let op = pve.act(200, "migrate", json!({"target": "pve2"})).await;
    let error = failed(&op);
    assert_eq!(error["code"], "proxmox_refused");
    assert!(
        error["message"].as_str().unwrap().contains("restart"),
        "{error:#}"
    );
    assert_eq!(op["attempt"], 1);
    assert_eq!(pve.pve.guest(200)["node"], "pve1");
    let live = pve
        .cluster
        .post(
            &pve.path("/resources/200/migrate"),
            json!({"target": "pve2", "online": true, "guest_type": "lxc"}),
        )
        .await;
    assert_eq!(
        live.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        live.body
    );

    let op = pve
        .act(200, "migrate", json!({"target": "pve2", "restart": true}))
        .await;
    let result = completed(&op);
    assert_eq!(result["changed"], true);
    assert_eq!(result["node"], "pve2");
    assert_eq!(result["status"], "running");
    assert!(
        result["upid"].as_str().unwrap().contains(":vzmigrate:200:"),
        "{result:#}"
    );
    assert_eq!(pve.pve.guest(200)["node"], "pve2");
    assert_eq!(pve.pve.guest(200)["status"], "running");

    let op = pve
        .act(200, "migrate", json!({"target": "pve2", "restart": true}))
        .await;
    assert_eq!(completed(&op)["changed"], false);
    // A stopped container needs no restart.
    let op = pve.act(201, "migrate", json!({"target": "pve1"})).await;
    assert_eq!(completed(&op)["node"], "pve1");
    assert_eq!(pve.pve.guest(201)["node"], "pve1");
    // The guest is found on its new node.
    let op = pve.act(200, "stop", json!({})).await;
    assert_eq!(completed(&op)["node"], "pve2");
    assert_eq!(pve.pve.guest(200)["status"], "stopped");
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_holds_its_guest_until_it_ends_while_other_guests_go_on() {
    let pve = Pve::start(guests(), |_| {}).await;
    let c = &pve.cluster;

    // Container 200 migrates to pve2, and fakepve holds the migration at
    // its move step until the test lets it go.
    pve.pve.hold_migrations();
    let migration = pve
        .fire(200, "migrate", json!({"target": "pve2", "restart": true}))
        .await;
    c.wait_until(&migration, |op| op["status"] == "running")
        .await;
    opsqueue_tests::eventually("fakepve locks the container for its migration", || {
        pve.pve.guest(200)["lock"] == "migrate"
    })
    .await;

    // A stop of the same guest waits; a start of another guest does not.
    let held = pve.fire(200, "stop", json!({})).await;
    let other = pve.fire(101, "start", json!({})).await;
    let other = c.wait_terminal(&other).await;
    assert_eq!(completed(&other)["changed"], true);
    let waiting = c.operation(&held).await;
    assert_eq!(waiting["status"], "pending", "{waiting:#}");
    assert!(waiting["started_at"].is_null(), "{waiting:#}");
    assert_eq!(
        waiting["resource"],
        c.operation(&migration).await["resource"],
        "one key for the guest, wherever it is"
    );
    let under_way = c.get("/api/v1/proxmox/history?status=in_progress").await;
    let entries: Vec<(&str, &str, &str)> = under_way.body["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["operation"].as_str().unwrap(),
                o["operation_status"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("stop", "pending", "in_progress"),
            ("migrate", "running", "in_progress")
        ],
        "{:#}",
        under_way.body
    );

    pve.pve.release_migrations();
    let migration = c.wait_terminal(&migration).await;
    assert_eq!(completed(&migration)["node"], "pve2");
    let held = c.wait_terminal(&held).await;
    assert_eq!(
        completed(&held)["node"],
        "pve2",
        "the stop found the guest where the migration left it"
    );
    assert_eq!(pve.pve.guest(200)["status"], "stopped");
    let time =
        |op: &Value, field: &str| -> DateTime<Utc> { op[field].as_str().unwrap().parse().unwrap() };
    assert!(
        time(&held, "started_at") >= time(&migration, "finished_at"),
        "the stop started only after the migration ended:\n{migration:#}\n{held:#}"
    );
    assert!(
        time(&other, "finished_at") < time(&migration, "finished_at"),
        "the other guest's start ran during the migration:\n{migration:#}\n{other:#}"
    );
    // What opsqueue asked of PVE: a restart migration of the container.
    let posts: Vec<fakepve::Request> = pve
        .pve
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lxc/200/migrate"))
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0].params.get("target").map(String::as_str),
        Some("pve2")
    );
    assert_eq!(
        posts[0].params.get("restart").map(String::as_str),
        Some("1")
    );
    assert!(!posts[0].params.contains_key("online"), "{posts:?}");
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_migration_is_waited_for_and_the_vm_followed_to_its_new_node() {
    let mut with_ha = guests();
    with_ha.as_array_mut().unwrap().push(
        json!({"vmid": 103, "name": "ha1", "status": "running", "node": "pve1", "ha_state": "started"}),
    );
    let pve = Pve::start(with_ha, |_| {}).await;

    // An HA-managed VM: PVE's `hastop` task only files the request (it ends
    // OK at once); the operation ends when ha-manager has stopped the VM
    // (fakepve acts after its ha_delay, 10 PVE seconds).
    let op = pve.act(103, "stop", json!({})).await;
    let result = completed(&op);
    assert!(
        result["upid"].as_str().unwrap().contains(":hastop:103:"),
        "{result:#}"
    );
    assert_eq!(result["status"], "stopped");
    assert_eq!(pve.pve.guest(103)["status"], "stopped");

    let op = pve.act(100, "migrate", json!({"target": "pve2"})).await;
    assert_eq!(
        failed(&op)["code"],
        "proxmox_refused",
        "a running VM needs online"
    );

    // fakepve does not model `POST …/qemu/{vmid}/migrate`: its task ends OK
    // without moving the VM (and it skips PVE's "without --online" check).
    // Real PVE moves it; the driver's check that the VM is on the target
    // catches the difference. What fakepve does record is the request: the
    // target, and `online=1` as asked (a stopped VM then migrates offline).
    let op = pve
        .act(101, "migrate", json!({"target": "pve2", "online": true}))
        .await;
    assert_eq!(
        failed(&op)["code"],
        "proxmox_migration_unconfirmed",
        "{op:#}"
    );
    let migrate_posts = |vmid: u32| -> Vec<fakepve::Request> {
        let path = format!("/nodes/pve1/qemu/{vmid}/migrate");
        pve.pve
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(&path))
            .collect()
    };
    let posts = migrate_posts(101);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0].params.get("target").map(String::as_str),
        Some("pve2")
    );
    assert_eq!(posts[0].params.get("online").map(String::as_str), Some("1"));

    // fakepve's own migration model: VM 100 locked `migrate` for 300 PVE
    // seconds (3 s here), then on pve2. A migrate asked meanwhile waits for
    // it and finds the VM already there.
    let started = pve
        .pve
        .command(json!({"cmd": "migrate", "vmid": 100, "target": "pve2", "secs": 300}));
    assert!(started["upid"].as_str().unwrap().contains(":qmigrate:100:"));
    opsqueue_tests::eventually("fakepve locks the VM for its migration", || {
        pve.pve.guest(100)["lock"] == "migrate"
    })
    .await;
    let op = pve
        .act(100, "migrate", json!({"target": "pve2", "online": true}))
        .await;
    let result = completed(&op);
    assert_eq!(result["changed"], false, "{result:#}");
    assert_eq!(result["reason"], "already on pve2");
    assert_eq!(result["node"], "pve2");
    let lines = pve.lines(&op).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("is being migrated from pve1")),
        "{lines:?}"
    );

    // Actions follow the VM to pve2.
    let op = pve.act(100, "stop", json!({})).await;
    let result = completed(&op);
    assert_eq!(result["node"], "pve2");
    assert!(result["upid"].as_str().unwrap().starts_with("UPID:pve2:"));
    assert_eq!(pve.pve.guest(100)["status"], "stopped");
    let metrics = pve.cluster.get(&pve.path("/resources/100/metrics")).await;
    assert_eq!(metrics.body["node"], "pve2", "{:?}", metrics.body);
    // VM 100 was never migrated by opsqueue: refused without online, then
    // found already moved.
    assert!(migrate_posts(100).is_empty());
    pve.pve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_keeps_a_refresh_schedule_that_observes_every_node() {
    let mut pve = Pve::start(guests(), |c| {
        c.set_env("OPSQUEUE_PROXMOX__REFRESH_CRON", "*/1 * * * * *");
    })
    .await;
    pve.cluster.start_monitor();
    let c = &pve.cluster;
    let schedule = loop {
        let found = c.get("/api/v1/schedules/refresh-proxmox").await;
        if found.status == StatusCode::OK {
            break found.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(schedule["type"], "proxmox.refresh");
    assert_eq!(schedule["payload"], json!({}));
    let deadline = std::time::Instant::now() + opsqueue_tests::DEADLINE;
    let resources = loop {
        let resources = c.get(&pve.path("/resources")).await.body;
        if resources["vms"].as_array().is_some_and(|v| !v.is_empty()) {
            break resources;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refreshed:\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(resources["vms"].as_array().unwrap().len(), 3);
    let history = c
        .get("/api/v1/proxmox/history?operation_type=refresh")
        .await;
    let entry = &history.body["operations"][0];
    assert_eq!(entry["user"], "cron");
    assert_eq!(entry["resource_type"], "node");
    let node = c.get(&pve.path("")).await;
    assert_eq!(node.body["status"], "online");
    assert_eq!(
        node.body["nodes"].as_array().unwrap().len(),
        2,
        "{:?}",
        node.body
    );
    // Each PVE node's figures in the dashboard's units (fakepve reports
    // cpu 0.02 of 4 cores, 2 of 8 GiB memory, 4 of 64 GiB disk, 1 h up),
    // and the whole cluster's beside them.
    const GIB: u64 = 1 << 30;
    for pve_node in node.body["nodes"].as_array().unwrap() {
        assert_eq!(pve_node["status"], "online", "{pve_node}");
        assert_eq!(pve_node["cpu_usage"], 2.0, "{pve_node}");
        assert_eq!(pve_node["cpu_count"], 4, "{pve_node}");
        assert_eq!(pve_node["memory_usage"], 2 * GIB, "{pve_node}");
        assert_eq!(pve_node["memory_total"], 8 * GIB, "{pve_node}");
        assert_eq!(pve_node["memory_percentage"], 25.0, "{pve_node}");
        assert_eq!(pve_node["disk_total"], 64 * GIB, "{pve_node}");
        assert_eq!(pve_node["disk_percentage"], 6.3, "{pve_node}");
        assert_eq!(pve_node["uptime"], 3600, "{pve_node}");
    }
    assert_eq!(node.body["cpu_count"], 8, "{:?}", node.body);
    assert_eq!(node.body["cpu_usage"], 2.0, "{:?}", node.body);
    assert_eq!(node.body["memory_total"], 16 * GIB, "{:?}", node.body);
    assert_eq!(node.body["memory_percentage"], 25.0, "{:?}", node.body);
    assert_eq!(node.body["disk_usage"], 8 * GIB, "{:?}", node.body);
    assert_eq!(node.body["uptime"], 3600, "{:?}", node.body);
    let listed = c.get("/api/v1/proxmox/nodes").await;
    assert_eq!(
        listed.body["items"][0]["memory_percentage"], 25.0,
        "{:?}",
        listed.body
    );
    pve.cluster.monitors.clear();
    pve.pve.stop();
}
