//! The pocketbase driver against the conformance test. Its actions that
//! need no service manager are used: a version installed into the cache
//! from a file (changed, then unchanged), a checksum that does not match
//! (permanent), a download from an https address nothing answers on
//! (retryable), and a health check of a port nothing listens on (slow: it
//! polls until cancelled or timed out). Services themselves (systemd,
//! Caddy, the real PocketBase) are tested end to end in
//! `tests/tests/e2e/pocketbase.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use opsqueue_shared::Config;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::conformance::{Call, Slow, Subject, conforms};

struct PocketbaseSubject {
    /// A file standing in for a PocketBase binary (the cache copies bytes;
    /// what they do is the e2e tests' business).
    file: PathBuf,
    sha256: String,
    base_dir: PathBuf,
    versions_dir: PathBuf,
}

/// A loopback port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Subject for PocketbaseSubject {
    async fn start(dir: &Path) -> Self {
        let file = dir.join("pocketbase-stand-in");
        std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sha256 = Sha256::digest(std::fs::read(&file).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            file,
            sha256,
            base_dir: dir.join("services"),
            versions_dir: dir.join("versions"),
        }
    }

    fn configure(&self, config: &mut Config) {
        // The driver needs the systemd family on; nothing here calls it.
        config.systemd.enabled = true;
        config.pocketbase.enabled = true;
        config.pocketbase.base_dir = self.base_dir.clone();
        config.pocketbase.versions_dir = self.versions_dir.clone();
    }

    fn refused(&self) -> Vec<Call> {
        let digest = "a".repeat(64);
        vec![
            (
                "pocketbase.version.install",
                json!({"version": "../x", "sha256": digest, "path": self.file}),
            ),
            (
                "pocketbase.version.install",
                json!({"version": "1.0.0", "path": self.file}),
            ),
            (
                "pocketbase.version.install",
                json!({"version": "1.0.0", "sha256": digest, "url": "http://example.com/pb"}),
            ),
            (
                "pocketbase.version.install",
                json!({"version": "1.0.0", "sha256": "xyz", "path": self.file}),
            ),
            (
                "pocketbase.version.install",
                json!({"version": "1.0.0", "sha256": digest, "path": "relative/pb"}),
            ),
            (
                "pocketbase.check",
                json!({"name": "a;reboot", "port": 8090, "version": "1.0.0"}),
            ),
            (
                "pocketbase.check",
                json!({"name": "-rf", "port": 8090, "version": "1.0.0"}),
            ),
            (
                "pocketbase.check",
                json!({"name": "ok", "port": 22, "version": "1.0.0"}),
            ),
            (
                "pocketbase.check",
                json!({"name": "ok", "port": 8090, "version": "1.0.0", "extra": 1}),
            ),
            (
                "pocketbase.health",
                json!({"name": "ok", "port": "8090 --dir=/"}),
            ),
            ("pocketbase.stop", json!({"name": "../etc"})),
            ("pocketbase.logs", json!({"name": "ok", "lines": 0})),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some((
            "pocketbase.version.install",
            json!({"version": "0.40.6", "sha256": self.sha256, "path": self.file}),
        ))
    }

    fn permanent_failure(&self) -> Call {
        (
            "pocketbase.version.install",
            json!({"version": "0.40.7", "sha256": "0".repeat(64), "path": self.file}),
        )
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        let url = format!("https://127.0.0.1:{}/pocketbase.zip", closed_port());
        Some((
            (
                "pocketbase.version.install",
                json!({"version": "0.40.8", "sha256": self.sha256, "url": url}),
            ),
            Box::new(|_| {}),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::with(
            "pocketbase.health",
            json!({"name": "slow", "port": closed_port()}),
            |config| {
                // Only the operation's cancel or deadline can end it.
                config.pocketbase.health_timeout_secs = 3_600;
            },
        )
    }

    async fn stop(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pocketbase_driver_conforms() {
    conforms::<PocketbaseSubject>().await;
}
