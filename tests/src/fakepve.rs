//! A fakepve process for one test: `tests/fakes/fakepve_harness.py` run by
//! the virtual environment `scripts/install-test-deps` made, serving HTTPS
//! on 127.0.0.1 on a port the system picks, with a self-signed certificate
//! the test can trust as its CA.
//!
//! fakepve (PyPI, AGPL-3.0-or-later) is a test tool only: it runs as this
//! separate process and is never vendored or linked into opsqueue.
//!
//! The environment is `$OPSQUEUE_FAKEPVE_VENV`, else `.venv/fakepve` at the
//! workspace root; a test that needs it and does not find it fails with a
//! message saying how to install it. The process ends when this value is
//! dropped (its stdin closes and it is killed), whatever the test did.
//!
//! This file is also compiled into the worker's tests (`#[path]`), so it
//! uses only std, serde, serde_json and tempfile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::{Value, json};

/// The API token every scenario made by [`scenario`] accepts.
pub const TOKEN_ID: &str = "root@pam!ci";
pub const TOKEN_SECRET: &str = "4f1c2a9e-6b1d-4c39-9f6e-ci-secret-a8d2";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("a crate sits in the workspace")
        .to_path_buf()
}

/// The venv's python, or a panic saying how to get one.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("OPSQUEUE_FAKEPVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/fakepve"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "fakepve is not installed: {} is missing. Run scripts/install-test-deps \
         (it makes the virtual environment with `pip install 'fakepve[crypto]'`), \
         or point OPSQUEUE_FAKEPVE_VENV at one.",
        python.display()
    );
    python
}

/// A scenario with the CI token and these guests, at 1/100 of PVE's time.
pub fn scenario(guests: Value) -> Value {
    json!({
        "time_scale": 0.01,
        "tokens": {TOKEN_ID: TOKEN_SECRET},
        "nodes": ["pve1", "pve2"],
        "guests": guests,
    })
}

/// A request as fakepve received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The form parameters of its body (secrets redacted by fakepve).
    pub params: BTreeMap<String, String>,
}

/// One running fakepve.
pub struct FakePve {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    /// The server's certificate (PEM), to pin as the CA.
    pub ca_cert: String,
    dir: tempfile::TempDir,
}

impl FakePve {
    /// Starts fakepve with `scenario` (see the harness) and waits until it
    /// listens.
    pub fn start(mut scenario: Value) -> Self {
        let python = python();
        let dir = tempfile::tempdir().expect("temp dir");
        scenario["cert_dir"] = json!(dir.path().display().to_string());
        let scenario_path = dir.path().join("scenario.json");
        std::fs::write(&scenario_path, scenario.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("fakepve.log")).unwrap();
        let mut child = Command::new(python)
            .arg(workspace_root().join("tests/fakes/fakepve_harness.py"))
            .arg(&scenario_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the fakepve harness");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The first line is `ready URL CERT` (fakepve starts in about a
        // second); if it dies instead, the read ends with nothing.
        let read = stdout.read_line(&mut line);
        let log_text =
            || std::fs::read_to_string(dir.path().join("fakepve.log")).unwrap_or_default();
        assert!(
            read.is_ok() && line.starts_with("ready "),
            "fakepve did not start: {line:?}\n{}",
            log_text()
        );
        let mut words = line.split_whitespace().skip(1);
        let url = words.next().unwrap().to_owned();
        let cert = words.next().unwrap().to_owned();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Self {
            child,
            io: Mutex::new((stdin, stdout)),
            url,
            port,
            ca_cert: std::fs::read_to_string(cert).unwrap(),
            dir,
        }
    }

    /// Sends one command to the harness and returns its answer; panics on
    /// an error answer.
    pub fn command(&self, command: Value) -> Value {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(io.0, "{command}").expect("write to fakepve");
        io.0.flush().unwrap();
        let mut line = String::new();
        io.1.read_line(&mut line).expect("read from fakepve");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("fakepve answered {line:?}\n{}", self.log()));
        assert_eq!(
            answer["ok"],
            json!(true),
            "fakepve refused {command}: {answer}"
        );
        answer
    }

    /// The guest as fakepve holds it: `{node, status, lock, qmpstatus}`.
    pub fn guest(&self, vmid: u32) -> Value {
        self.command(json!({"cmd": "guest", "vmid": vmid}))["guest"].clone()
    }

    /// Makes requests whose path ends with `suffix` fail with `status`
    /// `times` times (every time when `None`).
    pub fn fail(&self, method: &str, suffix: &str, status: u16, message: &str, times: Option<u32>) {
        self.command(json!({"cmd": "fail", "method": method, "suffix": suffix,
                            "status": status, "message": message, "times": times}));
    }

    /// Takes a PVE node offline (its requests get 595) or brings it back.
    pub fn set_node_offline(&self, node: &str, offline: bool) {
        self.command(json!({"cmd": "node_offline", "node": node, "offline": offline}));
    }

    /// Every request fakepve received, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        let answer = self.command(json!({"cmd": "requests"}));
        serde_json::from_value(answer["requests"].clone())
            .expect("requests as the harness sends them")
    }

    /// From now on, every container migration waits at its move step (the
    /// container shut down and locked `migrate`, its task running) until
    /// [`FakePve::release_migrations`].
    pub fn hold_migrations(&self) {
        self.command(json!({"cmd": "hold_migrations"}));
    }

    pub fn release_migrations(&self) {
        self.command(json!({"cmd": "release_migrations"}));
    }

    /// What fakepve wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fakepve.log")).unwrap_or_default()
    }

    /// Stops it (also done on drop).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.shutdown();
    }
}
