//! The proxmox driver against fakepve (PyPI, AGPL: a separate test process,
//! never linked): the conformance story, and what a worker does with a PVE
//! task an earlier attempt left running.
//!
//! The node is registered straight into the test's database (as the API's
//! `POST /api/v1/proxmox/nodes` would), pinned to fakepve's self-signed
//! certificate.

use std::path::Path;

use opsqueue_shared::families::proxmox::{CaCert, Connection, Host, NodeId, TokenId, TokenSecret};
use opsqueue_shared::store::proxmox::{NodeWrite, proxmox_node_insert, proxmox_node_update};
use opsqueue_shared::{Config, Status, Store, time};
use serde_json::json;

use crate::conformance::{Call, Slow, Subject, conforms};

#[path = "../../../tests/src/fakepve.rs"]
#[allow(dead_code)]
mod fakepve;

use fakepve::FakePve;

struct Proxmox {
    pve: FakePve,
    node: NodeId,
}

impl Proxmox {
    fn connection(&self, port: u16) -> Connection {
        Connection {
            host: Host::parse("127.0.0.1").unwrap(),
            port,
            token_id: TokenId::parse(fakepve::TOKEN_ID).unwrap(),
            token_secret: TokenSecret::parse(fakepve::TOKEN_SECRET).unwrap(),
            verify_tls: true,
            ca_cert: Some(CaCert::parse(&self.pve.ca_cert).unwrap()),
            timeout_secs: 10,
        }
    }

    fn guest(&self, kind: &'static str, vmid: u32) -> Call {
        (kind, json!({"node": self.node.to_string(), "vmid": vmid}))
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn store_of(config: &Config) -> Store {
    Store::open(&config.database).unwrap()
}

impl Subject for Proxmox {
    async fn start(_dir: &Path) -> Self {
        let mut scenario = fakepve::scenario(json!([
            {"vmid": 100, "name": "web1", "status": "running", "node": "pve1"},
            {"vmid": 101, "name": "db1", "status": "stopped", "node": "pve1", "lock": "backup"},
            // Powers off only after 10^7 PVE seconds (10^5 s here).
            {"vmid": 102, "name": "slow1", "status": "running", "node": "pve2",
             "shutdown_secs": 10_000_000},
        ]));
        // A second task on a guest waits for the first one's lock as long
        // as it runs (PVE gives up after 10 s), so the slow call can run
        // twice on one guest.
        scenario["lock_wait"] = json!(1_000_000);
        let pve = FakePve::start(scenario);
        Proxmox {
            pve,
            node: NodeId::new(),
        }
    }

    fn configure(&self, config: &mut Config) {
        config.proxmox.enabled = true;
        config.proxmox.poll_interval_ms = 50;
        let store = store_of(config);
        let connection = self.connection(self.pve.port);
        let node = self.node;
        let written = store
            .write(|tx| proxmox_node_insert(tx, node, "fake", &connection, time::now()))
            .unwrap();
        assert!(matches!(written, NodeWrite::Written(_)), "{written:?}");
    }

    fn refused(&self) -> Vec<Call> {
        let node = self.node.to_string();
        vec![
            ("proxmox.guest.start", json!({"node": node, "vmid": 99})),
            (
                "proxmox.guest.start",
                json!({"node": node, "vmid": "100;reboot"}),
            ),
            (
                "proxmox.guest.start",
                json!({"node": "../etc", "vmid": 100}),
            ),
            (
                "proxmox.guest.stop",
                json!({"node": node, "vmid": 100, "unknown": 1}),
            ),
            (
                "proxmox.guest.migrate",
                json!({"node": node, "vmid": 100, "target": "-rf"}),
            ),
            (
                "proxmox.guest.migrate",
                json!({"node": node, "vmid": 100, "target": "a b"}),
            ),
            (
                "proxmox.test_connection",
                json!({"host": "pve;rm -rf /", "token_id": "root@pam!x", "token_secret": "s"}),
            ),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some(self.guest("proxmox.guest.stop", 100))
    }

    /// PVE's task ends "VM is locked (backup)": real task polling, and an
    /// error no retry can fix.
    fn permanent_failure(&self) -> Call {
        self.guest("proxmox.guest.start", 101)
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        let node = self.node;
        let broken = self.connection(closed_port());
        Some((
            self.guest("proxmox.guest.start", 100),
            Box::new(move |config| {
                let store = store_of(config);
                let written = store
                    .write(|tx| proxmox_node_update(tx, node, "fake", &broken, time::now()))
                    .unwrap();
                assert!(matches!(written, NodeWrite::Written(_)), "{written:?}");
            }),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured(
            "proxmox.guest.shutdown",
            json!({"node": self.node.to_string(), "vmid": 102, "timeout": 86_400}),
        )
    }

    async fn stop(self) {
        // fakepve does not model stopping a task (DELETE /nodes/{node}/tasks/{upid}
        // answers OK and the task runs on), so only the request can be checked.
        let stops = self
            .pve
            .requests()
            .into_iter()
            .filter(|r| r.method == "DELETE" && r.path.contains("/tasks/UPID:"))
            .count();
        assert!(
            stops >= 2,
            "the cancelled and the timed-out shutdown asked PVE to stop their tasks"
        );
        self.pve.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxmox_driver_conforms() {
    conforms::<Proxmox>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_handed_back_at_shutdown_resumes_the_pve_task_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let subject = Proxmox::start(dir.path()).await;
    let app = crate::TestApp::with(|config| {
        subject.configure(config);
        config.worker.shutdown_grace_secs = 0;
    });
    // Guest 102 takes 10^5 s to power off; the shutdown's own timeout (300
    // PVE seconds, 3 s here) ends its task first, with "VM quit/powerdown
    // failed - got timeout" unless forceStop, which stops it.
    let id = app.enqueue(
        "proxmox.guest.shutdown",
        json!({"node": subject.node.to_string(), "vmid": 102, "timeout": 300, "force": true}),
    );
    let running = app.start().await;
    let mut step = None;
    app.wait_until("the task is recorded", || {
        step = app.get(id).progress.and_then(|p| p.step);
        step.is_some()
    })
    .await;
    let step = step.unwrap();
    let upid = step
        .strip_prefix("waiting for PVE task ")
        .unwrap()
        .to_owned();
    assert!(
        upid.starts_with("UPID:pve2:") && upid.contains(":qmshutdown:102:root@pam!ci:"),
        "{upid}"
    );
    // A shutdown with no grace hands the operation back, its task running.
    running.stop().await.unwrap();
    let op = app.get(id);
    assert_eq!(op.status, Status::Pending, "{op:?}");

    let worker = app.worker().await;
    worker.step().await.unwrap();
    let op = app.get(id);
    assert_eq!(op.status, Status::Completed, "{op:?}\n{:?}", app.logs(id));
    let result = op.result.unwrap();
    assert_eq!(
        result["upid"],
        json!(upid),
        "the same task, not a second one"
    );
    assert_eq!(result["changed"], json!(true));
    assert_eq!(result["status"], json!("stopped"));
    let lines: Vec<String> = app.logs(id).into_iter().map(|e| e.line).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("resuming the wait for task")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "pve: TASK OK"),
        "the task log is copied: {lines:?}"
    );
    let posts = subject
        .pve
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/status/shutdown"))
        .count();
    assert_eq!(posts, 1, "one shutdown was asked of PVE");
    assert_eq!(subject.pve.guest(102)["status"], json!("stopped"));
    subject.pve.stop();
}
