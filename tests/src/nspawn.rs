//! A real systemd for tests: a Debian tree (made once by
//! `scripts/install-test-deps` with debootstrap and cached as a tarball) is
//! unpacked into a temporary directory and booted with `systemd-nspawn`;
//! commands run inside with `nsenter`. The container shares the host's
//! network, so a service listening on 127.0.0.1 inside answers the test.
//!
//! Isolation and cleanup: each container's nspawn runs in a cgroup of its
//! own (`opsqueue-ct-<pid>` under each hierarchy root), so parallel
//! containers never share nspawn's `payload`/`supervisor` groups, and
//! `--register=no --keep-unit` keep it away from any host systemd. Dropping
//! a [`Container`] powers it off (killing it if that hangs), removes its
//! cgroups and its tree, also when the test failed, after printing the
//! container's journal.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// The cached Debian tree (`scripts/install-test-deps` makes it).
pub const ROOTFS_TAR: &str = "/var/cache/opsqueue-test/bookworm-systemd.tar";

/// Moves the shell into a cgroup of its own, then becomes systemd-nspawn.
const BOOT_SCRIPT: &str = r#"
set -eu
cg=opsqueue-ct-$$
roots=""
for root in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
    if [ -d "$root" ]; then roots="$roots $root"; fi
done
if [ -z "$roots" ]; then roots=/sys/fs/cgroup; fi
for root in $roots; do
    mkdir -p "$root/$cg"
    echo $$ > "$root/$cg/cgroup.procs"
done
exec systemd-nspawn --register=no --keep-unit --quiet "$@"
"#;

/// A booted container; powered off and removed when dropped.
pub struct Container {
    pub name: String,
    rootfs: tempfile::TempDir,
    nspawn: Child,
    leader: Option<i32>,
    log: PathBuf,
}

impl Container {
    /// Unpacks a fresh tree and boots it with `binds` (host path, path
    /// inside) mounted read-only; returns once the system is up.
    pub fn boot(binds: &[(&Path, &str)]) -> Container {
        assert!(
            Path::new(ROOTFS_TAR).is_file(),
            "{ROOTFS_TAR} is missing: run scripts/install-test-deps (scripts/test does)"
        );
        let rootfs = tempfile::Builder::new()
            .prefix("opsqueue-ct-")
            .tempdir()
            .expect("a temporary directory for the container");
        let status = Command::new("tar")
            .args(["-xf", ROOTFS_TAR, "-C"])
            .arg(rootfs.path())
            .status()
            .expect("run tar");
        assert!(status.success(), "cannot unpack {ROOTFS_TAR}");
        set_mode(rootfs.path(), 0o755);
        let name = format!(
            "opsqueue-ct-{}-{:04x}",
            std::process::id(),
            rand_u16(rootfs.path())
        );
        std::fs::write(rootfs.path().join("etc/hostname"), format!("{name}\n")).unwrap();

        let log = rootfs.path().with_extension("nspawn.log");
        let file = std::fs::File::create(&log).expect("the nspawn log");
        let mut command = Command::new("bash");
        command
            .args(["-c", BOOT_SCRIPT, "boot"])
            .arg("-D")
            .arg(rootfs.path())
            .args(["-M", &name]);
        for (host, inside) in binds {
            command.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        command
            .args(["-b", "--console=read-only"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let nspawn = command.spawn().expect("spawn systemd-nspawn");
        let mut container = Container {
            name,
            rootfs,
            nspawn,
            leader: None,
            log,
        };
        container.wait_for_leader();
        container.wait_until_running();
        container
    }

    /// Finds the container's init: the nspawn child that runs `systemd` in
    /// a pid namespace of its own (nspawn's first child is a short-lived
    /// helper that must not be mistaken for it).
    fn wait_for_leader(&mut self) {
        let pid = self.nspawn.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let our_ns = std::fs::read_link("/proc/self/ns/pid").ok();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.nspawn.try_wait().expect("try_wait") {
                panic!("systemd-nspawn exited ({status}):\n{}", self.log_text());
            }
            let found = std::fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|child| child.parse::<i32>().ok())
                .find(|child| {
                    let comm = std::fs::read_to_string(format!("/proc/{child}/comm"));
                    let ns = std::fs::read_link(format!("/proc/{child}/ns/pid")).ok();
                    comm.is_ok_and(|c| c.trim() == "systemd") && ns.is_some() && ns != our_ns
                });
            if let Some(leader) = found {
                self.leader = Some(leader);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the container never started:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_running(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd never finished booting ({state}):\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The container's `/`, seen from the host.
    pub fn root(&self) -> &Path {
        self.rootfs.path()
    }

    /// A path inside the container, seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// Runs a command inside (all of the container's namespaces).
    pub fn exec(&self, args: &[&str]) -> Output {
        let leader = self.leader.expect("the container runs");
        Command::new("nsenter")
            .args(["-t", &leader.to_string(), "-a"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Runs a command inside, asserts it succeeded, returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show UNIT -p ...` as a map (systemctl prints in its own
    /// order).
    pub fn show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let props = props.join(",");
        self.run(&["systemctl", "show", unit, "-p", &props])
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// One property of a unit.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.show(unit, &[prop]).remove(prop).unwrap_or_default()
    }

    /// What systemd-nspawn printed (the boot console).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let name = format!("opsqueue-ct-{}", self.nspawn.id());
        [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(|root| Path::new(root).join(&name))
        .filter(|dir| dir.is_dir())
        .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader.is_some() {
            let journal = self.exec(&["journalctl", "--no-pager", "-n", "300"]);
            eprintln!(
                "--- journal of {} ---\n{}",
                self.name,
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        if self.leader.is_some() {
            let _ = self.exec(&["systemctl", "poweroff", "--no-block"]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && self.nspawn.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            // Everything in the container's cgroups (its init first, whose
            // pid namespace dies with it), then nspawn itself.
            for dir in self.cgroup_dirs() {
                kill_cgroup(&dir);
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        for dir in self.cgroup_dirs() {
            // Anything left behind once nspawn is gone, too; a cgroup can
            // be removed once its killed processes are gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                kill_cgroup(&dir);
                remove_cgroup(&dir);
                if !dir.exists() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// SIGKILLs every process in a cgroup tree (all started by this test).
fn kill_cgroup(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) on a process of this test's container.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                kill_cgroup(&entry.path());
            }
        }
    }
}

/// Removes an (empty) cgroup tree, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A little randomness for the machine name, from the temp dir's name.
fn rand_u16(path: &Path) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(path) as u16
}
