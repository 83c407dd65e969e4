//! `run --follow`, `--output json` and the `ops` commands against the real
//! API and worker.

use serde_json::{Value, json};

use crate::helpers::{client_only, spawn_app};

#[tokio::test]
async fn follow_prints_the_log_lines_of_a_child_sleep_in_order_and_exits_0() {
    let app = spawn_app();
    let run = app.run(&["run", "diag.sleep", "seconds:=2", "child:=true", "--follow"]);
    run.expect_code(0);
    let id = run.id();
    let logged: Vec<String> = app
        .cluster
        .logs(&id)
        .await
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        logged.iter().any(|l| l.contains("sleep 2")),
        "the runner logs the child: {logged:?}"
    );
    // Every line the API holds, each once, in order, after the id.
    let printed: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(printed.len(), logged.len(), "{run:#?}\nlogged: {logged:?}");
    for (shown, line) in printed.iter().zip(&logged) {
        assert!(shown.ends_with(line.as_str()), "{shown:?} is not {line:?}");
    }
    assert!(run.stderr.contains(&format!("{id} completed")), "{run:#?}");
}

#[tokio::test]
async fn output_json_round_trips_the_apis_json() {
    let app = spawn_app();
    let run = app.run(&[
        "run",
        "diag.sleep",
        "seconds:=0.1",
        "child:=true",
        "-o",
        "json",
    ]);
    run.expect_code(0);
    let accepted = run.json();
    let id = accepted["id"]
        .as_str()
        .expect("the operation's id")
        .to_owned();
    assert_eq!(accepted["type"], "diag.sleep");
    let done = app.cluster.wait_terminal(&id).await;

    let got = app.run(&["ops", "get", &id, "-o", "json"]);
    got.expect_code(0);
    assert_eq!(got.json(), done);

    let waited = app.run(&["run", "diag.noop", "--wait", "-o", "json"]);
    waited.expect_code(0);
    let waited = waited.json();
    assert_eq!(waited["status"], "completed");
    assert_eq!(
        waited,
        app.cluster.operation(waited["id"].as_str().unwrap()).await
    );

    let listed = app.run(&["ops", "ls", "--limit", "10", "-o", "json"]);
    listed.expect_code(0);
    let page = app.cluster.get("/api/v1/operations?limit=10").await.body;
    assert_eq!(listed.json(), page);

    let logs = app.run(&["ops", "logs", &id, "-o", "json"]);
    logs.expect_code(0);
    let api_logs = app
        .cluster
        .get(&format!("/api/v1/operations/{id}/logs?after=0&limit=10000"))
        .await
        .body;
    assert_eq!(logs.json(), api_logs);

    let refused = app.run(&[
        "ops",
        "get",
        "0190a000-0000-7000-8000-000000000000",
        "-o",
        "json",
    ]);
    refused.expect_code(4);
    assert_eq!(
        refused.json()["code"],
        "not_found",
        "the API's problem, as is"
    );
}

#[tokio::test]
async fn ops_ls_filters_and_retry_runs_a_failed_operation_again() {
    let app = spawn_app();
    let failed = app.run(&["run", "diag.fail", "message=boom", "--wait"]);
    failed.expect_code(1);
    let failed_id = failed.id();
    let ok = app.run(&["run", "diag.noop", "--wait"]);
    ok.expect_code(0);
    let ok_id = ok.id();

    let all = app.run(&["ops", "ls"]);
    all.expect_code(0);
    let header = all.stdout.lines().next().unwrap();
    for column in ["ID", "TYPE", "STATUS", "TARGET", "AGE"] {
        assert!(header.contains(column), "{header:?}");
    }
    assert!(
        all.stdout.contains(&failed_id) && all.stdout.contains(&ok_id),
        "{all:#?}"
    );

    let only_failed = app.run(&["ops", "ls", "--status", "failed", "--since", "1h"]);
    only_failed.expect_code(0);
    assert!(only_failed.stdout.contains(&failed_id), "{only_failed:#?}");
    assert!(!only_failed.stdout.contains(&ok_id), "{only_failed:#?}");

    let one = app.run(&["ops", "ls", "--limit", "1", "-o", "json"]);
    assert_eq!(one.json()["items"].as_array().unwrap().len(), 1);

    let retried = app.run(&["ops", "retry", &failed_id, "--wait"]);
    retried.expect_code(1);
    assert_eq!(retried.id(), failed_id);
    let op = app.cluster.operation(&failed_id).await;
    assert_eq!(op["status"], "failed");
    assert!(op["attempt"].as_i64().unwrap() >= 2, "{op:#}");

    let not_retryable = app.run(&["ops", "retry", &ok_id]);
    not_retryable.expect_code(4);
    assert!(
        not_retryable.stderr.contains("409 not_retryable"),
        "{not_retryable:#?}"
    );

    let shown = app.run(&["ops", "get", &failed_id]);
    shown.expect_code(0);
    assert!(shown.stdout.contains("diag_failure: boom"), "{shown:#?}");
}

#[tokio::test]
async fn ops_logs_and_wait_take_ids_of_operations_fired_elsewhere() {
    let app = spawn_app();
    let a = app
        .cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 0.5, "child": true}))
        .await;
    let b = app.cluster.enqueue_kind("diag.noop", json!({})).await;
    let waited = app.run(&["ops", "wait", &a, &b]);
    waited.expect_code(0);
    assert!(
        waited.stderr.contains(&format!("{a} completed")),
        "{waited:#?}"
    );
    assert!(
        waited.stderr.contains(&format!("{b} completed")),
        "{waited:#?}"
    );

    let logs = app.run(&["ops", "logs", &a]);
    logs.expect_code(0);
    let lines: Vec<Value> = app.cluster.logs(&a).await;
    assert_eq!(logs.stdout.lines().count(), lines.len(), "{logs:#?}");

    let followed = app.run(&["ops", "logs", &a, "--follow"]);
    followed.expect_code(0);
    assert_eq!(followed.stdout, logs.stdout);

    let fail = app
        .cluster
        .enqueue_kind("diag.fail", json!({"message": "no"}))
        .await;
    let worst = app.run(&["ops", "wait", &b, &fail]);
    worst.expect_code(1);
}

#[test]
fn targets_ls_shows_the_registry_and_schedules_ls_the_schedules() {
    let app = spawn_app();
    let deadline = std::time::Instant::now() + opsqueue_tests::DEADLINE;
    let targets = loop {
        let run = app.run(&["targets", "ls"]);
        run.expect_code(0);
        if run.stdout.contains("local") || std::time::Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(targets.stdout.starts_with("TARGET"), "{targets:#?}");
    assert!(targets.stdout.contains("local"), "{targets:#?}");
    assert!(targets.stdout.contains("diag"), "{targets:#?}");
    assert!(targets.stdout.contains("online"), "{targets:#?}");

    let schedules = app.run(&["schedules", "ls", "-o", "json"]);
    schedules.expect_code(0);
    assert!(schedules.json()["items"].is_array(), "{schedules:#?}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let app = client_only();
    for shell in ["bash", "zsh", "fish"] {
        let run = app.run(&["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout.contains("opsqueue"), "{shell}: {run:#?}");
        assert!(
            run.stdout.contains("retry"),
            "{shell}: subcommands are completed"
        );
    }
}

#[test]
fn the_same_idempotency_key_fires_once_and_says_it_replayed() {
    let app = crate::helpers::spawn_api_only();
    let args = ["run", "diag.noop", "--idempotency-key", "deploy-42"];
    let first = app.run(&args);
    first.expect_code(0);
    assert!(!first.stderr.contains("replayed"), "{first:#?}");
    let again = app.run(&args);
    again.expect_code(0);
    assert_eq!(again.id(), first.id());
    assert!(again.stderr.contains("(replayed"), "{again:#?}");

    let other = app.run(&[
        "run",
        "diag.noop",
        "key=x",
        "--idempotency-key",
        "deploy-42",
    ]);
    other.expect_code(4);
    assert!(
        other.stderr.contains("idempotency_key_reused"),
        "{other:#?}"
    );
}
