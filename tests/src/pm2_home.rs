//! A private pm2 for tests (the real pm2, installed by
//! `scripts/install-test-deps`): its own `PM2_HOME`, and a base directory
//! of apps holding `server.js` (prints `hello <args>` on stdout and `an
//! error line` on stderr, then idles), `never_ready.js` (idles, never
//! sends `ready`) and `flag.js` (exits 3 when given `--crash`; otherwise
//! prints `up <args> <GREETING>` and idles). Dropping it runs `pm2 kill` (apps and daemon) if a daemon
//! was ever started, also when a test failed. A missing pm2 fails the test
//! with a message saying how to install it; it never skips.
//!
//! This file is also compiled into the worker's tests (`#[path]`), so it
//! uses only std, libc, serde_json and tempfile.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails the test unless `pm2` is on `PATH` (without running it: any pm2
/// command starts a daemon).
pub fn require_pm2() {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pm2").is_file()));
    assert!(
        found,
        "pm2 is not installed, and these tests run the real pm2: run scripts/install-test-deps \
         (or `npm install -g pm2@7`)"
    );
}

/// A private pm2: its own `PM2_HOME`, and a base directory holding apps.
pub struct Pm2Home {
    _dir: tempfile::TempDir,
    pub home: PathBuf,
    pub apps: PathBuf,
}

impl Default for Pm2Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Pm2Home {
    pub fn new() -> Self {
        require_pm2();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("pm2-home");
        let apps = dir.path().join("apps");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(apps.join("site")).unwrap();
        std::fs::write(
            apps.join("server.js"),
            "console.log('hello ' + process.argv.slice(2).join(' '));\n\
             console.error('an error line');\n\
             setInterval(() => {}, 1000);\n",
        )
        .unwrap();
        // Never sends `ready`: with wait_ready, pm2 waits for it.
        std::fs::write(
            apps.join("never_ready.js"),
            "setInterval(() => {}, 1000);\n",
        )
        .unwrap();
        std::fs::write(
            apps.join("flag.js"),
            "if (process.argv.includes('--crash')) { console.error('crashing as asked'); process.exit(3); }\n\
             console.log('up ' + process.argv.slice(2).join(' ') + ' ' + (process.env.GREETING || ''));\n\
             setInterval(() => {}, 1000);\n",
        )
        .unwrap();
        let apps = std::fs::canonicalize(apps).unwrap();
        Self {
            _dir: dir,
            home,
            apps,
        }
    }

    /// The path of an app in the base directory.
    pub fn script(&self, name: &str) -> String {
        self.apps.join(name).display().to_string()
    }

    fn command(&self) -> Command {
        let mut command = Command::new("pm2");
        command
            .env("PM2_HOME", &self.home)
            .env("PM2_DISCRETE_MODE", "true");
        command
    }

    /// Runs pm2 on this home directly (to look behind opsqueue's back).
    pub fn pm2(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run pm2")
    }

    /// The settings `pm2.update` changes, as pm2's own list shows them, and
    /// each instance's status. The env is the variables pm2 keeps for the
    /// app: its text values (pm2 also files an internal `restarts: {}`
    /// object there, which it turns into the text `"{}"` whenever it reads
    /// a configuration file, an update or not; no process can have an
    /// object in its environment).
    pub fn settings(&self, name: &str) -> serde_json::Value {
        let jlist = self.pm2(&["jlist"]);
        assert!(jlist.status.success(), "pm2 jlist: {jlist:?}");
        let apps: Vec<serde_json::Value> =
            serde_json::from_slice(&jlist.stdout).expect("jlist is a list");
        let instances: Vec<&serde_json::Value> =
            apps.iter().filter(|app| app["name"] == name).collect();
        let first = &instances.first().expect("the app is in pm2's list")["pm2_env"];
        let env: serde_json::Map<String, serde_json::Value> = first["env"]
            .as_object()
            .expect("an env")
            .iter()
            .filter(|(_, value)| value.is_string() && *value != "{}")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let statuses: Vec<&serde_json::Value> =
            instances.iter().map(|i| &i["pm2_env"]["status"]).collect();
        serde_json::json!({
            "args": first["args"],
            "env": env,
            "autorestart": first["autorestart"],
            "max_memory_restart": first["max_memory_restart"],
            "log_date_format": first["log_date_format"],
            "exec_interpreter": first["exec_interpreter"],
            "pm_exec_path": first["pm_exec_path"],
            "statuses": statuses,
        })
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("pm2.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Pm2Home {
    /// `pm2 kill` (apps and daemon), if a daemon was ever started; a daemon
    /// a test stopped with SIGSTOP is woken first.
    fn drop(&mut self) {
        let Some(pid) = self.daemon_pid() else {
            return;
        };
        // SAFETY: kill(2) on the daemon this fixture's home started.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let Ok(mut kill) = self
            .command()
            .arg("kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if kill.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill.kill();
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
