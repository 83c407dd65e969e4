//! A real Caddy for tests (Debian's package, HOST-PROGRAMS §3.1): one
//! process per test on loopback ports the system picks, with its admin API
//! on its own port, automatic HTTPS off and every file (autosave, storage)
//! in the test's directory. Its one server, `test`, has a site opsqueue did
//! not add ([`STATIC_SITE`]) and ends in a catch-all route answering `404 no
//! site`, so a site route that was not inserted *first* would never answer.
//!
//! Also [`Upstream`]: a tiny HTTP server on 127.0.0.1 that answers every
//! request with a fixed body, the service a site proxies to.
//!
//! Caddy is stopped (SIGTERM, then SIGKILL) when the value is dropped, also
//! when a test fails. [`CaddyServer::restart`] stops and starts it again
//! from its file (no `--resume`): sites added through the admin API are
//! gone, as after a restart of Debian's `caddy.service`.
//!
//! This file is also compiled into the worker's tests (`#[path]`), so it
//! uses only std, libc, tokio, serde_json and tempfile.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(30);

/// The catch-all route's answer.
pub const NO_SITE: &str = "no site";

/// A site of the Caddy config that opsqueue did not add, and its answer.
pub const STATIC_SITE: &str = "static.test";
pub const STATIC_BODY: &str = "a site opsqueue did not add";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running Caddy; stopped when dropped.
pub struct CaddyServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub admin_port: u16,
    pub http_port: u16,
}

impl CaddyServer {
    /// Starts Caddy with its files in a new directory under `base`.
    pub fn start(base: &Path) -> Self {
        let caddy = Path::new("/usr/bin/caddy");
        assert!(
            caddy.exists(),
            "{} is missing: the Caddy tests need Debian's caddy package; run scripts/install-test-deps",
            caddy.display()
        );
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("caddy-")
            .tempdir_in(base)
            .unwrap();
        let mut server = Self {
            dir,
            child: None,
            admin_port: 0,
            http_port: 0,
        };
        // A port picked here may be taken before Caddy binds it: try again.
        for _ in 0..5 {
            server.admin_port = free_port();
            server.http_port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("Caddy did not start:\n{}", server.log());
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("caddy.json")
    }

    /// Writes the config and starts Caddy; false if it exited before its
    /// admin API answered.
    fn spawn(&mut self) -> bool {
        let config = json!({
            "admin": {"listen": format!("127.0.0.1:{}", self.admin_port)},
            "storage": {"module": "file_system", "root": self.dir.path().join("storage")},
            "apps": {"http": {"servers": {"test": {
                "listen": [format!("127.0.0.1:{}", self.http_port)],
                "automatic_https": {"disable": true},
                "routes": [
                    {"match": [{"host": [STATIC_SITE]}], "handle": [{
                        "handler": "static_response", "status_code": 200, "body": STATIC_BODY,
                    }], "terminal": true},
                    {"handle": [{
                        "handler": "static_response", "status_code": 404, "body": NO_SITE,
                    }]},
                ],
            }}}},
        });
        std::fs::write(self.config_path(), config.to_string()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("caddy.log"))
            .unwrap();
        let home = self.dir.path();
        let child = Command::new("/usr/bin/caddy")
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start caddy");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(_status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return false;
            }
            if self.admin_answers() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "Caddy's admin API never answered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin_answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)) else {
            return false;
        };
        let request = format!(
            "GET /config/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.admin_port
        );
        let mut answer = String::new();
        // Another test's Caddy may hold the port: the answer must be ours.
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
            && answer.contains(&format!("127.0.0.1:{}", self.http_port))
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `GET http://<host>/` through Caddy: `(status, body)`.
    pub async fn get(&self, host: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .await
            .expect("connect to Caddy");
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
    }

    /// Stops Caddy and starts it again from its file: what was added
    /// through the admin API is gone.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "Caddy did not start again:\n{}", self.log());
    }

    /// Stops Caddy; its admin API no longer answers.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the Caddy we spawned and have not waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for CaddyServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- caddy log (tail) ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        self.stop();
    }
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `body`;
/// stops when dropped.
pub struct Upstream {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(body: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = body.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    // Read the request head, then answer and close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { port, task }
    }

    /// `127.0.0.1:<port>`, the site's upstream.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
