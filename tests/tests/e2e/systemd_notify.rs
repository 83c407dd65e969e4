//! The sd_notify(3) messages of the three binaries, without systemd: each
//! process gets `NOTIFY_SOCKET` pointing at a Unix datagram socket the test
//! reads. READY=1 comes only once a process can do its job (with the
//! database's write lock held, none can migrate the store, so none is
//! ready), STOPPING=1 on SIGTERM, WATCHDOG=1 only while the loop that sends
//! it gets through the store, and EXTEND_TIMEOUT_USEC while the worker
//! drains.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opsqueue_tests::{Cluster, DEADLINE, Proc};
use reqwest::StatusCode;
use serde_json::json;

/// Stands in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> Self {
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self { socket, path }
    }

    /// The next message, if one arrives before `until`.
    fn next(&self, until: Instant) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Every message that arrives before `until`.
    fn collect(&self, until: Instant) -> Vec<String> {
        std::iter::from_fn(|| self.next(until)).collect()
    }

    /// Reads messages until one has a line starting with `line`; returns
    /// it, or at the deadline every message that came instead.
    fn try_wait_for(&self, line: &str) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while let Some(message) = self.next(deadline) {
            if message.lines().any(|l| l.starts_with(line)) {
                return Ok(message);
            }
            seen.push(message);
        }
        Err(seen)
    }

    /// Like `try_wait_for`; panics with `proc`'s log at the deadline.
    fn wait_for(&self, line: &str, proc: &Proc) -> String {
        self.try_wait_for(line).unwrap_or_else(|seen| {
            panic!(
                "{} never sent {line}; it sent {seen:?}\n{}",
                proc.name,
                proc.log_text()
            )
        })
    }
}

fn has_line(messages: &[String], line: &str) -> bool {
    messages.iter().any(|m| m.lines().any(|l| l == line))
}

fn notify_socket(cluster: &mut Cluster, name: &str) -> NotifySocket {
    let socket = NotifySocket::bind(cluster.path(&format!("{name}.notify")));
    cluster.set_env("NOTIFY_SOCKET", socket.path.display());
    socket
}

/// Takes the write lock of the cluster's database before any binary opened
/// it: an empty database in WAL mode (as the store makes it), not yet
/// migrated. A binary starting now waits to migrate until `COMMIT`.
fn lock_unmigrated_database(cluster: &Cluster) -> rusqlite::Connection {
    std::fs::create_dir_all(cluster.db_path().parent().unwrap()).unwrap();
    let db = cluster.sqlite();
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    db
}

/// `proc` pings the watchdog; once the store is wedged (its write lock
/// held) it stops: a ping already on its way may land in the first second,
/// none after that while the lock is held. Released, it pings again.
fn assert_watchdog_pauses_while_the_store_is_wedged(
    cluster: &Cluster,
    socket: &NotifySocket,
    proc: &Proc,
) {
    socket.wait_for("WATCHDOG=1", proc);
    let db = cluster.sqlite();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    socket.collect(Instant::now() + Duration::from_secs(1));
    let wedged = socket.collect(Instant::now() + Duration::from_secs(4));
    assert!(
        !has_line(&wedged, "WATCHDOG=1"),
        "{} pinged while wedged: {wedged:?}",
        proc.name
    );
    db.execute_batch("COMMIT").unwrap();
    socket.wait_for("WATCHDOG=1", proc);
}

fn schema_version(cluster: &Cluster) -> i64 {
    cluster
        .sqlite()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn worker_row_count(db: &Path, pid: i32) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT count(*) FROM workers WHERE pid = ?1 AND stopped_at IS NULL",
        [pid],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn each_binary_says_ready_once_it_can_work_and_stopping_on_sigterm() {
    let mut cluster = Cluster::new();
    let api = notify_socket(&mut cluster, "api");
    cluster.start_api();
    let ready = api.wait_for("READY=1", cluster.api.as_ref().unwrap());
    assert!(ready.contains("STATUS=listening on http://"), "{ready}");
    // READY=1 came after the listener was bound: it answers now.
    assert_eq!(
        cluster
            .http
            .get(format!("{}/health", cluster.api_url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    cluster.set_env("WATCHDOG_USEC", 2_000_000);
    let worker = notify_socket(&mut cluster, "worker");
    let w = cluster.start_worker(&[]);
    worker.wait_for("READY=1", &cluster.workers[w]);
    // READY=1 came after the worker registered.
    let pid = cluster.workers[w].pid();
    assert_eq!(worker_row_count(&cluster.db_path(), pid), 1);
    worker.wait_for("WATCHDOG=1", &cluster.workers[w]);

    let monitor = notify_socket(&mut cluster, "monitor");
    let m = cluster.start_monitor();
    let ready = monitor.wait_for("READY=1", &cluster.monitors[m]);
    assert!(ready.contains("STATUS=monitor"), "{ready}");
    // Its reaper rounds (every second) feed the watchdog.
    monitor.wait_for("WATCHDOG=1", &cluster.monitors[m]);

    let stops = [
        (&api, cluster.api.as_mut().unwrap()),
        (&worker, &mut cluster.workers[w]),
        (&monitor, &mut cluster.monitors[m]),
    ];
    for (socket, proc) in stops {
        proc.signal(libc::SIGTERM);
        socket.wait_for("STOPPING=1", proc);
        let status = proc.wait_exit(DEADLINE).expect("exit after SIGTERM");
        assert!(
            status.success(),
            "{}: {status}\n{}",
            proc.name,
            proc.log_text()
        );
    }
    assert_eq!(worker_row_count(&cluster.db_path(), pid), 0);
}

#[tokio::test]
async fn the_api_says_ready_only_once_its_store_is_migrated_and_its_listener_answers() {
    let mut cluster = Cluster::new();
    // Opening the store waits as long as the lock is held, rather than
    // failing.
    cluster.set_env("OPSQUEUE_DATABASE__BUSY_TIMEOUT_MS", 120_000);
    let socket = notify_socket(&mut cluster, "api");
    let db = lock_unmigrated_database(&cluster);
    // The API makes its own first key (`keys create` would need the lock).
    cluster.token = "not used".into();
    // start_api returns once the API says it listens.
    let starting = std::thread::spawn(move || {
        cluster.start_api();
        cluster
    });

    // It cannot migrate the store: no READY=1, and no listener either.
    let held = socket.collect(Instant::now() + Duration::from_secs(3));
    assert!(
        !has_line(&held, "READY=1"),
        "ready while locked out: {held:?}"
    );
    assert!(!starting.is_finished(), "the API listened while locked out");
    db.execute_batch("COMMIT").unwrap();
    drop(db);

    let ready = socket.try_wait_for("READY=1");
    let cluster = starting.join().expect("the API started");
    let ready =
        ready.unwrap_or_else(|seen| panic!("no READY=1, only {seen:?}\n{}", cluster.logs_tail()));
    let address = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .unwrap_or_else(|| panic!("no address in {ready:?}"));
    let health = cluster
        .http
        .get(format!("{address}/health"))
        .send()
        .await
        .expect("the listener answers");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        schema_version(&cluster),
        opsqueue_shared::store::latest_version(),
        "migrated before READY=1"
    );
}

#[tokio::test]
async fn the_monitor_says_ready_only_once_its_store_is_migrated() {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_DATABASE__BUSY_TIMEOUT_MS", 120_000);
    let socket = notify_socket(&mut cluster, "monitor");
    let db = lock_unmigrated_database(&cluster);
    let m = cluster.start_monitor();

    let held = socket.collect(Instant::now() + Duration::from_secs(3));
    assert!(
        !has_line(&held, "READY=1"),
        "ready while locked out: {held:?}"
    );
    assert_eq!(schema_version(&cluster), 0);
    db.execute_batch("COMMIT").unwrap();
    drop(db);

    socket.wait_for("READY=1", &cluster.monitors[m]);
    assert_eq!(
        schema_version(&cluster),
        opsqueue_shared::store::latest_version(),
        "migrated before READY=1"
    );
}

#[tokio::test]
async fn the_monitor_feeds_the_watchdog_only_while_its_reaper_gets_through_the_store() {
    let mut cluster = Cluster::new();
    // A reaper round waits as long as the lock is held, rather than failing.
    cluster.set_env("OPSQUEUE_DATABASE__BUSY_TIMEOUT_MS", 120_000);
    cluster.set_env("WATCHDOG_USEC", 2_000_000);
    let socket = notify_socket(&mut cluster, "monitor");
    let m = cluster.start_monitor();
    socket.wait_for("READY=1", &cluster.monitors[m]);

    // The reaper (every second, one write transaction) cannot finish a
    // round while the store is wedged.
    assert_watchdog_pauses_while_the_store_is_wedged(&cluster, &socket, &cluster.monitors[m]);
}

#[tokio::test]
async fn the_worker_feeds_the_watchdog_only_while_its_loop_gets_through_the_store() {
    let mut cluster = Cluster::new();
    // A claim waits as long as the lock is held, rather than failing.
    cluster.set_env("OPSQUEUE_DATABASE__BUSY_TIMEOUT_MS", 120_000);
    cluster.set_env("WATCHDOG_USEC", 2_000_000);
    let socket = notify_socket(&mut cluster, "worker");
    let w = cluster.start_worker(&[]);
    socket.wait_for("READY=1", &cluster.workers[w]);

    // An idle worker claims every second, and pings at most every 0.5 s.
    assert_watchdog_pauses_while_the_store_is_wedged(&cluster, &socket, &cluster.workers[w]);
}

#[tokio::test]
async fn a_draining_worker_extends_its_stop_timeout_and_exits_cleanly() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let socket = notify_socket(&mut cluster, "worker");
    let w = cluster.start_worker(&[]);
    socket.wait_for("READY=1", &cluster.workers[w]);

    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 2, "child": true}))
        .await;
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    cluster.workers[w].signal(libc::SIGTERM);
    socket.wait_for("STOPPING=1", &cluster.workers[w]);
    let extend = socket.wait_for("EXTEND_TIMEOUT_USEC=", &cluster.workers[w]);
    let usec: u64 = extend
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {extend:?}"));
    // Never past the grace (30 s by default) plus the hand-back margin.
    assert!(usec > 0 && usec <= 45_000_000, "{extend}");
    assert!(extend.contains("STATUS=draining: 1 operation"), "{extend}");

    let status = cluster.workers[w]
        .wait_exit(DEADLINE)
        .expect("the worker exits");
    assert!(status.success(), "{status}");
    assert_eq!(cluster.wait_terminal(&id).await["status"], "completed");
}
