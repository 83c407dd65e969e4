//! The fleet's test fixtures: a self-signed certificate made by the test
//! (with `rcgen`) for an API served over HTTPS, remote workers started as
//! processes with their own agent key, configuration and driver roots, and
//! a network namespace joined to this one by a veth pair, whose link a
//! test cuts and heals (a partition). Namespaces and links use test
//! addresses only (`10.77.N.0/24`) and are removed when dropped, even when
//! the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Cluster;

/// The files of a self-signed certificate for `names` (host names and IP
/// addresses), written into `dir`: (certificate, key).
pub fn self_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    let cert = dir.join("api-cert.pem");
    let key = dir.join("api-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// One remote worker's own corner: its agent key, its scripts directory
/// (with a `whoami` script answering which worker's directory it ran
/// from), its record of diag executions, and a database path that must
/// never appear (a remote worker has no database).
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub token_file: PathBuf,
    pub record: PathBuf,
    pub no_database: PathBuf,
}

impl Agent {
    /// Makes the agent key `--scope agent --target …` and the directories.
    pub fn new(cluster: &Cluster, name: &str, targets: &[&str]) -> Self {
        let dir = cluster.path(&format!("agent-{name}"));
        let scripts = dir.join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        let whoami = scripts.join("whoami");
        std::fs::write(
            &whoami,
            format!(
                "#!/bin/sh\necho \"{{\\\"served_by\\\": \\\"{name}\\\", \\\"target\\\": \\\"$OPSQUEUE_TARGET\\\", \\\"changed\\\": false}}\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&whoami, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut args = vec!["keys", "create", "--name", name, "--scope", "agent"];
        for target in targets {
            args.extend(["--target", target]);
        }
        let out = cluster.api_command(&args);
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let token = stdout.lines().last().expect("the token").trim().to_owned();
        let token_file = dir.join("agent.key");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        Self {
            name: name.to_owned(),
            record: dir.join("executions.txt"),
            no_database: dir.join("no-database").join("opsqueue.db"),
            dir,
            token_file,
        }
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The environment of a remote worker of this agent, serving
    /// `targets`, pulling from `api_url` and trusting `ca_cert`.
    pub fn env(
        &self,
        api_url: &str,
        ca_cert: Option<&Path>,
        targets: &[&str],
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("OPSQUEUE_WORKER__API_URL", api_url.to_owned()),
            (
                "OPSQUEUE_WORKER__TOKEN_FILE",
                self.token_file.display().to_string(),
            ),
            (
                "OPSQUEUE_WORKER__TARGETS",
                serde_json::to_string(targets).unwrap(),
            ),
            ("OPSQUEUE_WORKER__ID", format!("remote-{}", self.name)),
            (
                "OPSQUEUE_DATABASE__PATH",
                self.no_database.display().to_string(),
            ),
            (
                "OPSQUEUE_DIAG__RECORD_PATH",
                self.record.display().to_string(),
            ),
            ("OPSQUEUE_SCRIPTS__ENABLED", "true".to_owned()),
            (
                "OPSQUEUE_SCRIPTS__DIR",
                self.dir.join("scripts").display().to_string(),
            ),
            ("OPSQUEUE_LOG__FORMAT", "json".to_owned()),
        ];
        if let Some(ca) = ca_cert {
            env.push(("OPSQUEUE_WORKER__CA_CERT", ca.display().to_string()));
        }
        env
    }

    /// The operation ids this agent's workers executed (one per run).
    pub fn executed(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect()
    }
}

fn ip(args: &[&str]) -> std::process::Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2; scripts/install-test-deps installs it)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace joined to this one by a veth pair: here
/// `10.77.N.1/24`, inside `10.77.N.2/24`. Removed (with its link) when
/// dropped. Needs root.
pub struct Netns {
    pub name: String,
    inner_if: String,
    outer_if: String,
    /// The address on this side, which a worker inside reaches.
    pub outer_ip: String,
    pub inner_ip: String,
}

impl Netns {
    pub fn new() -> Self {
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the partition test makes network namespaces: run the tests as root"
        );
        let tag = std::process::id() % 100_000;
        let subnet = std::process::id() % 250 + 1;
        let netns = Self {
            name: format!("oqfleet-{tag}"),
            inner_if: format!("oqf{tag}i"),
            outer_if: format!("oqf{tag}o"),
            outer_ip: format!("10.77.{subnet}.1"),
            inner_ip: format!("10.77.{subnet}.2"),
        };
        // Leftovers of a killed run with the same pid.
        let _ = Command::new("ip")
            .args(["link", "del", &netns.outer_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &netns.name])
            .output();
        ip(&["netns", "add", &netns.name]);
        ip(&[
            "link",
            "add",
            &netns.outer_if,
            "type",
            "veth",
            "peer",
            "name",
            &netns.inner_if,
        ]);
        ip(&["link", "set", &netns.inner_if, "netns", &netns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", netns.outer_ip),
            "dev",
            &netns.outer_if,
        ]);
        ip(&["link", "set", &netns.outer_if, "up"]);
        ip(&[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{}/24", netns.inner_ip),
            "dev",
            &netns.inner_if,
        ]);
        ip(&["-n", &netns.name, "link", "set", &netns.inner_if, "up"]);
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// Cuts the link: nothing passes between the namespaces.
    pub fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "down"]);
    }

    /// Heals the link.
    pub fn heal(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "up"]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
