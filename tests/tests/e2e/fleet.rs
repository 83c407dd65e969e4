//! The fleet, end to end: an API serving HTTPS with a certificate the test
//! made, and remote workers as separate processes pulling their targets'
//! work with agent keys, each with its own driver roots (scripts
//! directory, diag record) and no database. A kill -9, a partition (a
//! worker in its own network namespace whose link is cut) and a cancel
//! show what happens when a host or its link goes away.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opsqueue_tests::fleet::{Agent, Netns, self_signed};
use opsqueue_tests::{Cluster, DEADLINE, eventually, process_alive};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn time(op: &Value, field: &str) -> DateTime<Utc> {
    op[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {op}"))
        .parse()
        .unwrap()
}

/// A cluster whose API serves HTTPS on `bind` with a fresh self-signed
/// certificate; the API and a monitor are started. Returns the cluster and
/// the certificate's path (what remote workers pin). The API accepts
/// `script.run` (a family is enabled on the API, which accepts its
/// operations, and on the workers that run them).
fn tls_cluster(bind: &str) -> (Cluster, std::path::PathBuf) {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_SCRIPTS__ENABLED", "true");
    let (cert, key) = self_signed(cluster.dir.path(), &["localhost", "127.0.0.1", "10.77.0.1"]);
    cluster.use_tls(&cert, &key);
    cluster.set_env("OPSQUEUE_API__BIND", bind);
    cluster.start_api();
    cluster.api_url = cluster.api_url.replace("0.0.0.0", "127.0.0.1");
    assert!(
        cluster.api_url.starts_with("https://"),
        "{}",
        cluster.api_url
    );
    cluster.start_monitor();
    (cluster, cert)
}

async fn wait_target_status(cluster: &Cluster, name: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        // Not known yet (404) until its first worker registers.
        let found = cluster.get(&format!("/api/v1/targets/{name}")).await.body;
        if found["status"] == status {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "target {name} never became {status}: {found:#}\n{}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid a `diag.sleep {child: true}` logged for its `sleep` process.
async fn child_pid(cluster: &Cluster, id: &str) -> i32 {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        for line in cluster.logs(id).await {
            let text = line["line"].as_str().unwrap_or_default();
            if let Some(rest) = text.strip_prefix("$ sleep")
                && let Some(pid) = rest
                    .split("[pid ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches(']').parse().ok())
            {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no child pid in the logs of {id}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn three_remote_workers_over_https_each_run_only_their_own_targets_operations() {
    let (mut cluster, cert) = tls_cluster("127.0.0.1:0");
    let agents: Vec<Agent> = ["a", "b", "c"]
        .iter()
        .map(|name| Agent::new(&cluster, name, &[name]))
        .collect();
    let url = cluster.api_url.clone();
    for agent in &agents {
        cluster.start_worker(&agent.env(&url, Some(&cert), &[&agent.name]));
    }
    for agent in &agents {
        wait_target_status(&cluster, &agent.name, "online").await;
    }

    // (target, kind, id)
    let mut fired: Vec<(String, &str, String)> = Vec::new();
    for round in 0..10 {
        for agent in &agents {
            let noop = cluster
                .enqueue(json!({"type": "diag.noop", "payload": {}, "target": agent.name}))
                .await;
            fired.push((
                agent.name.clone(),
                "diag.noop",
                noop["id"].as_str().unwrap().to_owned(),
            ));
            if round % 3 == 0 {
                let script = cluster
                    .enqueue(json!({"type": "script.run", "payload": {"name": "whoami"}, "target": agent.name}))
                    .await;
                fired.push((
                    agent.name.clone(),
                    "script.run",
                    script["id"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    for (name, _, id) in &fired {
        let op = cluster.wait_terminal(id).await;
        assert_eq!(op["status"], "completed", "{op:#}");
        assert_eq!(op["target"], name.as_str());
        if op["type"] == "script.run" {
            // The script of that worker's own scripts directory ran.
            assert_eq!(op["result"]["served_by"], name.as_str(), "{op:#}");
            assert_eq!(op["result"]["target"], name.as_str(), "{op:#}");
        }
    }
    for agent in &agents {
        // Every diag execution of this worker is recorded in its own file.
        let ran: HashSet<String> = agent.executed().into_iter().collect();
        let own: HashSet<String> = fired
            .iter()
            .filter(|(name, kind, _)| *name == agent.name && *kind == "diag.noop")
            .map(|(_, _, id)| id.clone())
            .collect();
        assert_eq!(
            ran, own,
            "worker {} ran other operations than its target's",
            agent.name
        );
        assert!(
            !agent.no_database.exists() && !agent.no_database.parent().unwrap().exists(),
            "a remote worker touched a database"
        );
    }

    // Operations on one resource, spread over the three targets, run one at
    // a time in the order accepted, across the fleet.
    let mut serialized = Vec::new();
    for i in 0..12 {
        let target = &agents[i % 3].name;
        let op = cluster
            .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 0.05, "key": "fleet"}, "target": target}))
            .await;
        serialized.push(op["id"].as_str().unwrap().to_owned());
    }
    let mut ops = Vec::new();
    for id in &serialized {
        ops.push(cluster.wait_terminal(id).await);
    }
    for pair in ops.windows(2) {
        assert_eq!(pair[0]["status"], "completed", "{:#}", pair[0]);
        assert!(
            time(&pair[1], "started_at") >= time(&pair[0], "finished_at"),
            "{} started before {} finished",
            pair[1]["id"],
            pair[0]["id"]
        );
    }

    // The registry: each target online, served by its remote worker, with
    // the facts of its host.
    let listed = cluster.get("/api/v1/targets").await;
    assert_eq!(listed.status, StatusCode::OK);
    for agent in &agents {
        let found = listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == agent.name.as_str())
            .unwrap_or_else(|| panic!("target {} not listed: {:#}", agent.name, listed.body))
            .clone();
        assert_eq!(found["status"], "online", "{found:#}");
        assert_eq!(found["agents"].as_array().unwrap().len(), 1, "{found:#}");
        let worker = &found["agents"][0];
        assert_eq!(worker["worker_id"], format!("remote-{}", agent.name));
        assert_eq!(worker["remote"], true);
        assert!(
            worker["drivers"]
                .as_array()
                .unwrap()
                .contains(&json!("script"))
        );
        assert!(
            found["facts"]["cpus"].as_u64().is_some_and(|n| n >= 1),
            "{found:#}"
        );
        assert!(found["facts"]["kernel"].is_string(), "{found:#}");
        assert!(
            found["facts"]["memory_total_bytes"].as_u64().is_some(),
            "{found:#}"
        );
        assert_eq!(found["pending"], 0);
    }
    let op = cluster.operation(&fired[0].2).await;
    assert_eq!(op["target_status"], "online", "{op:#}");
}

#[tokio::test]
async fn a_remote_worker_refuses_plain_http_to_another_host() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let agent = Agent::new(&cluster, "plain", &["p"]);
    let worker = cluster.start_worker(&agent.env("http://10.77.0.1:8080", None, &["p"]));
    let status = cluster.workers[worker]
        .wait_exit(DEADLINE)
        .expect("the worker exits");
    assert!(!status.success());
    let log = cluster.workers[worker].log_text();
    assert!(
        log.contains("plain http:// to 10.77.0.1") && log.contains("https://"),
        "{log}"
    );
    // Loopback may speak plain HTTP.
    let url = cluster.api_url.clone();
    cluster.start_worker(&agent.env(&url, None, &["p"]));
    let id = cluster
        .enqueue(json!({"type": "diag.noop", "payload": {}, "target": "p"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cluster.wait_terminal(&id).await["status"], "completed");
}

#[tokio::test]
async fn a_remote_worker_killed_mid_operation_is_reaped_by_its_lease_and_rerun_only_when_safe() {
    let (mut cluster, cert) = tls_cluster("127.0.0.1:0");
    cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", 3);
    let agent = Agent::new(&cluster, "k", &["k"]);
    let url = cluster.api_url.clone();
    let first = cluster.start_worker(&agent.env(&url, Some(&cert), &["k"]));
    wait_target_status(&cluster, "k", "online").await;

    let safe = cluster
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 30}, "target": "k"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unsafe_ = cluster
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 30, "rerun_safe": false}, "target": "k"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in [&safe, &unsafe_] {
        cluster.wait_until(id, |op| op["status"] == "running").await;
    }
    // `running` is written at the claim: wait until both runs started.
    eventually("both runs started", || {
        let runs = agent.executed();
        runs.contains(&safe) && runs.contains(&unsafe_)
    })
    .await;

    cluster.workers[first].signal(libc::SIGKILL);
    cluster.workers[first]
        .wait_exit(DEADLINE)
        .expect("the worker died");
    // Only the lease can tell a remote worker is gone.
    let requeued = cluster
        .wait_until(&safe, |op| op["status"] != "running")
        .await;
    assert_eq!(requeued["status"], "pending", "{requeued:#}");
    assert_eq!(requeued["error"]["code"], "lease_expired");
    assert_eq!(requeued["target_status"], "offline", "{requeued:#}");
    let failed = cluster
        .wait_until(&unsafe_, |op| op["status"] != "running")
        .await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["code"], "lease_expired");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not safe to re-run"),
        "{failed:#}"
    );
    wait_target_status(&cluster, "k", "offline").await;

    // Another worker for the target picks the safe one up again.
    let mut env = agent.env(&url, Some(&cert), &["k"]);
    env.retain(|(k, _)| *k != "OPSQUEUE_WORKER__ID");
    cluster.start_worker(&env);
    wait_target_status(&cluster, "k", "online").await;
    let rerun = cluster
        .wait_until(&safe, |op| op["status"] == "running")
        .await;
    assert_eq!(rerun["attempt"], 2);
    let runs = agent.executed();
    assert_eq!(runs.iter().filter(|id| **id == safe).count(), 2);
    assert_eq!(runs.iter().filter(|id| **id == unsafe_).count(), 1);
}

#[tokio::test]
async fn a_partitioned_remote_worker_loses_its_claim_and_its_late_finish_is_refused() {
    let netns = Netns::new();
    let (mut cluster, cert) = tls_cluster("0.0.0.0:0");
    cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", 3);
    let port = cluster.api_url.rsplit(':').next().unwrap().to_owned();
    let far_url = format!("https://{}:{port}", netns.outer_ip);
    let far = Agent::new(&cluster, "far", &["p"]);
    let near = Agent::new(&cluster, "near", &["p"]);
    let isolated =
        cluster.start_worker_in(Some(&netns.name), &far.env(&far_url, Some(&cert), &["p"]));
    wait_target_status(&cluster, "p", "online").await;

    let id = cluster
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 4}, "target": "p"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    netns.cut();

    // The lease runs out; the operation is safe to re-run, so it is pending
    // again, and a worker on this side of the cut runs it.
    let requeued = cluster
        .wait_until(&id, |op| op["status"] == "pending")
        .await;
    assert_eq!(requeued["error"]["code"], "lease_expired", "{requeued:#}");
    assert_eq!(requeued["target_status"], "offline");
    let url = cluster.api_url.clone();
    cluster.start_worker(&near.env(&url, Some(&cert), &["p"]));
    let done = cluster.wait_terminal(&id).await;
    assert_eq!(
        (done["status"].as_str(), done["attempt"].as_i64()),
        (Some("completed"), Some(2)),
        "{done:#}"
    );

    // The link comes back: the isolated worker, its sleep long over, sends
    // the finish of attempt 1, and the API refuses it.
    netns.heal();
    eventually(
        "the isolated worker's late finish was refused with 409",
        || {
            cluster.workers[isolated].log_events().iter().any(|e| {
                e["operation"] == id.as_str() && e["status"] == 409 && e["code"] == "claim_lost"
            })
        },
    )
    .await;
    let after = cluster.operation(&id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["attempt"], 2);
    assert_eq!(
        after["finished_at"], done["finished_at"],
        "the late finish overwrote the outcome"
    );
    assert_eq!(after["result"], done["result"]);
    // Attempt 1 ran beyond the cut, attempt 2 on this side.
    assert_eq!(far.executed(), std::slice::from_ref(&id));
    assert_eq!(near.executed(), std::slice::from_ref(&id));
    // Healed, the isolated worker heartbeats again.
    assert!(process_alive(cluster.workers[isolated].pid()));
    wait_target_status(&cluster, "p", "online").await;
}

#[tokio::test]
async fn cancelling_a_remote_running_operation_kills_its_process_group() {
    let (mut cluster, cert) = tls_cluster("127.0.0.1:0");
    let agent = Agent::new(&cluster, "x", &["x"]);
    let url = cluster.api_url.clone();
    cluster.start_worker(&agent.env(&url, Some(&cert), &["x"]));
    let id = cluster
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 120, "child": true}, "target": "x"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    let pid = child_pid(&cluster, &id).await;
    assert!(process_alive(pid));
    let response = cluster
        .post(&format!("/api/v1/operations/{id}/cancel"), json!({}))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
    let ended = cluster.wait_terminal(&id).await;
    assert_eq!(ended["status"], "cancelled", "{ended:#}");
    eventually("the sleep process is gone", || !process_alive(pid)).await;
}
