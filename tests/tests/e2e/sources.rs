//! Sources end to end (the CloudPanel design: the API's operations must not
//! be picked up by the UI's machinery, and the other way round): a worker
//! configured for `sources = ["api"]` never runs an operation tagged `ui`,
//! however long it waits at the head of the queue, while a worker serving
//! `ui` runs it.

use opsqueue_tests::Cluster;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_worker_for_api_never_runs_an_operation_tagged_ui_and_a_worker_for_ui_does() {
    let mut cluster = Cluster::new();
    let record = cluster.path("record");
    cluster.set_env("OPSQUEUE_DIAG__RECORD_PATH", record.display());
    cluster.start_api();
    let made = cluster.api_command(&[
        "keys", "create", "--name", "panel", "--scope", "write", "--source", "ui",
    ]);
    assert!(made.status.success(), "{made:?}");
    let ui_token = String::from_utf8(made.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    cluster.start_worker(&[
        ("OPSQUEUE_WORKER__SOURCES", r#"["api"]"#.to_owned()),
        ("OPSQUEUE_WORKER__ID", "api-only".to_owned()),
    ]);

    // The ui operation first: it is the oldest, so it would be claimed
    // first by any worker allowed to.
    let response = cluster
        .http
        .post(format!("{}/api/v1/operations", cluster.api_url))
        .bearer_auth(&ui_token)
        .json(&json!({"type": "diag.noop", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ui_op: serde_json::Value = response.json().await.unwrap();
    assert_eq!(ui_op["source"], "ui");
    let ui_id = ui_op["id"].as_str().unwrap().to_owned();

    let mut api_ids = Vec::new();
    for _ in 0..3 {
        let id = cluster.enqueue_kind("diag.noop", json!({})).await;
        let op = cluster.wait_terminal(&id).await;
        assert_eq!(
            (op["status"].as_str(), op["source"].as_str()),
            (Some("completed"), Some("api"))
        );
        api_ids.push(id);
    }
    let waiting = cluster.operation(&ui_id).await;
    assert_eq!(waiting["status"], "pending", "{waiting:#}");
    assert_eq!(
        waiting["attempt"], 0,
        "the api worker claimed it: {waiting:#}"
    );

    cluster.start_worker(&[
        ("OPSQUEUE_WORKER__SOURCES", r#"["ui"]"#.to_owned()),
        ("OPSQUEUE_WORKER__ID", "ui-only".to_owned()),
    ]);
    let done = cluster.wait_terminal(&ui_id).await;
    assert_eq!(done["status"], "completed", "{done:#}");

    let runs: Vec<(String, String)> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts[0].to_owned(), parts[2].to_owned())
        })
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for (id, worker) in &runs {
        let expected = if *id == ui_id { "ui-only" } else { "api-only" };
        assert_eq!(worker, expected, "{id} ran on {worker}: {runs:?}");
    }
    assert!(api_ids.iter().all(|id| runs.iter().any(|(r, _)| r == id)));
}
