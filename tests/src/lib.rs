//! The end-to-end harness: a temporary directory holding a database, and the
//! real `opsqueue-api`, `opsqueue-worker` and `opsqueue-monitor` binaries
//! started against it as processes, with typed helpers to fire operations
//! over HTTP and poll them. Each cluster's API listens on a port the kernel
//! picks, so tests run in parallel.
//!
//! The binaries come from the same target directory as the test binary:
//! `scripts/test` builds the whole workspace before it runs the tests.
//! Every process writes its output to `<dir>/logs/<name>.log`; when a test
//! panics, the tail of each log is printed.

pub mod browser;
pub mod caddy_server;
pub mod fakepve;
pub mod fleet;
pub mod nspawn;
pub mod pm2_home;
pub mod pocketbase;
pub mod user_systemd;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Generous: tests wait up to this for anything, and never assert timings.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Path of one of the workspace's binaries: beside the running executable
/// (the benchmark, in `target/<profile>/`) or one level up (a test, in
/// `target/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let beside = exe.parent().expect("a directory");
    let candidates = [
        beside.join(name),
        beside.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("{name} is missing beside {}: run `cargo build --workspace` first (scripts/test does)", beside.display()))
}

/// One running opsqueue process.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The events of a process started with `OPSQUEUE_LOG__FORMAT=json`
    /// (fields flattened beside `message`); lines that are not JSON are
    /// skipped.
    pub fn log_events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Whether the process logged an event with this message.
    pub fn logged(&self, message: &str) -> bool {
        self.log_events().iter().any(|e| e["message"] == message)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The test client: it drops an idle connection after 2 s, before the
/// API's keep-alive (5 s, actix's default) closes it, so a request after a
/// slow step never goes out on a connection the server just closed
/// (`IncompleteMessage`).
fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
}

/// A temporary opsqueue installation.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pub api_url: String,
    /// An admin key made with `opsqueue-api keys create`.
    pub token: String,
    pub api: Option<Proc>,
    pub workers: Vec<Proc>,
    pub monitors: Vec<Proc>,
    pub http: reqwest::Client,
    started: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    /// A fresh directory and database; nothing started yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let db = dir.path().join("data").join("opsqueue.db");
        let env = vec![
            (
                "OPSQUEUE_DATABASE__PATH".to_owned(),
                db.display().to_string(),
            ),
            ("OPSQUEUE_API__BIND".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "OPSQUEUE_API__RATE_LIMIT__PER_KEY_PER_SECOND".to_owned(),
                "0".to_owned(),
            ),
            (
                "OPSQUEUE_API__RATE_LIMIT__PER_ADDRESS_PER_SECOND".to_owned(),
                "0".to_owned(),
            ),
            (
                "OPSQUEUE_WORKER__BACKOFF_BASE_MS".to_owned(),
                "50".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        Self {
            dir,
            env,
            api_url: String::new(),
            token: String::new(),
            api: None,
            workers: Vec::new(),
            monitors: Vec::new(),
            http: client(reqwest::Client::builder()),
            started: 0,
        }
    }

    /// Sets an environment variable for every process started afterwards.
    pub fn set_env(&mut self, key: &str, value: impl ToString) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_string()));
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("opsqueue.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, name: &str, extra_env: &[(&str, String)]) -> Command {
        let mut command = Command::new(binary(name));
        command.env_clear();
        for key in ["PATH", "HOME", "LANG"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(extra_env.iter().map(|(k, v)| (*k, v)));
        command.stdin(Stdio::null());
        command
    }

    fn log_file(&mut self, name: &str) -> (PathBuf, std::fs::File) {
        self.started += 1;
        let path = self
            .dir
            .path()
            .join("logs")
            .join(format!("{:02}-{name}.log", self.started));
        let file = std::fs::File::create(&path).expect("log file");
        (path, file)
    }

    /// Runs `opsqueue-api <args>` to completion and returns its stdout.
    pub fn api_command(&self, args: &[&str]) -> std::process::Output {
        self.command("opsqueue-api", &[])
            .args(args)
            .output()
            .expect("run opsqueue-api")
    }

    /// Makes a key with `opsqueue-api keys create` and returns the token.
    pub fn create_key(&self, name: &str, scope: &str) -> String {
        let out = self.api_command(&["keys", "create", "--name", name, "--scope", scope]);
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout
            .lines()
            .last()
            .expect("the token on the last line")
            .trim()
            .to_owned()
    }

    /// Serves the API over HTTPS with this certificate and key (PEM files),
    /// and makes this cluster's client trust exactly that certificate.
    pub fn use_tls(&mut self, cert: &std::path::Path, key: &std::path::Path) {
        self.set_env("OPSQUEUE_API__TLS_CERT", cert.display());
        self.set_env("OPSQUEUE_API__TLS_KEY", key.display());
        let pem = std::fs::read(cert).expect("the certificate");
        let tls = opsqueue_tls::pinned_config(&pem).expect("a PEM certificate");
        self.http = client(reqwest::Client::builder().use_preconfigured_tls(tls));
    }

    /// Starts the API and waits until it listens.
    pub fn start_api(&mut self) {
        if self.token.is_empty() {
            self.token = self.create_key("e2e-admin", "admin");
        }
        let (log, file) = self.log_file("api");
        let mut child = self
            .command("opsqueue-api", &[])
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .expect("spawn opsqueue-api");
        let stdout = child.stdout.take().unwrap();
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let mut copy = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("opsqueue-api listening on ") {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                let _ = writeln!(copy, "{line}");
            }
        });
        let proc = Proc {
            name: "api".into(),
            child,
            log,
        };
        match url_rx.recv_timeout(DEADLINE) {
            Ok(url) => self.api_url = url,
            Err(_) => panic!("the API never said it listens:\n{}", proc.log_text()),
        }
        self.api = Some(proc);
    }

    /// Starts a worker with extra environment; returns its index.
    pub fn start_worker(&mut self, extra_env: &[(&str, String)]) -> usize {
        self.start_worker_in(None, extra_env)
    }

    /// Starts a worker inside the network namespace `netns` (with
    /// `ip netns exec`, which execs the worker itself: its pid is the
    /// worker's) or, with `None`, here; returns its index.
    pub fn start_worker_in(&mut self, netns: Option<&str>, extra_env: &[(&str, String)]) -> usize {
        let (log, file) = self.log_file("worker");
        let err = file.try_clone().unwrap();
        let mut command = self.command("opsqueue-worker", extra_env);
        if let Some(netns) = netns {
            let worker = command.get_program().to_owned();
            let envs: Vec<_> = command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect();
            command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(worker);
            command.env_clear().envs(envs).stdin(Stdio::null());
        }
        let child = command
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn opsqueue-worker");
        self.workers.push(Proc {
            name: "worker".into(),
            child,
            log,
        });
        self.workers.len() - 1
    }

    pub fn start_monitor(&mut self) -> usize {
        let (log, file) = self.log_file("monitor");
        let err = file.try_clone().unwrap();
        let child = self
            .command("opsqueue-monitor", &[])
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn opsqueue-monitor");
        self.monitors.push(Proc {
            name: "monitor".into(),
            child,
            log,
        });
        self.monitors.len() - 1
    }

    /// API, one worker and one monitor.
    pub fn start_all(&mut self) {
        self.start_api();
        self.start_worker(&[]);
        self.start_monitor();
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// Fires an operation; asserts the 202 and returns the operation.
    pub async fn enqueue(&self, body: Value) -> Value {
        let response = self.post("/api/v1/operations", body).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
        response.body
    }

    /// Fires a typed route: asserts the 202 and its `Location`, then waits
    /// for the operation's end.
    pub async fn accepted(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let id = self.request(method, path, body).await.accepted_id(path);
        self.wait_terminal(&id).await
    }

    pub async fn enqueue_kind(&self, kind: &str, payload: Value) -> String {
        let op = self
            .enqueue(json!({"type": kind, "payload": payload}))
            .await;
        op["id"].as_str().unwrap().to_owned()
    }

    pub async fn operation(&self, id: &str) -> Value {
        let response = self.get(&format!("/api/v1/operations/{id}")).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        response.body
    }

    /// Long-polls until the operation is terminal (completed, failed or
    /// cancelled).
    pub async fn wait_terminal(&self, id: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Answers as soon as the operation ends, or after 5 s.
            let op = self
                .get(&format!("/api/v1/operations/{id}?wait=5"))
                .await
                .body;
            if matches!(
                op["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operation {id} never ended: {op:#}\n{}",
                self.logs_tail()
            );
        }
    }

    /// Polls until `done(op)` holds (for states a long-poll would skip
    /// over, such as `running`).
    pub async fn wait_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let op = self.operation(id).await;
            if done(&op) {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operation {id} never reached the expected state: {op:#}\n{}",
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn logs(&self, id: &str) -> Vec<Value> {
        let response = self
            .get(&format!("/api/v1/operations/{id}/logs?limit=1000"))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        response.body["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A direct connection to the database, for checks the API does not
    /// expose (read-only use).
    pub fn sqlite(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// The last lines of every process's log.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        let procs = self.api.iter().chain(&self.workers).chain(&self.monitors);
        for proc in procs {
            let text = proc.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                proc.name,
                proc.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
    }
}

/// An HTTP answer with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// Asserts the answer is a 202 whose `Location` is the operation's own;
    /// returns the operation's id. `what` names the request in the message.
    #[track_caller]
    pub fn accepted_id(&self, what: &str) -> String {
        assert_eq!(self.status, StatusCode::ACCEPTED, "{what}: {:#}", self.body);
        let id = self.body["id"]
            .as_str()
            .expect("the operation's id")
            .to_owned();
        let location = self.headers["location"].to_str().unwrap();
        assert_eq!(location, format!("/api/v1/operations/{id}"), "{what}");
        id
    }

    /// Asserts the answer is an RFC 9457 problem (`application/problem+json`,
    /// its `status` the HTTP status) with the stable `code`; `what` names
    /// the request in the message.
    #[track_caller]
    pub fn assert_problem(&self, code: &str, what: &str) {
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            content_type,
            Some("application/problem+json"),
            "{what}: {} {:#}",
            self.status,
            self.body
        );
        assert_eq!(self.body["code"], code, "{what}: {:#}", self.body);
        assert_eq!(
            self.body["status"],
            self.status.as_u16(),
            "{what}: {:#}",
            self.body
        );
    }
}

/// The result of an operation (as the API shows it) that must have
/// completed.
#[track_caller]
pub fn completed(op: &Value) -> &Value {
    assert_eq!(op["status"], "completed", "{op:#}");
    &op["result"]
}

/// Waits until `check` holds, polling; panics with `what` at the deadline.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    opsqueue_shared::process::start_ticks(pid as u32)
        .ok()
        .flatten()
        .is_some()
}
