//! The systemd units in `systemd/`, checked offline and run for real.
//!
//! Offline: every unit passes `systemd-analyze verify` with nothing on
//! stderr, and each service's `systemd-analyze security --offline=true`
//! exposure meets the target stated in `systemd/README.md`.
//!
//! For real: `systemd/install.sh` installs this build's binaries and the
//! unchanged units into a booted systemd-nspawn container (see
//! `opsqueue_tests::nspawn`), and the test drives them like an operator
//! would, with systemctl and HTTP. The only addition is a drop-in that moves
//! the API to a free port, since the container shares the host's network.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opsqueue_tests::nspawn::Container;
use opsqueue_tests::{DEADLINE, binary};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SERVICES: [&str; 3] = [
    "opsqueue-api.service",
    "opsqueue-worker.service",
    "opsqueue-monitor.service",
];

/// The exposure targets stated in systemd/README.md.
const EXPOSURE_TARGETS: [(&str, f64); 3] = [
    ("opsqueue-api.service", 2.0),
    ("opsqueue-monitor.service", 2.0),
    ("opsqueue-worker.service", 3.5),
];

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("systemd")
}

/// The units as shipped, with `ExecStart=` pointing at this build's
/// binaries (`verify` insists that they exist).
fn units_for_this_build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for unit in SERVICES.iter().chain(&["opsqueue.target"]) {
        let mut text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
        for bin in ["opsqueue-api", "opsqueue-worker", "opsqueue-monitor"] {
            text = text.replace(
                &format!("/usr/local/bin/{bin} "),
                &format!("{} ", binary(bin).display()),
            );
        }
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    dir
}

#[test]
fn every_unit_passes_systemd_analyze_verify_with_nothing_on_stderr() {
    let dir = units_for_this_build();
    for unit in SERVICES.iter().chain(&["opsqueue.target"]) {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(unit))
            .output()
            .expect("run systemd-analyze (scripts/install-test-deps installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: verify said ({}):\n{stderr}",
            out.status
        );
    }
}

#[test]
fn every_service_meets_its_exposure_target() {
    let dir = units_for_this_build();
    for (unit, target) in EXPOSURE_TARGETS {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(unit))
            .output()
            .expect("run systemd-analyze");
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("Overall exposure level for {unit}: ");
        let score: f64 = text
            .lines()
            .find_map(|line| line.split_once(&prefix).map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit} in:\n{text}"));
        assert!(
            score <= target,
            "{unit}: exposure {score} is above its target {target}:\n{text}"
        );
    }
}

/// One `key = value` (or `Key=value`) setting of a shipped file.
fn setting(file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(systemd_dir().join(file)).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{file} sets no {key}"))
}

#[test]
fn the_worker_units_stop_timeout_covers_the_shipped_grace_and_the_hand_back_margin() {
    // The worker drains for `shutdown_grace_secs`, then takes up to 15 s
    // (its hand-back margin; systemd_notify.rs checks it never extends
    // past that) to stop the rest and hand it back.
    let grace: u64 = setting("opsqueue.toml", "shutdown_grace_secs")
        .parse()
        .unwrap();
    let stop = setting("opsqueue-worker.service", "TimeoutStopSec");
    let stop: u64 = stop.strip_suffix('s').unwrap_or(&stop).parse().unwrap();
    assert!(
        stop >= grace + 15,
        "TimeoutStopSec={stop}s cannot hold a {grace} s grace plus 15 s"
    );
}

/// An HTTP client for the API inside the container.
struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn enqueue(&self, kind: &str, payload: Value) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/operations", self.url))
            .bearer_auth(&self.key)
            .json(&json!({"type": kind, "payload": payload}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let op: Value = response.json().await.unwrap();
        op["id"].as_str().unwrap().to_owned()
    }

    /// Polls until `done(op)` holds.
    async fn wait_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, op) = self.get(&format!("/api/v1/operations/{id}?wait=2")).await;
            if status == StatusCode::OK && done(&op) {
                return op;
            }
            assert!(Instant::now() < deadline, "operation {id} stuck: {op:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_status(&self, id: &str, wanted: &str) -> Value {
        self.wait_until(id, |op| op["status"] == wanted).await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    // Past a watchdog timeout (30 s) and a restart.
    let deadline = Instant::now() + DEADLINE * 2;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn installed_units_boot_under_systemd_serve_and_restart_a_wedged_worker() {
    let bin_dir = binary("opsqueue-worker").parent().unwrap().to_path_buf();
    let ct = Container::boot(&[
        (&bin_dir, "/opt/opsqueue"),
        (&systemd_dir(), "/opt/opsqueue-systemd"),
    ]);
    // `--binaries`: the debug binaries of this build. The install's own
    // `cargo build --release` path is not exercised here: a release build
    // takes minutes, too slow for CI.
    let install = "/opt/opsqueue-systemd/install.sh";
    ct.run(&[
        install,
        "install",
        "--binaries",
        "/opt/opsqueue",
        "--no-start",
    ]);
    // Enabled, so they start at boot; the configuration is root:opsqueue
    // 0640 in a 0750 directory: the unprivileged services read it, nobody
    // else does (driver sections may hold secrets).
    let enabled = ct.run(&[
        "systemctl",
        "is-enabled",
        "opsqueue.target",
        SERVICES[0],
        SERVICES[1],
        SERVICES[2],
    ]);
    assert_eq!(
        enabled.lines().collect::<Vec<_>>(),
        ["enabled"; 4],
        "{enabled}"
    );
    let config = ct.run(&[
        "stat",
        "-c",
        "%n %a %U %G",
        "/etc/opsqueue",
        "/etc/opsqueue/opsqueue.toml",
    ]);
    assert_eq!(
        config.lines().collect::<Vec<_>>(),
        [
            "/etc/opsqueue 750 root opsqueue",
            "/etc/opsqueue/opsqueue.toml 640 root opsqueue"
        ],
        "{config}"
    );
    let port = free_port();
    let dropin = ct.path("/etc/systemd/system/opsqueue-api.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test-port.conf"),
        format!("[Service]\nEnvironment=OPSQUEUE_API__BIND=127.0.0.1:{port}\n"),
    )
    .unwrap();
    ct.run(&["systemctl", "daemon-reload"]);

    // Type=notify: `start` returns once every service said READY=1 (with a
    // STATUS= line, which only a notify message sets).
    ct.run(&["systemctl", "start", "opsqueue.target"]);
    for unit in SERVICES {
        let props = ct.show(unit, &["ActiveState", "SubState", "StatusText"]);
        assert_eq!(props["ActiveState"], "active", "{unit}: {props:?}");
        assert_eq!(props["SubState"], "running", "{unit}: {props:?}");
        assert!(!props["StatusText"].is_empty(), "{unit}: {props:?}");
    }
    let key = std::fs::read_to_string(ct.path("/var/lib/opsqueue/admin.key")).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{port}"),
        key: key.trim().to_owned(),
    };
    // PrivateIPC=yes: the worker has its own IPC namespace, not the host's.
    let worker = ct.prop("opsqueue-worker", "MainPID");
    let ipc = |pid: &str| ct.run(&["readlink", &format!("/proc/{pid}/ns/ipc")]);
    assert_ne!(ipc(&worker), ipc("1"), "the worker shares the host's IPC");

    // Ready means ready: the listener answers and the worker is registered.
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    let (status, workers) = api.get("/api/v1/workers").await;
    assert_eq!(status, StatusCode::OK, "{workers}");
    let running = workers["items"].as_array().map_or(0, Vec::len);
    assert_eq!(running, 1, "{workers}");

    // An operation fired at the API completes.
    let id = api.enqueue("diag.noop", json!({})).await;
    api.wait_status(&id, "completed").await;

    // The unprivileged API and monitor and the root worker share the data:
    // every file in it is in the group opsqueue, the database files 0660.
    let listing = ct.run(&[
        "stat",
        "-c",
        "%n %a %G",
        "/var/lib/opsqueue/opsqueue.db",
        "/var/lib/opsqueue/opsqueue.db-wal",
        "/var/lib/opsqueue/opsqueue.db-shm",
        "/var/lib/opsqueue/wake",
    ]);
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[2], "opsqueue", "{listing}");
        let mode = if fields[0].ends_with("wake") {
            "2770"
        } else {
            "660"
        };
        assert_eq!(fields[1], mode, "{listing}");
    }

    // Logs reach the journal with their fields as OPSQUEUE_* fields.
    let journal = ct.run(&[
        "journalctl",
        "-u",
        "opsqueue-worker",
        "-o",
        "json",
        "--no-pager",
    ]);
    let started: Value = journal
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["MESSAGE"] == "worker started")
        .unwrap_or_else(|| panic!("no 'worker started' entry:\n{journal}"));
    assert!(started["OPSQUEUE_WORKER"].is_string(), "{started:#}");

    // Installing again upgrades in place: the configuration is kept and the
    // target restarted, each service READY again as a new process.
    let before: Vec<String> = SERVICES.iter().map(|u| ct.prop(u, "MainPID")).collect();
    let out = ct.run(&[install, "install", "--binaries", "/opt/opsqueue"]);
    assert!(
        out.contains("keeping the existing /etc/opsqueue/opsqueue.toml"),
        "{out}"
    );
    for (unit, old) in SERVICES.iter().zip(&before) {
        let props = ct.show(unit, &["ActiveState", "MainPID"]);
        assert_eq!(props["ActiveState"], "active", "{unit}: {props:?}");
        assert_ne!(&props["MainPID"], old, "{unit} was not restarted");
    }

    // READY=1 waits for the worker's registration: with the database's
    // write lock held, the unit stays `activating`; released, it is active.
    ct.run(&["systemctl", "stop", "opsqueue-worker"]);
    let db = rusqlite::Connection::open(ct.path("/var/lib/opsqueue/opsqueue.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    ct.run(&["systemctl", "start", "--no-block", "opsqueue-worker"]);
    wait_for("the worker process runs", || {
        ct.prop("opsqueue-worker", "MainPID") != "0"
    });
    let held = Instant::now() + Duration::from_secs(3);
    while Instant::now() < held {
        assert_eq!(ct.prop("opsqueue-worker", "ActiveState"), "activating");
        std::thread::sleep(Duration::from_millis(200));
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    wait_for("the worker is active", || {
        ct.prop("opsqueue-worker", "ActiveState") == "active"
    });

    // A wedged worker (SIGSTOP) stops feeding the watchdog: systemd kills
    // and restarts it, and the new one serves.
    let wedged = ct.prop("opsqueue-worker", "MainPID");
    ct.run(&["sh", "-c", &format!("kill -STOP {wedged}")]);
    wait_for("the watchdog restarted the worker", || {
        let props = ct.show("opsqueue-worker", &["NRestarts", "ActiveState", "MainPID"]);
        props["NRestarts"] != "0" && props["ActiveState"] == "active" && props["MainPID"] != wedged
    });
    let journal = ct.run(&["journalctl", "-u", "opsqueue-worker", "--no-pager"]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    // The sandboxed monitor saw the killed worker's process gone (and not
    // the new one's): only the new worker is left running.
    let alive = ct.prop("opsqueue-worker", "MainPID");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, workers) = api.get("/api/v1/workers").await;
        let pids: Vec<String> = workers["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w["pid"].to_string())
            .collect();
        if pids == [alive.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "workers {pids:?}, alive {alive}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = api.enqueue("diag.noop", json!({})).await;
    api.wait_status(&id, "completed").await;

    // `systemctl stop` during a diag.sleep: the worker lets it finish
    // within its grace (its `sleep` child untouched by systemd's SIGTERM,
    // KillMode=mixed), then exits cleanly.
    let id = api
        .enqueue("diag.sleep", json!({"seconds": 3, "child": true}))
        .await;
    api.wait_status(&id, "running").await;
    ct.run(&["systemctl", "stop", "opsqueue-worker"]);
    let op = api.wait_until(&id, |op| op["status"] != "running").await;
    assert_eq!(op["status"], "completed", "{op:#}");
    assert_eq!(op["attempt"], 1, "{op:#}");
    let props = ct.show(
        "opsqueue-worker",
        &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"],
    );
    assert_eq!(props["ActiveState"], "inactive", "{props:?}");
    assert_eq!(props["Result"], "success", "{props:?}");
    assert_eq!(props["ExecMainStatus"], "0", "{props:?}");

    // The target stops what is left; uninstall keeps the data, --purge
    // removes it and the user.
    ct.run(&["systemctl", "stop", "opsqueue.target"]);
    for unit in SERVICES {
        assert_eq!(ct.prop(unit, "ActiveState"), "inactive", "{unit}");
    }
    ct.run(&[install, "uninstall"]);
    for unit in SERVICES {
        assert_eq!(ct.prop(unit, "LoadState"), "not-found", "{unit}");
    }
    assert!(!ct.path("/usr/local/bin/opsqueue-api").exists());
    assert!(ct.path("/var/lib/opsqueue/opsqueue.db").exists());
    assert!(ct.exec(&["getent", "passwd", "opsqueue"]).status.success());
    ct.run(&[install, "uninstall", "--purge"]);
    assert!(!ct.path("/var/lib/opsqueue").exists());
    assert!(!ct.path("/etc/opsqueue").exists());
    assert!(!ct.exec(&["getent", "passwd", "opsqueue"]).status.success());
}
