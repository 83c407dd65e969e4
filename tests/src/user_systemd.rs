//! A real systemd for tests that starts in about a second: a `systemd
//! --user` manager (HOST-PROGRAMS §2.7) in a private mount namespace, with a
//! private `systemd-journald` beside it so `journalctl` has something to
//! read. Needs root (mounts, cgroups).
//!
//! Layout: the namespace gets private tmpfs mounts on `/run/systemd` (with
//! the `system/` marker `sd_booted()` checks), `/run/user` (the manager's
//! `XDG_RUNTIME_DIR`, `/run/user/0`), `/run/log` and `/var/log/journal` (the
//! journal, volatile). The manager's `XDG_CONFIG_HOME` is a directory of
//! this test, so its unit directory `<dir>/config/systemd/user` is written
//! from outside the namespace like any path. The manager runs in a cgroup
//! of its own, `opsqueue-usermgr-<pid>.slice/user@0.service`, named so that
//! journald files its units' lines under `_SYSTEMD_USER_UNIT` (read with
//! `journalctl --user-unit`).
//!
//! Reaching it: `nsenter -t <pid> -m env XDG_RUNTIME_DIR=/run/user/0
//! systemctl` (+ `--user`, which the driver adds for `scope = "user"`) and
//! `nsenter -t <pid> -m journalctl`: see [`UserSystemd::systemctl_argv`].
//!
//! Cleanup, also when a test fails: dropping it sends SIGTERM to the manager
//! (which stops its units), then SIGKILL to whatever is left in its cgroups
//! (journald, stragglers), and removes the cgroups. Only processes of this
//! manager's own cgroups are ever signalled.
//!
//! This file is also compiled into the worker's tests (`#[path]`), so it
//! uses only std, libc and tempfile.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the manager may take to come up, or to go down.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs as root: joins a cgroup of its own, then becomes the manager (every
/// step execs, so the spawned pid is the manager's).
const START_SCRIPT: &str = r#"
set -eu
cg="opsqueue-usermgr-$$.slice/user@0.service"
if [ -d /sys/fs/cgroup/systemd ] || [ -d /sys/fs/cgroup/unified ]; then
    roots="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
else
    roots=/sys/fs/cgroup
fi
for root in $roots; do
    if [ -d "$root" ]; then
        mkdir -p "$root/$cg"
        echo $$ > "$root/$cg/cgroup.procs"
    fi
done
export OPSQUEUE_CONFIG_HOME="$1"
exec unshare --mount --propagation private bash -c '
    set -eu
    mkdir -p /run/systemd /run/user /run/log
    mount -t tmpfs -o mode=755 tmpfs /run/systemd
    mkdir /run/systemd/system
    mount -t tmpfs -o mode=755 tmpfs /run/user
    mkdir -m 700 /run/user/0
    mount -t tmpfs -o mode=755 tmpfs /run/log
    if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=755 tmpfs /var/log/journal; fi
    /lib/systemd/systemd-journald &
    journald=$!
    manager=$$
    # Should the manager die without our teardown, journald follows it.
    ( while kill -0 "$manager" 2>/dev/null; do sleep 1; done; kill -TERM "$journald" ) &
    export XDG_RUNTIME_DIR=/run/user/0 XDG_CONFIG_HOME="$OPSQUEUE_CONFIG_HOME"
    exec /lib/systemd/systemd --user --log-target=console --log-level=info
'
"#;

/// Programs the recipe needs; a test fails with this list when one is
/// missing, never skips.
const NEEDED: &[&str] = &[
    "/lib/systemd/systemd",
    "/lib/systemd/systemd-journald",
    "/usr/bin/systemctl",
    "/usr/bin/journalctl",
    "/usr/bin/systemd-analyze",
    "/usr/bin/nsenter",
    "/usr/bin/unshare",
];

/// A running user manager; stopped and cleaned up when dropped.
pub struct UserSystemd {
    dir: tempfile::TempDir,
    manager: Child,
    cgroups: Vec<PathBuf>,
}

fn cgroup_roots(slice: &str) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(|root| Path::new(root).join(slice))
    .collect()
}

/// Where files go when no better place is outside `/tmp` and `/var/tmp`.
pub const UNIT_VISIBLE_FALLBACK: &str = "/var/lib/opsqueue-tests";

/// Whether a unit with `PrivateTmp=yes` sees `path` as something else: it
/// gets private `/tmp` and `/var/tmp` directories of its own.
pub fn hidden_by_private_tmp(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.starts_with("/tmp") || path.starts_with("/var/tmp")
}

/// The base directory for files a test shares with the units it starts:
/// `preferred` (the test's `CARGO_TARGET_TMPDIR`, inside the checkout's
/// target directory) unless a unit with `PrivateTmp=yes` would not see it
/// (a checkout under `/tmp`), else [`UNIT_VISIBLE_FALLBACK`].
pub fn unit_visible_base(preferred: &Path) -> PathBuf {
    if hidden_by_private_tmp(preferred) {
        PathBuf::from(UNIT_VISIBLE_FALLBACK)
    } else {
        preferred.to_path_buf()
    }
}

impl UserSystemd {
    /// Starts a manager with its files in a new directory under
    /// [`unit_visible_base`]`(preferred)` (pass `env!("CARGO_TARGET_TMPDIR")`),
    /// so units with `PrivateTmp=yes` see the same files as the test.
    pub fn start(preferred: &Path) -> Self {
        let base = &unit_visible_base(preferred);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "the systemd tests start a systemd user manager, which needs root (mounts, cgroups)"
        );
        for program in NEEDED {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the systemd tests need systemd, systemd-journald and \
                 util-linux (nsenter, unshare); run scripts/install-test-deps"
            );
        }
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("usermgr-")
            .tempdir_in(base)
            .unwrap();
        let config_home = dir.path().join("config");
        std::fs::create_dir_all(config_home.join("systemd/user")).unwrap();
        let script = dir.path().join("start.sh");
        std::fs::write(&script, START_SCRIPT).unwrap();
        let log = std::fs::File::create(dir.path().join("manager.log")).unwrap();
        let manager = Command::new("bash")
            .arg(&script)
            .arg(&config_home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start bash for the user manager");
        let slice = format!("opsqueue-usermgr-{}.slice", manager.id());
        let mut started = Self {
            dir,
            manager,
            cgroups: cgroup_roots(&slice),
        };
        started.wait_ready();
        started
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.manager.try_wait().unwrap() {
                panic!(
                    "the user manager exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            let state = self.systemctl(&["is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout);
            let journal = self.nsenter(&["test", "-S", "/run/systemd/journal/stdout"]);
            if matches!(state.trim(), "running" | "degraded") && journal.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the user manager never became ready (state {state:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.manager.id()
    }

    /// Where the manager looks for units (the driver's `unit_dir`).
    pub fn unit_dir(&self) -> PathBuf {
        self.dir.path().join("config/systemd/user")
    }

    /// A directory of this test outside `/tmp`, for files units read/write.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argument vector that reaches the manager's systemctl (the driver
    /// adds `--user`).
    pub fn systemctl_argv(&self) -> Vec<String> {
        [
            "nsenter",
            "-t",
            &self.pid().to_string(),
            "-m",
            "env",
            "XDG_RUNTIME_DIR=/run/user/0",
            "systemctl",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The argument vector that reads the private journal.
    pub fn journalctl_argv(&self) -> Vec<String> {
        ["nsenter", "-t", &self.pid().to_string(), "-m", "journalctl"]
            .map(String::from)
            .to_vec()
    }

    /// Runs a command in the manager's mount namespace.
    pub fn nsenter(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// `systemctl --user <args>` against this manager, for the test's own
    /// checks.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["env", "XDG_RUNTIME_DIR=/run/user/0", "systemctl", "--user"];
        argv.extend_from_slice(args);
        self.nsenter(&argv)
    }

    /// One property of a unit (`systemctl --user show -P`).
    pub fn property(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-P", property, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a unit file into the manager's unit directory and reloads it.
    pub fn add_unit(&self, name: &str, text: &str) {
        std::fs::write(self.unit_dir().join(name), text).unwrap();
        let out = self.systemctl(&["daemon-reload"]);
        assert!(out.status.success(), "daemon-reload: {out:?}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manager.log")).unwrap_or_default()
    }

    /// Every directory of this manager's cgroup trees, deepest first.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let mut stack = self.cgroups.clone();
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
                dirs.push(dir);
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs
    }

    /// Every pid in this manager's cgroups.
    fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.cgroup_dirs() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn remove_cgroups(&self) {
        for dir in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for UserSystemd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- user manager log ---\n{}", self.log());
        }
        let pid = self.manager.id() as i32;
        // SAFETY: kill(2) on the manager we spawned.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.manager.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // What is left in our own cgroups (journald, a unit that ignored
        // SIGTERM, the manager itself if it hung).
        for _ in 0..50 {
            let pids = self.cgroup_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) on a pid listed in this manager's cgroups.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.manager.kill();
        let _ = self.manager.wait();
        self.remove_cgroups();
    }
}
