use opsqueue_shared::process::ProcessIdentity;
use opsqueue_shared::store::{NewWorker, operation_log_note, worker_heartbeat, worker_register};
use opsqueue_shared::wake::{Role, WakeListener};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, assert_problem, id_of, spawn_app};

/// Every operation the list returns for `query`, page by page.
async fn list_all(app: &TestApp, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/operations?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        all.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn the_list_filters_and_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut noops = Vec::new();
    for _ in 0..5 {
        noops.push(id_of(
            &app.enqueue_ok(json!({"type": "diag.noop", "payload": {"key": "a"}}))
                .await,
        ));
    }
    for _ in 0..3 {
        app.enqueue_ok(json!({"type": "diag.sleep", "payload": {"seconds": 1}, "target": "web-2"}))
            .await;
    }
    let cancelled = app
        .enqueue_ok(json!({"type": "diag.noop", "source": "ui"}))
        .await;
    app.post(
        &format!("/api/v1/operations/{}/cancel", id_of(&cancelled)),
        &json!({}),
    )
    .await;

    let everything = list_all(&app, "", 2).await;
    assert_eq!(everything.len(), 9);
    let ids: Vec<String> = everything.iter().map(id_of).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");

    let by_type = list_all(&app, "type=diag.noop&resource=diag:a", 3).await;
    let mut expected = noops.clone();
    expected.reverse();
    assert_eq!(by_type.iter().map(id_of).collect::<Vec<_>>(), expected);
    assert_eq!(list_all(&app, "target=web-2", 50).await.len(), 3);
    assert_eq!(list_all(&app, "source=ui", 50).await.len(), 1);
    assert_eq!(list_all(&app, "status=cancelled", 50).await.len(), 1);
    assert_eq!(list_all(&app, "status=pending", 50).await.len(), 8);

    let third_created = app.operation(&noops[2]).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = list_all(
        &app,
        &format!("type=diag.noop&resource=diag:a&since={third_created}"),
        50,
    )
    .await;
    assert_eq!(since.len(), 3);
    let until = list_all(
        &app,
        &format!("type=diag.noop&resource=diag:a&until={third_created}"),
        50,
    )
    .await;
    assert_eq!(until.len(), 2);

    let page: Value = app.get("/api/v1/operations").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 9);
    assert!(page["next_cursor"].is_null());
}

#[tokio::test]
async fn bad_list_queries_are_400s() {
    let app = spawn_app().await;
    for query in [
        "status=done",
        "cursor=nope",
        "limit=0",
        "limit=-1",
        "since=yesterday",
        "bogus=1",
    ] {
        let response = app.get(&format!("/api/v1/operations?{query}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn an_unknown_id_is_404_and_a_malformed_one_400() {
    let app = spawn_app().await;
    let unknown = "01890000-0000-7000-8000-000000000000";
    for path in [
        format!("/api/v1/operations/{unknown}"),
        format!("/api/v1/operations/{unknown}/logs"),
    ] {
        assert_problem(app.get(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    for action in ["cancel", "retry"] {
        let response = app
            .post(
                &format!("/api/v1/operations/{unknown}/{action}"),
                &json!({}),
            )
            .await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_problem(
        app.get("/api/v1/operations/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    )
    .await;
    assert_problem(
        app.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn logs_are_read_after_a_sequence_number() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let parsed = id.parse().unwrap();
    app.store
        .write(|tx| {
            for n in 1..=5 {
                operation_log_note(
                    tx,
                    parsed,
                    &format!("line {n}"),
                    opsqueue_shared::time::now(),
                    1 << 20,
                )?;
            }
            Ok(())
        })
        .unwrap();
    let first: Value = app
        .get(&format!("/api/v1/operations/{id}/logs?limit=2"))
        .await
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 1", "line 2"]);
    let after = first["next_after"].as_i64().unwrap();
    let rest: Value = app
        .get(&format!("/api/v1/operations/{id}/logs?after={after}"))
        .await
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 3", "line 4", "line 5"]);
    let end = rest["next_after"].as_i64().unwrap();
    let nothing: Value = app
        .get(&format!("/api/v1/operations/{id}/logs?after={end}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(nothing["items"].as_array().unwrap().is_empty());
    assert_eq!(
        nothing["next_after"], end,
        "an empty page keeps the position"
    );
}

#[tokio::test]
async fn cancelling_a_pending_operation_cancels_it_at_once() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let response = app
        .post(&format!("/api/v1/operations/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let operation: Value = response.json().await.unwrap();
    assert_eq!(operation["status"], "cancelled");
    assert_eq!(operation["error"]["code"], "cancelled");
    assert_eq!(app.operation(&id).await["status"], "cancelled");

    let again = app
        .post(&format!("/api/v1/operations/{id}/cancel"), &json!({}))
        .await;
    assert_problem(again, StatusCode::CONFLICT, "not_cancellable").await;
}

#[tokio::test]
async fn cancelling_a_running_operation_asks_its_worker_and_wakes_workers() {
    let app = spawn_app().await;
    let workers = WakeListener::bind(&app.wake_dir(), Role::Worker).unwrap();
    let id = id_of(
        &app.enqueue_ok(json!({"type": "diag.sleep", "payload": {"seconds": 60}}))
            .await,
    );
    // The enqueue itself woke the workers; take that wake-up first.
    tokio::time::timeout(PATIENCE, workers.wait())
        .await
        .expect("the enqueue woke workers");
    let claimed = app.claim("test-worker");
    assert_eq!(claimed.len(), 1);

    let response = app
        .post(&format!("/api/v1/operations/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let operation: Value = response.json().await.unwrap();
    assert_eq!(operation["status"], "running");
    assert!(operation["cancel_requested_at"].is_string());
    tokio::time::timeout(PATIENCE, workers.wait())
        .await
        .expect("the cancel request woke workers");

    let logs: Value = app
        .get(&format!("/api/v1/operations/{id}/logs"))
        .await
        .json()
        .await
        .unwrap();
    let noted = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["line"].as_str().unwrap().contains("cancel requested"));
    assert!(noted, "{logs}");
}

#[tokio::test]
async fn a_failed_operation_can_be_retried_and_a_pending_one_cannot() {
    let app = spawn_app().await;
    let workers = WakeListener::bind(&app.wake_dir(), Role::Worker).unwrap();
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    tokio::time::timeout(PATIENCE, workers.wait())
        .await
        .expect("the enqueue woke workers");
    let not_yet = app
        .post(&format!("/api/v1/operations/{id}/retry"), &json!({}))
        .await;
    assert_problem(not_yet, StatusCode::CONFLICT, "not_retryable").await;

    let claimed = app.claim("test-worker");
    app.fail(&claimed[0]);
    assert_eq!(app.operation(&id).await["status"], "failed");

    let response = app
        .post(&format!("/api/v1/operations/{id}/retry"), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let operation: Value = response.json().await.unwrap();
    assert_eq!(operation["status"], "pending");
    assert!(operation["finished_at"].is_null());
    tokio::time::timeout(PATIENCE, workers.wait())
        .await
        .expect("the retry woke workers");
    assert_eq!(app.claim("test-worker").len(), 1, "claimable again");
}

/// A worker as it registers itself (the process is this test's).
fn test_worker(id: &str) -> NewWorker {
    NewWorker {
        id: id.into(),
        identity: ProcessIdentity {
            host: "test-host".into(),
            pid: std::process::id(),
            start_ticks: 1,
            boot_id: "boot".into(),
        },
        version: "test".into(),
        drivers: vec!["diag".into()],
        targets: vec!["local".into()],
        sources: None,
        concurrency: 4,
        lease_secs: 30,
        agent_key_id: None,
    }
}

#[tokio::test]
async fn running_workers_are_listed_and_make_the_api_ready() {
    let app = spawn_app().await;
    let not_ready = app.get("/ready").await;
    let problem = assert_problem(not_ready, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("no worker"),
        "{problem}"
    );

    app.store
        .write(|tx| worker_register(tx, &test_worker("w-1"), None, opsqueue_shared::time::now()))
        .unwrap();

    let listed: Value = app.get("/api/v1/workers").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], "w-1");
    assert_eq!(listed["items"][0]["drivers"], json!(["diag"]));
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["fresh_workers"], 1);
}

#[tokio::test]
async fn a_stale_worker_heartbeat_makes_the_api_not_ready_until_the_worker_beats_again() {
    let app = spawn_app().await;
    let ten_minutes_ago = opsqueue_shared::time::now() - chrono::Duration::minutes(10);
    app.store
        .write(|tx| worker_register(tx, &test_worker("w-stale"), None, ten_minutes_ago))
        .unwrap();

    let stale = app.get("/ready").await;
    let problem = assert_problem(stale, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    let within = format!(
        "no worker heartbeat within {} s",
        app.config.api.ready_heartbeat_secs
    );
    assert!(
        problem["detail"].as_str().unwrap().contains(&within),
        "{problem}"
    );

    app.store
        .write(|tx| worker_heartbeat(tx, "w-stale", None, opsqueue_shared::time::now()))
        .unwrap();
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap()["fresh_workers"], 1);
}
