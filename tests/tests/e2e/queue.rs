//! The queue's promises, end to end: the real binaries as processes on a
//! temporary database, driven over HTTP like a user would.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
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

/// The pid a `diag.sleep {child: true}` logged for its `sleep` process.
async fn child_pid(cluster: &Cluster, id: &str) -> i32 {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        for line in cluster.logs(id).await {
            let text = line["line"].as_str().unwrap_or_default();
            if let Some(rest) = text.split("pid").nth(1) {
                let digits: String = rest
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if let Ok(pid) = digits.parse() {
                    return pid;
                }
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
async fn a_fired_noop_is_accepted_with_a_location_and_long_polls_to_completed() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let response = cluster
        .post(
            "/api/v1/operations",
            json!({"type": "diag.noop", "payload": {}}),
        )
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED);
    let id = response.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        response.headers["location"],
        format!("/api/v1/operations/{id}").as_str()
    );
    assert!(response.headers.contains_key("retry-after"));
    assert_eq!(response.body["status"], "pending");

    let waited = cluster
        .get(&format!("/api/v1/operations/{id}?wait=30"))
        .await;
    assert_eq!(waited.status, StatusCode::OK);
    assert_eq!(waited.body["status"], "completed", "{:#}", waited.body);
    assert_eq!(waited.body["attempt"], 1);
    assert_eq!(waited.body["result"]["changed"], false);
}

#[tokio::test]
async fn a_worker_killed_mid_operation_is_reaped_at_once_and_the_operation_runs_again() {
    let mut cluster = Cluster::new();
    // A lease far longer than the test's deadline: only the dead-pid check
    // can reap in time.
    cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", 600);
    cluster.start_api();
    cluster.start_monitor();
    let worker = cluster.start_worker(&[]);
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 1.5}))
        .await;
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;

    cluster.workers[worker].signal(libc::SIGKILL);
    cluster.workers[worker]
        .wait_exit(DEADLINE)
        .expect("the worker died");
    let requeued = cluster
        .wait_until(&id, |op| op["status"] != "running")
        .await;
    assert_eq!(requeued["status"], "pending", "{requeued:#}");
    assert_eq!(requeued["error"]["code"], "worker_lost");

    cluster.start_worker(&[]);
    let done = cluster.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["attempt"], 2);
}

#[tokio::test]
async fn four_workers_execute_two_thousand_operations_exactly_once() {
    let mut cluster = Cluster::new();
    let record = cluster.path("executions.txt");
    cluster.set_env("OPSQUEUE_DIAG__RECORD_PATH", record.display());
    cluster.start_api();
    cluster.start_monitor();
    for _ in 0..4 {
        cluster.start_worker(&[("OPSQUEUE_WORKER__CONCURRENCY", "8".into())]);
    }
    let cluster = std::sync::Arc::new(cluster);
    let mut senders = Vec::new();
    for _ in 0..16 {
        let cluster = cluster.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..125 {
                ids.push(cluster.enqueue_kind("diag.noop", json!({})).await);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for sender in senders {
        ids.extend(sender.await.unwrap());
    }
    assert_eq!(ids.len(), 2000);

    let db = cluster.sqlite();
    eventually("all 2000 operations completed", || {
        db.query_row(
            "SELECT count(*) FROM operations WHERE status = 'completed'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 2000
    })
    .await;
    let text = std::fs::read_to_string(&record).unwrap();
    let mut executions: HashMap<&str, usize> = HashMap::new();
    let mut workers = std::collections::HashSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        *executions.entry(fields[0]).or_default() += 1;
        workers.insert(fields[2]);
    }
    assert_eq!(executions.len(), 2000);
    assert!(
        executions.values().all(|n| *n == 1),
        "some operation ran twice"
    );
    for id in &ids {
        assert!(executions.contains_key(id.as_str()), "{id} never ran");
    }
    assert!(workers.len() > 1, "only one worker did all the work");
}

#[tokio::test]
async fn a_worker_whose_claim_was_reaped_cannot_complete_the_operation_afterwards() {
    let mut cluster = Cluster::new();
    let record = cluster.path("executions.txt");
    cluster.set_env("OPSQUEUE_DIAG__RECORD_PATH", record.display());
    cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", 3);
    cluster.start_api();
    cluster.start_monitor();
    let frozen = cluster.start_worker(&[("OPSQUEUE_LOG__FORMAT", "json".into())]);
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 4}))
        .await;
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    // A hung worker: alive, so only its expired lease can get it reaped.
    cluster.workers[frozen].signal(libc::SIGSTOP);
    let requeued = cluster
        .wait_until(&id, |op| op["status"] == "pending")
        .await;
    assert_eq!(requeued["error"]["code"], "lease_expired");

    cluster.start_worker(&[]);
    let done = cluster.wait_terminal(&id).await;
    assert_eq!(
        (done["status"].as_str(), done["attempt"].as_i64()),
        (Some("completed"), Some(2))
    );

    // The frozen worker wakes up, its sleep long over, and tries to write
    // about attempt 1 (its heartbeat or its finish): the fence refuses it.
    cluster.workers[frozen].signal(libc::SIGCONT);
    eventually("the resumed worker found its claim lost", || {
        cluster.workers[frozen].log_events().iter().any(|e| {
            e["operation"] == id.as_str()
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("the claim was lost"))
        })
    })
    .await;
    let after = cluster.operation(&id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["attempt"], 2);
    assert_eq!(
        after["finished_at"], done["finished_at"],
        "the reaped worker overwrote the outcome"
    );
    let runs = std::fs::read_to_string(&record).unwrap();
    assert_eq!(runs.lines().filter(|l| l.starts_with(&id)).count(), 2);
}

#[tokio::test]
async fn operations_on_one_resource_never_overlap_and_run_in_the_order_accepted() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    cluster.start_monitor();
    for _ in 0..2 {
        cluster.start_worker(&[("OPSQUEUE_WORKER__CONCURRENCY", "4".into())]);
    }
    let mut serialized = Vec::new();
    let mut others = Vec::new();
    for _ in 0..20 {
        serialized.push(
            cluster
                .enqueue_kind("diag.sleep", json!({"seconds": 0.05, "key": "db"}))
                .await,
        );
        others.push(
            cluster
                .enqueue_kind("diag.sleep", json!({"seconds": 0.05}))
                .await,
        );
    }
    let mut ops = Vec::new();
    for id in &serialized {
        ops.push(cluster.wait_terminal(id).await);
    }
    for id in &others {
        assert_eq!(cluster.wait_terminal(id).await["status"], "completed");
    }
    for pair in ops.windows(2) {
        assert_eq!(pair[0]["status"], "completed");
        assert!(
            time(&pair[1], "started_at") >= time(&pair[0], "finished_at"),
            "{} started before {} finished",
            pair[1]["id"],
            pair[0]["id"]
        );
    }
    assert_eq!(ops[0]["resource"], "diag:db");
}

#[tokio::test]
async fn cancelling_a_pending_operation_ends_it_at_once() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let id = cluster.enqueue_kind("diag.noop", json!({})).await;
    let response = cluster
        .post(&format!("/api/v1/operations/{id}/cancel"), json!({}))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED);
    assert_eq!(response.body["status"], "cancelled");
    let again = cluster
        .post(&format!("/api/v1/operations/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn cancelling_a_running_operation_kills_its_child_process_and_ends_it_cancelled() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 300, "child": true}))
        .await;
    let pid = child_pid(&cluster, &id).await;
    assert!(process_alive(pid));
    let response = cluster
        .post(&format!("/api/v1/operations/{id}/cancel"), json!({}))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
    let done = cluster.wait_terminal(&id).await;
    assert_eq!(done["status"], "cancelled", "{done:#}");
    eventually("the child process is gone", || !process_alive(pid)).await;
}

#[tokio::test]
async fn an_operation_past_its_timeout_has_its_child_killed_and_fails_with_code_timeout() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let op = cluster
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 300, "child": true}, "timeout_secs": 1}))
        .await;
    let id = op["id"].as_str().unwrap();
    let pid = child_pid(&cluster, id).await;
    let done = cluster.wait_terminal(id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "timeout");
    eventually("the child process is gone", || !process_alive(pid)).await;
}

#[tokio::test]
async fn a_retryable_failure_is_retried_with_backoff_until_its_attempts_run_out() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let op = cluster
        .enqueue(json!({"type": "diag.fail", "payload": {"message": "flaky", "retryable": true}, "max_attempts": 3}))
        .await;
    let id = op["id"].as_str().unwrap();
    let done = cluster.wait_terminal(id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempt"], 3);
    assert_eq!(done["error"]["message"], "flaky");

    let permanent = cluster
        .enqueue_kind("diag.fail", json!({"message": "broken"}))
        .await;
    let done = cluster.wait_terminal(&permanent).await;
    assert_eq!(
        (done["status"].as_str(), done["attempt"].as_i64()),
        (Some("failed"), Some(1))
    );
}

#[tokio::test]
async fn bad_requests_and_bad_keys_are_refused_and_store_nothing() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let url = format!("{}/api/v1/operations", cluster.api_url);
    let body = json!({"type": "diag.noop", "payload": {}});

    let anonymous = cluster.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let reader = cluster.create_key("reader", "read");
    let read_only = cluster
        .http
        .post(&url)
        .bearer_auth(&reader)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN);
    let revoked = cluster.create_key("gone", "write");
    assert!(
        cluster
            .api_command(&["keys", "revoke", "gone"])
            .status
            .success()
    );
    let response = cluster
        .http
        .post(&url)
        .bearer_auth(&revoked)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    for bad in [
        json!({"type": "diag.explode", "payload": {}}),
        json!({"type": "diag.sleep", "payload": {"seconds": "ten"}}),
        json!({"type": "diag.noop", "payload": {}, "priority": "high"}),
        json!({"type": "diag.noop", "payload": {"key": "; rm -rf /"}}),
    ] {
        let response = cluster.post("/api/v1/operations", bad.clone()).await;
        assert!(
            response.status.is_client_error(),
            "{bad} → {}",
            response.status
        );
        assert_eq!(
            response.headers["content-type"], "application/problem+json",
            "{bad}"
        );
        assert!(
            response.body["code"].is_string(),
            "{bad} → {:?}",
            response.body
        );
    }
    let malformed = cluster
        .http
        .post(&url)
        .bearer_auth(&cluster.token)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let rows: i64 = cluster
        .sqlite()
        .query_row("SELECT count(*) FROM operations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "a refused request was stored");
}

#[tokio::test]
async fn a_database_newer_than_the_binaries_is_refused_with_a_clear_error() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    drop(cluster.api.take());
    cluster
        .sqlite()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    for binary in ["opsqueue-api", "opsqueue-worker", "opsqueue-monitor"] {
        let out = std::process::Command::new(opsqueue_tests::binary(binary))
            .env("OPSQUEUE_DATABASE__PATH", cluster.db_path())
            .env("OPSQUEUE_API__BIND", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{binary} started on a newer database"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("newer than this opsqueue"),
            "{binary}: {stderr}"
        );
    }
}

/// The cron tick (a whole second, as a Unix time) of a fire time.
fn tick(fire_at: &str) -> i64 {
    fire_at
        .parse::<DateTime<Utc>>()
        .unwrap_or_else(|e| panic!("{fire_at}: {e}"))
        .timestamp()
}

/// The fire time a scheduled operation of `tick` carries in its idempotency
/// key (`schedule:<name>:<fire time>`, see monitor/src/scheduler.rs).
fn fire_time(idempotency_key: &str) -> &str {
    idempotency_key
        .strip_prefix("schedule:tick:")
        .unwrap_or_else(|| panic!("not a fire of tick: {idempotency_key}"))
}

#[tokio::test]
async fn one_schedule_with_two_monitors_enqueues_exactly_one_operation_per_fire() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let created = cluster
        .post(
            "/api/v1/schedules",
            json!({"name": "tick", "cron": "* * * * * *", "type": "diag.noop", "payload": {}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    cluster.set_env("OPSQUEUE_LOG__FORMAT", "json");
    let monitors = [cluster.start_monitor(), cluster.start_monitor()];
    eventually("both monitors run", || {
        monitors
            .iter()
            .all(|&m| cluster.monitors[m].logged("monitor running"))
    })
    .await;
    let db = cluster.sqlite();
    let fires = || {
        db.query_row(
            "SELECT count(*) FROM operations WHERE source = 'cron'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let before = fires();
    eventually(
        "the schedule fired three times with both monitors up",
        || fires() >= before + 3,
    )
    .await;
    for &m in &monitors {
        cluster.monitors[m].signal(libc::SIGTERM);
        let status = cluster.monitors[m].wait_exit(DEADLINE).expect("exited");
        assert!(status.success(), "{status:?}");
    }

    // Each cron tick (a whole second) is on exactly one operation.
    let mut stored: HashMap<i64, Vec<String>> = HashMap::new();
    let mut statement = db
        .prepare("SELECT id, idempotency_key FROM operations WHERE source = 'cron'")
        .unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (id, key) = row.unwrap();
        stored.entry(tick(fire_time(&key))).or_default().push(id);
    }
    let doubled: Vec<_> = stored.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "ticks enqueued twice: {doubled:?}");

    // And each fire time was fired by one monitor only, once: a second fire
    // the idempotency key turned into a replay would show here.
    let mut logged: HashMap<String, Vec<String>> = HashMap::new();
    for &m in &monitors {
        for event in cluster.monitors[m].log_events() {
            if event["message"] == "schedule fired" {
                let fire_at = event["fire_at"].as_str().unwrap().to_owned();
                let id = event["id"].as_str().unwrap().to_owned();
                logged.entry(fire_at).or_default().push(id);
            }
        }
    }
    let refired: Vec<_> = logged.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(refired.is_empty(), "fire times fired twice: {refired:?}");
    let mut logged_ticks: Vec<i64> = logged.keys().map(|at| tick(at)).collect();
    let mut stored_ticks: Vec<i64> = stored.keys().copied().collect();
    logged_ticks.sort();
    stored_ticks.sort();
    assert_eq!(
        logged_ticks, stored_ticks,
        "the monitors' fires and the stored operations differ"
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_operation_finish_and_the_worker_exits_zero() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let worker = cluster.start_worker(&[]);
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 2}))
        .await;
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    cluster.workers[worker].signal(libc::SIGTERM);
    let status = cluster.workers[worker]
        .wait_exit(DEADLINE)
        .expect("the worker exited");
    assert!(status.success(), "{status:?}");
    assert_eq!(cluster.operation(&id).await["status"], "completed");
}

#[tokio::test]
async fn sigterm_past_the_grace_period_releases_a_running_operation_for_another_worker() {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_WORKER__SHUTDOWN_GRACE_SECS", 1);
    cluster.start_api();
    let worker = cluster.start_worker(&[]);
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 300, "child": true}))
        .await;
    let pid = child_pid(&cluster, &id).await;
    cluster.workers[worker].signal(libc::SIGTERM);
    let status = cluster.workers[worker]
        .wait_exit(DEADLINE)
        .expect("the worker exited");
    assert!(status.success(), "{status:?}");
    let op = cluster.operation(&id).await;
    assert_eq!(op["status"], "pending", "{op:#}");
    assert_eq!(op["attempt"], 0, "the interrupted attempt was counted");
    assert!(!process_alive(pid), "the child outlived its worker");
}
