//! Process migration end to end: an API serving HTTPS, two remote workers
//! (servers `a` and `b`, each with its own agent key, its own real pm2 and
//! its own `[pm2] base_dir` where the app's code is deployed) and a pm2 app
//! whose state directory holds a SQLite database it writes to all the
//! time. The state travels from `a` through the API host to `b`.
//!
//! The API's own `[pm2] base_dir` is the temporary directory that holds
//! both servers' base directories (in a real fleet every host has the same
//! one); the workers resolve paths against their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opsqueue_tests::fleet::{Agent, Netns, self_signed};
use opsqueue_tests::pm2_home::Pm2Home;
use opsqueue_tests::{Cluster, DEADLINE};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Writes a row every 50 ms into `state/app.db` (under its working
/// directory), for as long as it runs.
const COUNTER_APP: &str = r#"
import os, sqlite3, time
db = sqlite3.connect(os.path.join(os.getcwd(), "state", "app.db"))
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER NOT NULL, at REAL NOT NULL)")
db.commit()
while True:
    db.execute("INSERT INTO ticks VALUES ((SELECT count(*) FROM ticks) + 1, ?)", (time.time(),))
    db.commit()
    time.sleep(0.05)
"#;

struct Server {
    agent: Agent,
    pm2: Pm2Home,
    /// Its worker's index in the cluster, and the environment it got.
    worker: usize,
    env: Vec<(&'static str, String)>,
}

impl Server {
    fn state_dir(&self) -> PathBuf {
        self.pm2.apps.join("state")
    }

    fn staging(&self) -> PathBuf {
        self.agent.dir.join("staging")
    }

    /// The app's pm2 status on this server, or `None` when pm2 has no such app.
    fn pm2_status(&self, name: &str) -> Option<String> {
        let out = self.pm2.pm2(&["jlist"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let list: Vec<Value> = text
            .find('[')
            .and_then(|at| serde_json::from_str(&text[at..]).ok())
            .unwrap_or_default();
        list.iter()
            .find(|app| app["name"] == name)
            .map(|app| app["pm2_env"]["status"].as_str().unwrap_or("?").to_owned())
    }
}

fn rows(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT n FROM ticks ORDER BY rowid").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What a test changes in the fleet.
struct Setup {
    health_timeout_secs: u64,
    max_bytes: Option<u64>,
    lease_secs: Option<u64>,
    /// Random bytes in a file of the state, to make the copies take time.
    bulk_bytes: u64,
    /// Runs the source's worker in this network namespace (its name, and
    /// the address of this side, where the API listens).
    source_in: Option<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            health_timeout_secs: 60,
            max_bytes: None,
            lease_secs: None,
            bulk_bytes: 0,
            source_in: None,
        }
    }
}

/// The API over HTTPS, a monitor, and servers `a` and `b`; the counter
/// app running on `a` with its state (a database and a plain file).
async fn fleet(setup: Setup) -> (Cluster, Server, Server) {
    let health_timeout_secs = setup.health_timeout_secs;
    let mut cluster = Cluster::new();
    if let Some(max) = setup.max_bytes {
        cluster.set_env("OPSQUEUE_ARTIFACTS__MAX_BYTES", max);
    }
    if let Some(lease) = setup.lease_secs {
        cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", lease);
    }
    let (cert, key) = self_signed(cluster.dir.path(), &["localhost", "127.0.0.1"]);
    cluster.use_tls(&cert, &key);
    if setup.source_in.is_some() {
        cluster.set_env("OPSQUEUE_API__BIND", "0.0.0.0:0");
    }
    cluster.set_env("OPSQUEUE_PM2__ENABLED", "true");
    cluster.set_env("OPSQUEUE_MIGRATION__ENABLED", "true");
    let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    cluster.set_env("OPSQUEUE_PM2__BASE_DIR", tmp.display());
    cluster.start_api();
    cluster.api_url = cluster.api_url.replace("0.0.0.0", "127.0.0.1");
    cluster.start_monitor();
    let url = cluster.api_url.clone();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let agent = Agent::new(&cluster, name, &[name]);
        let pm2 = Pm2Home::new();
        std::fs::write(pm2.apps.join("counter.py"), COUNTER_APP).unwrap();
        let (netns, url) = match (&setup.source_in, name) {
            (Some((netns, outer_ip)), "a") => {
                let port = url.rsplit(':').next().unwrap();
                (Some(netns.as_str()), format!("https://{outer_ip}:{port}"))
            }
            _ => (None, url.clone()),
        };
        let mut env = agent.env(&url, Some(&cert), &[name]);
        env.extend([
            ("OPSQUEUE_PM2__HOME", pm2.home.display().to_string()),
            ("OPSQUEUE_PM2__BASE_DIR", pm2.apps.display().to_string()),
            (
                "OPSQUEUE_MIGRATION__STAGING_DIR",
                agent.dir.join("staging").display().to_string(),
            ),
            ("OPSQUEUE_MIGRATION__SETTLE_SECS", "1".to_owned()),
            (
                "OPSQUEUE_MIGRATION__HEALTH_TIMEOUT_SECS",
                health_timeout_secs.to_string(),
            ),
        ]);
        let worker = cluster.start_worker_in(netns, &env);
        servers.push(Server {
            agent,
            pm2,
            worker,
            env,
        });
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = cluster.get("/api/v1/servers").await.body;
        let online = listed
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["status"] == "online").count());
        if online == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "servers never online: {listed:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();

    std::fs::create_dir_all(a.state_dir()).unwrap();
    std::fs::write(a.state_dir().join("notes.txt"), "kept as is\n").unwrap();
    if setup.bulk_bytes > 0 {
        use std::io::Read as _;
        let mut bulk = Vec::new();
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .take(setup.bulk_bytes)
            .read_to_end(&mut bulk)
            .unwrap();
        std::fs::write(a.state_dir().join("bulk.bin"), bulk).unwrap();
    }
    let started = cluster
        .enqueue(json!({"type": "pm2.start", "target": "a", "payload": {
            "name": "counter", "script": a.pm2.apps.join("counter.py"),
            "interpreter": "/usr/bin/python3", "cwd": a.pm2.apps,
            "state_dir": a.state_dir(),
        }}))
        .await;
    let started = cluster.wait_terminal(started["id"].as_str().unwrap()).await;
    assert_eq!(started["status"], "completed", "{started:#}");
    let db = a.state_dir().join("app.db");
    let deadline = Instant::now() + DEADLINE;
    while !db.exists() || rows(&db).len() < 10 {
        assert!(Instant::now() < deadline, "the app never wrote rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, a, b)
}

/// Polls the migration until it ended.
async fn wait_migration(cluster: &Cluster, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let migration = cluster.get(&format!("/api/v1/migrations/{id}")).await.body;
        let status = migration["status"].as_str().unwrap_or_default();
        if ["completed", "failed", "rolled_back", "cancelled"].contains(&status) {
            return migration;
        }
        assert!(
            Instant::now() < deadline,
            "migration {id} never ended: {migration:#}\n{}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_migration(cluster: &Cluster, body: Value) -> String {
    let response = cluster.post("/api/v1/migrations", body).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
    let id = response.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        response.headers["location"],
        format!("/api/v1/migrations/{id}").as_str()
    );
    id
}

#[tokio::test]
async fn a_pm2_app_moves_with_its_sqlite_state_to_another_server_and_the_source_stops() {
    let (cluster, a, b) = fleet(Setup::default()).await;

    let processes = cluster.get("/api/v1/processes").await.body;
    let counter = processes
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "pm2:counter@a")
        .unwrap_or_else(|| panic!("no counter in {processes:#}"))
        .clone();
    assert_eq!(counter["kind"], "pm2");
    assert_eq!(counter["server_id"], "a");
    assert_eq!(counter["state_dir"], a.state_dir().display().to_string());
    let one = cluster.get("/api/v1/processes/pm2:counter@a").await;
    assert_eq!(one.status, StatusCode::OK, "{:#}", one.body);
    assert_eq!(one.body["status"], "running");

    let body =
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "b"});
    let id = start_migration(&cluster, body.clone()).await;
    // The same process again while the first runs: refused, never interleaved.
    let again = cluster.post("/api/v1/migrations", body).await;
    again.assert_problem("migration_active", "a second migration of the process");
    assert_eq!(again.status, StatusCode::CONFLICT);

    let migration = wait_migration(&cluster, &id).await;
    assert_eq!(
        migration["status"],
        "completed",
        "{migration:#}\n{}",
        cluster.logs_tail()
    );
    let steps: Vec<(&str, &str, &str)> = migration["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["target"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("inspect", "a", "completed"),
            ("preflight", "b", "completed"),
            ("warm", "a", "completed"),
            ("stop", "a", "completed"),
            ("final", "a", "completed"),
            ("upload", "a", "completed"),
            ("restore", "b", "completed"),
            ("start", "b", "completed"),
            ("health", "b", "completed"),
        ]
    );
    assert!(
        migration["bytes_moved"].as_u64().unwrap() > 0,
        "{migration:#}"
    );
    assert!(
        migration["downtime_secs"].as_f64().unwrap() > 0.0,
        "{migration:#}"
    );
    assert!(migration["completed_at"].is_string());

    // The source's app is stopped; its rows are on the target, where the
    // app goes on writing after them.
    assert_eq!(a.pm2_status("counter").as_deref(), Some("stopped"));
    assert_eq!(b.pm2_status("counter").as_deref(), Some("online"));
    let source_rows = rows(&a.state_dir().join("app.db"));
    let target_db = b.state_dir().join("app.db");
    let deadline = Instant::now() + DEADLINE;
    let target_rows = loop {
        let found = rows(&target_db);
        if found.len() > source_rows.len() {
            break found;
        }
        assert!(Instant::now() < deadline, "the app on b never wrote");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(source_rows.len() >= 10);
    assert_eq!(&target_rows[..source_rows.len()], &source_rows[..]);
    assert_eq!(
        std::fs::read_to_string(b.state_dir().join("notes.txt")).unwrap(),
        "kept as is\n"
    );
    // The source's state is never removed; the staging folders are gone
    // but the target's record of what it restored.
    assert!(a.state_dir().join("notes.txt").exists());
    assert!(!a.staging().join(&id).join("stage").exists());

    let overview = cluster.get("/api/v1/overview").await.body;
    assert_eq!(overview["activeMigrations"], 0, "{overview:#}");
    // `local` is a server too: the monitor's refresh names it.
    let servers = cluster.get("/api/v1/servers").await.body;
    assert_eq!(overview["serverNodes"], servers.as_array().unwrap().len());
    assert!(
        overview["totalProcesses"].as_u64().unwrap() >= 2,
        "{overview:#}"
    );
    assert_eq!(overview["successRate"], "100.0%");
    let logs = cluster.get("/api/v1/logs?limit=50").await.body;
    let messages: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&id) && m.contains("completed")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&id) && m.contains("started"))
    );
    let listed = cluster.get("/api/v1/migrations").await.body;
    assert_eq!(listed[0]["id"], id.as_str());

    // The seed's process writes: pause and resume on the target, remove
    // the stopped source (its state directory stays).
    let fire = |method: reqwest::Method, path: &'static str, body: Option<Value>| {
        let cluster = &cluster;
        async move {
            let id = cluster.request(method, path, body).await.accepted_id(path);
            let op = cluster.wait_terminal(&id).await;
            assert_eq!(op["status"], "completed", "{path}: {op:#}");
            op
        }
    };
    let paused = fire(
        reqwest::Method::PATCH,
        "/api/v1/processes/pm2:counter@b",
        Some(json!({"status": "paused"})),
    )
    .await;
    assert_eq!(paused["type"], "pm2.stop");
    assert_eq!(b.pm2_status("counter").as_deref(), Some("stopped"));
    fire(
        reqwest::Method::PATCH,
        "/api/v1/processes/pm2:counter@b",
        Some(json!({"status": "running"})),
    )
    .await;
    assert_eq!(b.pm2_status("counter").as_deref(), Some("online"));
    fire(
        reqwest::Method::DELETE,
        "/api/v1/processes/pm2:counter@a",
        None,
    )
    .await;
    assert_eq!(a.pm2_status("counter"), None);
    assert!(a.state_dir().join("app.db").exists());
    let gone = cluster.get("/api/v1/processes/pm2:counter@a").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:#}", gone.body);
    for (method, path, body) in [
        (
            reqwest::Method::PATCH,
            "/api/v1/processes/pm2:counter@b",
            json!({"status": "gone"}),
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/processes/systemd:web@b",
            json!({"status": "paused"}),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/processes",
            json!({"kind": "docker", "name": "x", "server_id": "b", "spec": {}}),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/processes",
            json!({"kind": "pm2", "name": "x", "server_id": "b",
                   "spec": {"script": "/etc/passwd/../shadow"}}),
        ),
    ] {
        let refused = cluster.request(method, path, Some(body.clone())).await;
        assert!(
            refused.status == StatusCode::UNPROCESSABLE_ENTITY
                || refused.status == StatusCode::BAD_REQUEST,
            "{path} {body}: {:#}",
            refused.body
        );
    }

    // Hostile ids are refused before anything is read or stored.
    for path in [
        "/api/v1/processes/pm2:..%2Fetc@a",
        "/api/v1/processes/pm2:$(reboot)@a",
        "/api/v1/processes/docker:web@a",
        "/api/v1/servers/a%20b",
        "/api/v1/migrations/..%2F..%2Fetc",
    ] {
        let refused = cluster.get(path).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {:#}",
            refused.body
        );
    }
    for body in [
        json!({"process_id": "pm2:../x@a", "source_server_id": "a", "target_server_id": "b"}),
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "b;rm"}),
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "a"}),
    ] {
        let refused = cluster.post("/api/v1/migrations", body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:#}",
            refused.body
        );
    }
}

#[tokio::test]
async fn a_migration_whose_app_fails_its_health_check_is_rolled_back_and_the_source_runs_again() {
    let (cluster, a, b) = fleet(Setup {
        health_timeout_secs: 6,
        ..Setup::default()
    })
    .await;
    // Nothing listens on this port: the app on b never answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = start_migration(
        &cluster,
        json!({"process_id": "pm2:counter@a", "source_server_id": "a",
               "target_server_id": "b", "port": port}),
    )
    .await;
    let migration = wait_migration(&cluster, &id).await;
    assert_eq!(migration["status"], "rolled_back", "{migration:#}");
    assert!(
        migration["error_message"]
            .as_str()
            .unwrap()
            .contains("health"),
        "{migration:#}"
    );
    let undone: Vec<(&str, &str)> = migration["compensations"]
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
    assert_eq!(
        undone,
        [
            ("start", "completed"),
            ("restore", "completed"),
            ("stop", "completed"),
            ("warm", "completed"),
        ]
    );
    // The source runs again on its own data; the target is clean.
    assert_eq!(a.pm2_status("counter").as_deref(), Some("online"));
    let before = rows(&a.state_dir().join("app.db")).len();
    let deadline = Instant::now() + DEADLINE;
    while rows(&a.state_dir().join("app.db")).len() <= before {
        assert!(
            Instant::now() < deadline,
            "the source app does not write again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.pm2_status("counter"), None);
    assert!(!b.state_dir().exists(), "the target's copy is left");
    assert!(!b.staging().join(&id).exists());
    assert!(!a.staging().join(&id).exists());
    let logs = cluster.get("/api/v1/logs").await.body;
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("rolled back")),
        "{logs:#}"
    );
}

#[tokio::test]
async fn an_archive_past_artifacts_max_bytes_stops_the_migration_and_the_source_runs_again() {
    // Not enough room on the API host, as `[artifacts] max_bytes` says.
    let (cluster, a, b) = fleet(Setup {
        max_bytes: Some(512),
        ..Setup::default()
    })
    .await;
    let id = start_migration(
        &cluster,
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "b"}),
    )
    .await;
    let migration = wait_migration(&cluster, &id).await;
    assert_eq!(migration["status"], "rolled_back", "{migration:#}");
    let upload = migration["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "upload")
        .unwrap();
    assert_eq!(upload["status"], "failed");
    assert_eq!(upload["attempt"], 1, "a refusal that lasts is not retried");
    assert!(
        upload["error"]["message"]
            .as_str()
            .unwrap()
            .contains("artifact_too_large"),
        "{upload:#}"
    );
    let undone: Vec<&str> = migration["compensations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["compensates"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["stop", "warm"]);
    assert_eq!(a.pm2_status("counter").as_deref(), Some("online"));
    assert_eq!(b.pm2_status("counter"), None);
    assert!(!b.state_dir().exists());
    assert!(!a.staging().join(&id).exists());
    let stored: i64 = cluster
        .sqlite()
        .query_row("SELECT count(*) FROM artifacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn the_target_s_worker_killed_mid_restore_is_reaped_and_the_restore_resumes_on_its_next_worker()
 {
    let (mut cluster, a, b) = fleet(Setup {
        // Short enough to be reaped soon, long enough for heartbeats that
        // wait behind a 16 MiB chunk's commit on a loaded 2-core machine
        // (3 s ran the upload out of attempts there).
        lease_secs: Some(10),
        bulk_bytes: 64 * 1024 * 1024,
        ..Setup::default()
    })
    .await;
    let id = start_migration(
        &cluster,
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "b"}),
    )
    .await;
    let step = |migration: &Value, name: &str| {
        migration["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let migration = cluster.get(&format!("/api/v1/migrations/{id}")).await.body;
        let restore = step(&migration, "restore");
        if restore["status"] == "running" {
            break;
        }
        assert_eq!(
            restore["status"], "pending",
            "the restore ended before the kill: {migration:#}"
        );
        assert!(
            Instant::now() < deadline,
            "the restore never ran: {migration:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.workers[b.worker].signal(libc::SIGKILL);
    cluster.workers[b.worker]
        .wait_exit(DEADLINE)
        .expect("the worker died");
    let mut env = b.env.clone();
    env.retain(|(k, _)| *k != "OPSQUEUE_WORKER__ID");
    cluster.start_worker(&env);

    let migration = wait_migration(&cluster, &id).await;
    assert_eq!(migration["status"], "completed", "{migration:#}");
    assert_eq!(step(&migration, "restore")["attempt"], 2, "{migration:#}");
    assert_eq!(b.pm2_status("counter").as_deref(), Some("online"));
    assert_eq!(a.pm2_status("counter").as_deref(), Some("stopped"));
    let sha = |path: PathBuf| {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
    };
    assert_eq!(
        sha(b.state_dir().join("bulk.bin")),
        sha(a.state_dir().join("bulk.bin"))
    );
    let source_rows = rows(&a.state_dir().join("app.db"));
    let target_rows = rows(&b.state_dir().join("app.db"));
    assert_eq!(&target_rows[..source_rows.len()], &source_rows[..]);
    // Nothing of the killed attempt is left beside the state directory.
    let leftovers: Vec<String> = std::fs::read_dir(&b.pm2.apps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("opsqueue"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn the_source_s_link_cut_mid_upload_is_reaped_and_the_upload_resumes_where_the_api_stands() {
    let netns = Netns::new();
    let (cluster, a, b) = fleet(Setup {
        // Short enough to be reaped soon, long enough for heartbeats that
        // wait behind a 16 MiB chunk's commit on a loaded 2-core machine
        // (3 s ran the upload out of attempts there).
        lease_secs: Some(10),
        bulk_bytes: 64 * 1024 * 1024,
        source_in: Some((netns.name.clone(), netns.outer_ip.clone())),
        ..Setup::default()
    })
    .await;
    let id = start_migration(
        &cluster,
        json!({"process_id": "pm2:counter@a", "source_server_id": "a", "target_server_id": "b"}),
    )
    .await;
    // Cut once the API holds part of the archive.
    let received = || -> i64 {
        cluster
            .sqlite()
            .query_row(
                "SELECT coalesce(max(received), 0) FROM artifacts",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while received() == 0 {
        assert!(Instant::now() < deadline, "the upload never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    netns.cut();
    let migration = cluster.get(&format!("/api/v1/migrations/{id}")).await.body;
    let upload = migration["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "upload")
        .unwrap()["operation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let requeued = cluster
        .wait_until(&upload, |op| op["status"] != "running")
        .await;
    assert_eq!(requeued["status"], "pending", "{requeued:#}");
    assert_eq!(requeued["error"]["code"], "lease_expired");
    let cut_at = received();
    netns.heal();

    let migration = wait_migration(&cluster, &id).await;
    assert_eq!(migration["status"], "completed", "{migration:#}");
    let done = cluster.operation(&upload).await;
    assert!(done["attempt"].as_i64().unwrap() >= 2, "{done:#}");
    if cut_at < 64 * 1024 * 1024 {
        let resumed = cluster.logs(&upload).await.iter().any(|line| {
            line["line"]
                .as_str()
                .unwrap_or_default()
                .starts_with("resuming the upload at byte")
        });
        assert!(resumed, "the next attempt started over");
    }
    let sha = |path: PathBuf| {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
    };
    assert_eq!(
        sha(b.state_dir().join("bulk.bin")),
        sha(a.state_dir().join("bulk.bin"))
    );
    assert_eq!(b.pm2_status("counter").as_deref(), Some("online"));
}

/// `PUT` one chunk as an agent.
async fn put_chunk(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &[(&str, String)],
    bytes: &'static [u8],
) -> StatusCode {
    http.put(url)
        .bearer_auth(token)
        .query(query)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn an_agent_touches_only_the_artifacts_of_steps_it_holds_and_max_bytes_is_a_clear_413() {
    let mut cluster = Cluster::new();
    let (cert, key) = self_signed(cluster.dir.path(), &["localhost", "127.0.0.1"]);
    cluster.use_tls(&cert, &key);
    cluster.set_env("OPSQUEUE_ARTIFACTS__MAX_BYTES", "64");
    cluster.start_api();
    let url = cluster.api_url.clone();
    let (a, b) = (
        Agent::new(&cluster, "a", &["a"]),
        Agent::new(&cluster, "b", &["b"]),
    );
    cluster.start_worker(&a.env(&url, Some(&cert), &["a"]));
    // A workflow step running on a's worker: what a holds.
    let submitted = cluster
        .post(
            "/api/v1/workflows",
            json!({"steps": [{"name": "hold", "type": "diag.sleep",
                              "payload": {"seconds": 60}, "target": "a"}]}),
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::ACCEPTED,
        "{:#}",
        submitted.body
    );
    let step = submitted.body["steps"][0]["operation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let running = cluster
        .wait_until(&step, |op| op["status"] == "running")
        .await;
    let holder = vec![
        ("worker", "remote-a".to_owned()),
        ("operation", step.clone()),
        ("attempt", running["attempt"].to_string()),
    ];
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let artifacts = format!("{url}/api/v1/agent/artifacts");
    let declare =
        |token: String, query: Vec<(&'static str, String)>, size: u64, data: &'static [u8]| {
            let (http, artifacts) = (http.clone(), artifacts.clone());
            async move {
                use sha2::Digest as _;
                let sha = format!("{:x}", sha2::Sha256::digest(data));
                let response = http
                    .post(&artifacts)
                    .bearer_auth(token)
                    .query(&query)
                    .json(&json!({"name": "state", "size": size, "sha256": sha}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap_or_default())
            }
        };
    let data: &'static [u8] = b"the state archive";
    // Another agent, naming a step it does not hold: refused.
    let (status, body) = declare(b.token(), holder.clone(), data.len() as u64, data).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:#}");
    // An admin key is not an agent: the agent protocol refuses it.
    let (status, _) = declare(
        cluster.token.clone(),
        holder.clone(),
        data.len() as u64,
        data,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Past [artifacts] max_bytes: a clear 413.
    let (status, body) = declare(a.token(), holder.clone(), 65, data).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:#}");
    assert_eq!(body["code"], "artifact_too_large");
    // The holder itself: declared, sent in two chunks, read back whole.
    let (status, artifact) = declare(a.token(), holder.clone(), data.len() as u64, data).await;
    assert_eq!(status, StatusCode::OK, "{artifact:#}");
    let id = artifact["id"].as_str().unwrap().to_owned();
    let chunk_url = format!("{artifacts}/{id}");
    let chunk = |offset: usize, end: usize| {
        use sha2::Digest as _;
        let mut query = holder.clone();
        query.push(("offset", offset.to_string()));
        query.push((
            "sha256",
            format!("{:x}", sha2::Sha256::digest(&data[offset..end])),
        ));
        query
    };
    assert_eq!(
        put_chunk(&http, &chunk_url, &b.token(), &chunk(0, 5), &data[..5]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put_chunk(
            &http,
            &chunk_url,
            &a.token(),
            &chunk(5, data.len()),
            &data[5..]
        )
        .await,
        StatusCode::CONFLICT,
        "a chunk past where the artifact stands"
    );
    assert_eq!(
        put_chunk(&http, &chunk_url, &a.token(), &chunk(0, 5), &data[..5]).await,
        StatusCode::OK
    );
    assert_eq!(
        put_chunk(
            &http,
            &chunk_url,
            &a.token(),
            &chunk(5, data.len()),
            &data[5..]
        )
        .await,
        StatusCode::OK
    );
    let content = http
        .get(format!("{chunk_url}/content"))
        .bearer_auth(a.token())
        .query(&holder)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), StatusCode::OK);
    assert_eq!(content.bytes().await.unwrap().as_ref(), data);
    let refused = http
        .get(format!("{chunk_url}/content"))
        .bearer_auth(b.token())
        .query(&holder)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // Hostile artifact ids are refused.
    let hostile = http
        .get(format!("{artifacts}/..%2F..%2Fetc%2Fpasswd"))
        .bearer_auth(a.token())
        .query(&holder)
        .send()
        .await
        .unwrap();
    assert_eq!(hostile.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
