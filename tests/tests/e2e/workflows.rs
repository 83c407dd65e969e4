//! Workflows through the real binaries: dependencies, compensation in
//! reverse order, cancel, retry, refusals, and kill -9 of workers while
//! hundreds of workflows run, with two workers and two monitors.

use std::collections::HashMap;
use std::time::Duration;

use opsqueue_tests::{Cluster, DEADLINE, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Submits a workflow; asserts the 202 and its `Location`; returns its id.
async fn submit(cluster: &Cluster, workflow: Value) -> String {
    let response = cluster.post("/api/v1/workflows", workflow).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
    let id = response.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        response.headers["location"].to_str().unwrap(),
        format!("/api/v1/workflows/{id}")
    );
    assert_eq!(response.body["type"], "workflow.run");
    id
}

/// Long-polls until the whole workflow ended; returns its view.
async fn ended(cluster: &Cluster, id: &str) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let view = cluster
            .get(&format!("/api/v1/workflows/{id}?wait=5"))
            .await
            .body;
        if matches!(
            view["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflow {id} never ended: {view:#}\n{}",
            cluster.logs_tail()
        );
    }
}

fn step<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {view:#}"))
}

fn time(value: &Value) -> String {
    value.as_str().expect("a time").to_owned()
}

/// Executions per operation id, in the order the record file has them.
fn executions(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| line.split(' ').next().unwrap().to_owned())
        .collect()
}

fn recording_cluster() -> (Cluster, std::path::PathBuf) {
    let mut cluster = Cluster::new();
    let record = cluster.path("executions.txt");
    cluster.set_env("OPSQUEUE_DIAG__RECORD_PATH", record.display());
    cluster.start_all();
    (cluster, record)
}

#[tokio::test]
async fn a_diamond_runs_its_last_step_only_after_both_branches_completed() {
    let (cluster, _) = recording_cluster();
    let id = submit(
        &cluster,
        json!({"name": "diamond", "steps": [
            {"name": "d", "type": "diag.noop", "depends_on": ["b", "c"]},
            {"name": "b", "type": "diag.sleep", "payload": {"seconds": 0.3}, "depends_on": ["a"]},
            {"name": "c", "type": "diag.sleep", "payload": {"seconds": 0.5}, "depends_on": ["a"]},
            {"name": "a", "type": "diag.noop"},
        ]}),
    )
    .await;
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "completed", "{view:#}");
    assert_eq!(view["phase"], "ended");
    let (a, b, c, d) = (
        step(&view, "a"),
        step(&view, "b"),
        step(&view, "c"),
        step(&view, "d"),
    );
    assert_eq!(d["depends_on"], json!(["b", "c"]));
    for s in [a, b, c, d] {
        assert_eq!(s["status"], "completed", "{s:#}");
    }
    assert!(time(&b["started_at"]) >= time(&a["finished_at"]));
    assert!(time(&c["started_at"]) >= time(&a["finished_at"]));
    assert!(time(&d["started_at"]) >= time(&b["finished_at"]));
    assert!(time(&d["started_at"]) >= time(&c["finished_at"]));
    assert_eq!(
        view["result"]["steps"]["b"],
        json!({"changed": false, "slept_secs": 0.3}),
        "{view:#}"
    );
    // The steps are operations too, listed under their workflow.
    let children = cluster
        .get(&format!("/api/v1/operations?parent={id}"))
        .await
        .body;
    assert_eq!(children["items"].as_array().unwrap().len(), 4);
    let listed = cluster.get("/api/v1/workflows").await.body;
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["items"][0]["steps"], json!({"completed": 4}));
}

#[tokio::test]
async fn a_failed_step_compensates_the_completed_ones_in_reverse_order_exactly_once() {
    let (cluster, record) = recording_cluster();
    let undo = |key: &str| json!({"type": "diag.noop", "payload": {"key": key}});
    let id = submit(
        &cluster,
        json!({"steps": [
            {"name": "first", "type": "diag.noop", "compensate": undo("undo-first")},
            {"name": "second", "type": "diag.noop", "depends_on": ["first"],
             "compensate": undo("undo-second")},
            {"name": "third", "type": "diag.fail", "depends_on": ["second"],
             "payload": {"message": "boom"}, "compensate": undo("undo-third")},
            {"name": "fourth", "type": "diag.noop", "depends_on": ["third"]},
        ]}),
    )
    .await;
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert_eq!(view["error"]["code"], "step_failed");
    assert!(
        view["error"]["message"].as_str().unwrap().contains("third"),
        "{view:#}"
    );
    assert_eq!(view["result"]["compensated"], true, "{view:#}");
    assert_eq!(step(&view, "third")["status"], "failed");
    let fourth = step(&view, "fourth");
    assert_eq!(fourth["status"], "cancelled");
    assert_eq!(fourth["error"]["code"], "dependency_failed");
    // Compensations: second's, then first's; none for the failed step.
    let compensations = view["compensations"].as_array().unwrap();
    let order: Vec<&str> = compensations
        .iter()
        .map(|c| c["compensates"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["second", "first"], "{view:#}");
    assert!(compensations.iter().all(|c| c["status"] == "completed"));
    let ran = executions(&record);
    for compensation in compensations {
        let cid = compensation["operation_id"].as_str().unwrap();
        assert_eq!(
            ran.iter().filter(|r| *r == cid).count(),
            1,
            "compensation {cid} did not run exactly once"
        );
    }
    let position = |cid: &Value| ran.iter().position(|r| r == cid.as_str().unwrap());
    assert!(
        position(&compensations[0]["operation_id"]) < position(&compensations[1]["operation_id"])
    );
    assert!(
        time(&compensations[1]["started_at"]) >= time(&compensations[0]["finished_at"]),
        "compensations ran one at a time"
    );
}

#[tokio::test]
async fn cancelling_a_workflow_stops_its_running_step_cancels_the_rest_and_compensates() {
    let (cluster, _) = recording_cluster();
    let id = submit(
        &cluster,
        json!({"steps": [
            {"name": "setup", "type": "diag.noop",
             "compensate": {"type": "diag.noop", "payload": {}}},
            {"name": "long", "type": "diag.sleep", "depends_on": ["setup"],
             "payload": {"seconds": 60, "child": true}},
            {"name": "after", "type": "diag.noop", "depends_on": ["long"]},
        ]}),
    )
    .await;
    let long = loop {
        let view = cluster.get(&format!("/api/v1/workflows/{id}")).await.body;
        assert!(
            view["status"] == "pending" || view["status"] == "running",
            "{view:#}"
        );
        if step(&view, "long")["status"] == "running" {
            break step(&view, "long")["operation_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let response = cluster
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "cancelled", "{view:#}");
    assert_eq!(step(&view, "long")["status"], "cancelled");
    assert_eq!(step(&view, "after")["status"], "cancelled");
    assert_eq!(view["compensations"][0]["compensates"], "setup");
    assert_eq!(view["compensations"][0]["status"], "completed");
    assert_eq!(view["result"]["compensated"], true);
    let long = cluster.operation(&long).await;
    assert_eq!(long["error"]["code"], "cancelled", "{long:#}");
    // A second cancel is refused: it already ended.
    let again = cluster
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    again.assert_problem("not_cancellable", "a second cancel");
}

#[tokio::test]
async fn retrying_runs_only_what_did_not_complete() {
    let (cluster, record) = recording_cluster();
    // A failure with on_failure: stop keeps the completed step completed.
    let id = submit(
        &cluster,
        json!({"on_failure": "stop", "steps": [
            {"name": "done", "type": "diag.noop"},
            {"name": "broken", "type": "diag.fail", "depends_on": ["done"],
             "payload": {"message": "still broken"}},
            {"name": "last", "type": "diag.noop", "depends_on": ["broken"]},
        ]}),
    )
    .await;
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "failed", "{view:#}");
    assert_eq!(view["compensations"], json!([]));
    let done = step(&view, "done")["operation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken = step(&view, "broken")["operation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retried = cluster
        .post(&format!("/api/v1/workflows/{id}/retry"), json!({}))
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{:#}", retried.body);
    assert_eq!(step(&retried.body, "done")["status"], "completed");
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "failed");
    let ran = executions(&record);
    assert_eq!(
        ran.iter().filter(|r| **r == done).count(),
        1,
        "done ran again"
    );
    assert_eq!(ran.iter().filter(|r| **r == broken).count(), 2);
    // A step alone cannot be retried: its workflow is.
    let alone = cluster
        .post(&format!("/api/v1/operations/{broken}/retry"), json!({}))
        .await;
    alone.assert_problem("not_retryable", "a step's own retry");

    // A cancel (without compensation) mid-way, then a retry that completes.
    let id = submit(
        &cluster,
        json!({"steps": [
            {"name": "quick", "type": "diag.noop",
             "compensate": {"type": "diag.noop", "payload": {}}},
            {"name": "slow", "type": "diag.sleep", "depends_on": ["quick"],
             "payload": {"seconds": 1}},
            {"name": "end", "type": "diag.noop", "depends_on": ["slow"]},
        ]}),
    )
    .await;
    loop {
        let view = cluster.get(&format!("/api/v1/workflows/{id}")).await.body;
        if step(&view, "slow")["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = cluster
        .post(
            &format!("/api/v1/workflows/{id}/cancel"),
            json!({"compensate": false}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED);
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["compensations"], json!([]), "compensate: false");
    let quick = step(&view, "quick")["operation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster
        .post(&format!("/api/v1/workflows/{id}/retry"), json!({}))
        .await;
    let view = ended(&cluster, &id).await;
    assert_eq!(view["status"], "completed", "{view:#}");
    let ran = executions(&record);
    assert_eq!(ran.iter().filter(|r| **r == quick).count(), 1);
}

#[tokio::test]
async fn invalid_workflows_are_refused_and_store_nothing() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let noop =
        |name: &str, deps: &[&str]| json!({"name": name, "type": "diag.noop", "depends_on": deps});
    let too_many: Vec<Value> = (0..1001).map(|i| noop(&format!("s{i}"), &[])).collect();
    for (workflow, code, field, detail) in [
        (
            json!({"steps": [noop("a", &[]), noop("a", &[])]}),
            "invalid_request",
            "steps[1].name",
            "",
        ),
        (
            json!({"steps": [noop("a", &["ghost"])]}),
            "invalid_request",
            "steps[0].depends_on[0]",
            "",
        ),
        (
            json!({"steps": [noop("a", &["b"]), noop("b", &["a"])]}),
            "invalid_request",
            "steps",
            "a → b → a",
        ),
        (
            json!({"steps": [noop("a", &[]), noop("b", &[]),
                {"name": "c", "type": "diag.sleep", "payload": {"seconds": "x"}}]}),
            "invalid_payload",
            "steps[2].payload.seconds",
            "",
        ),
        (
            json!({"steps": too_many}),
            "invalid_request",
            "steps",
            "at most 1000",
        ),
        (
            json!({"steps": [{"name": "a", "type": "nope.never"}]}),
            "invalid_request",
            "steps[0].type",
            "",
        ),
        (
            json!({"steps": [noop("a", &[])], "bogus": 1}),
            "invalid_request",
            "bogus",
            "",
        ),
    ] {
        let response = cluster.post("/api/v1/workflows", workflow).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:#}",
            response.body
        );
        response.assert_problem(code, field);
        let fields: Vec<&str> = response.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{field} not in {:#}",
            response.body
        );
        assert!(
            response.body["detail"].as_str().unwrap().contains(detail),
            "{:#}",
            response.body
        );
    }
    let stored: i64 = cluster
        .sqlite()
        .query_row("SELECT count(*) FROM operations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a refused workflow stored something");
    // A single operation cannot pose as a workflow.
    let response = cluster
        .post(
            "/api/v1/operations",
            json!({"type": "workflow.run", "payload": {}}),
        )
        .await;
    response.assert_problem("unknown_operation_type", "workflow.run as an operation");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_workflow() {
    let mut cluster = Cluster::new();
    cluster.start_api();
    let workflow = json!({"steps": [{"name": "a", "type": "diag.noop"}]});
    let first = cluster
        .http
        .post(format!("{}/api/v1/workflows", cluster.api_url))
        .bearer_auth(&cluster.token)
        .header("Idempotency-Key", "deploy-42")
        .json(&workflow)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = cluster
        .http
        .post(format!("{}/api/v1/workflows", cluster.api_url))
        .bearer_auth(&cluster.token)
        .header("Idempotency-Key", "deploy-42")
        .json(&workflow)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["steps"].as_array().unwrap().len(), 1);
    let stored: i64 = cluster
        .sqlite()
        .query_row("SELECT count(*) FROM operations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 2, "one workflow and its one step");
}

/// The invariants of a workflow that ended: each step started only after
/// every step it depends on completed; a completed workflow completed every
/// step; a failed one compensated every completed step that has a
/// compensation (its compensation completed).
fn check_ended(view: &Value) {
    let steps = view["steps"].as_array().unwrap();
    let by_name: HashMap<&str, &Value> = steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    for step in steps {
        if step["started_at"].is_null() {
            continue;
        }
        for dependency in step["depends_on"].as_array().unwrap() {
            let dep = by_name[dependency.as_str().unwrap()];
            assert_eq!(dep["status"], "completed", "{view:#}");
            assert!(
                time(&step["started_at"]) >= time(&dep["finished_at"]),
                "{} started before {} finished: {view:#}",
                step["name"],
                dep["name"]
            );
        }
    }
    match view["status"].as_str().unwrap() {
        "completed" => assert!(steps.iter().all(|s| s["status"] == "completed")),
        "failed" => {
            for step in steps {
                if step["status"] == "completed" && !step["compensate"].is_null() {
                    let undone: Vec<&Value> = view["compensations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|c| c["compensates"] == step["name"])
                        .collect();
                    assert_eq!(undone.len(), 1, "{view:#}");
                    assert_eq!(undone[0]["status"], "completed", "{view:#}");
                }
            }
        }
        other => panic!("unexpected end {other}: {view:#}"),
    }
}

#[tokio::test]
async fn two_hundred_workflows_end_correctly_while_workers_are_killed_at_random_moments() {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_WORKER__LEASE_SECS", 3);
    cluster.start_api();
    cluster.start_monitor();
    cluster.start_monitor();
    let worker_env = [("OPSQUEUE_WORKER__CONCURRENCY", "8".to_owned())];
    cluster.start_worker(&worker_env);
    cluster.start_worker(&worker_env);
    let undo = json!({"type": "diag.noop", "payload": {}});
    let mut ids = Vec::new();
    for i in 0..200 {
        let fourth = if i % 5 == 0 {
            json!({"name": "s4", "type": "diag.fail", "depends_on": ["s2", "s3"],
                   "payload": {"message": "planned"}, "compensate": undo})
        } else {
            json!({"name": "s4", "type": "diag.sleep", "depends_on": ["s2", "s3"],
                   "payload": {"seconds": 0.02}, "compensate": undo})
        };
        ids.push(
            submit(
                &cluster,
                json!({"name": format!("soak-{i}"), "steps": [
                    {"name": "s1", "type": "diag.sleep", "payload": {"seconds": 0.02},
                     "compensate": undo},
                    {"name": "s2", "type": "diag.noop", "depends_on": ["s1"], "compensate": undo},
                    {"name": "s3", "type": "diag.sleep", "depends_on": ["s1"],
                     "payload": {"seconds": 0.03}},
                    fourth,
                    {"name": "s5", "type": "diag.noop", "depends_on": ["s4"]},
                ]}),
            )
            .await,
        );
    }
    // Kill -9 a worker now and then, and start a new one in its place.
    let db = cluster.sqlite();
    let active = || -> i64 {
        db.query_row(
            "SELECT count(*) FROM workflows WHERE phase <> 'ended'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut kills = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while active() > 0 && kills < 12 {
        tokio::time::sleep(Duration::from_millis(150 + 97 * (kills % 5))).await;
        let victim = cluster
            .workers
            .remove(kills as usize % cluster.workers.len());
        victim.signal(libc::SIGKILL);
        drop(victim);
        cluster.start_worker(&worker_env);
        kills += 1;
        assert!(std::time::Instant::now() < deadline);
    }
    eventually("every workflow ended", || active() == 0).await;
    let mut failed = 0;
    for id in &ids {
        let view = cluster.get(&format!("/api/v1/workflows/{id}")).await.body;
        check_ended(&view);
        failed += usize::from(view["status"] == "failed");
    }
    assert!(failed >= 40, "the planned failures failed: {failed}");
    // No release happened twice: no step waits on less than nothing, and no
    // step is pending with its dependencies all done.
    let broken: i64 = db
        .query_row(
            "SELECT count(*) FROM operations WHERE parent_id IS NOT NULL AND status = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(broken, 0);
}
