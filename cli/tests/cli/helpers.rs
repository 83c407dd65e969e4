//! `spawn_app()` and the typed helpers every test uses: run `opsqueue`
//! with the cluster's connection and collect what it printed.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use opsqueue_tests::{Cluster, DEADLINE, binary};
use serde_json::Value;

/// A cluster (API, and a worker unless asked otherwise) and a HOME for the
/// client.
pub struct App {
    pub cluster: Cluster,
    pub home: tempfile::TempDir,
}

/// API and one worker.
pub fn spawn_app() -> App {
    let mut app = spawn_api_only();
    app.cluster.start_worker(&[]);
    app
}

/// The API alone: operations stay pending.
pub fn spawn_api_only() -> App {
    let mut cluster = Cluster::new();
    cluster.start_api();
    App {
        cluster,
        home: tempfile::tempdir().expect("a temp HOME"),
    }
}

/// What one `opsqueue` run printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts the exit code, showing everything printed when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "{self:#?}");
        self
    }

    /// The first line of stdout: the id `run` prints.
    pub fn id(&self) -> String {
        let id = self
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(uuid_like(&id), "no id on the first line: {self:#?}");
        id
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

pub fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl App {
    /// `opsqueue <args>` with this app's connection in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.bare_command(args);
        command
            .env("OPSQUEUE_URL", &self.cluster.api_url)
            .env("OPSQUEUE_TOKEN", &self.cluster.token);
        command
    }

    /// `opsqueue <args>` with no connection settings but a fresh HOME.
    pub fn bare_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("opsqueue"));
        command.env_clear();
        for key in ["PATH", "LANG"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command
            .env("HOME", self.home.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `opsqueue <args>` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        finish(self.command(args).spawn().expect("spawn opsqueue"))
    }

    pub fn config_file(&self) -> PathBuf {
        self.home
            .path()
            .join(".config")
            .join("opsqueue")
            .join("config.toml")
    }
}

/// Waits for a child (up to the deadline, then kills it and fails) and
/// collects its output.
pub fn finish(child: Child) -> Run {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => {
            let output = output.expect("wait for opsqueue");
            Run {
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("opsqueue (pid {pid}) did not end within {DEADLINE:?}");
        }
    }
}

/// A running `opsqueue` whose first stdout line (the id) has been read.
pub struct Started {
    pub child: Child,
    pub id: String,
}

impl Started {
    /// Spawns `command` and reads the id it prints first.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn opsqueue");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
        });
        let id = rx
            .recv_timeout(DEADLINE)
            .expect("opsqueue printed no id")
            .trim()
            .to_owned();
        assert!(uuid_like(&id), "not an id: {id:?}");
        Self { child, id }
    }

    pub fn interrupt(&self) {
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        assert_eq!(rc, 0);
    }

    /// Waits for the end; stdout after the id is not collected.
    pub fn finish(mut self) -> Run {
        let mut stderr = self.child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("opsqueue did not end within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            status,
            stdout: String::new(),
            stderr: reader.join().unwrap_or_default(),
        }
    }
}

/// No cluster running: for what needs no API (usage, completions).
pub fn client_only() -> App {
    App {
        cluster: Cluster::new(),
        home: tempfile::tempdir().expect("a temp HOME"),
    }
}
