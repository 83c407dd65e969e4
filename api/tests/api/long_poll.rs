use std::time::Duration;

use opsqueue_shared::store::Finish;
use opsqueue_shared::wake::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, id_of, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_the_operation_ends() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let claimed = app.claim("test-worker");

    // The wait (60 s) is far longer than the test's patience, so a
    // `completed` answer within it can only come from the end being noticed.
    let waiting = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/v1/operations/{id}?wait=60")),
            app.read.clone(),
        );
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap() })
    };
    // Give the request a moment to start waiting; the test passes either way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.finish(
        &claimed[0],
        Finish::Completed {
            result: json!({"changed": false}),
        },
    );
    app.wake(Role::Api);

    let response = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the long-poll answered before the wait ended")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let operation: Value = response.json().await.unwrap();
    assert_eq!(operation["status"], "completed");
    assert_eq!(operation["result"], json!({"changed": false}));
}

#[tokio::test]
async fn a_long_poll_returns_the_pending_operation_when_the_wait_ends() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let response = tokio::time::timeout(
        PATIENCE,
        app.get(&format!("/api/v1/operations/{id}?wait=1")),
    )
    .await
    .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "pending");
}

#[tokio::test]
async fn a_wait_longer_than_the_cap_is_cut_to_the_cap() {
    let app = spawn_app_with(|config| config.api.max_wait_secs = 1).await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let response = tokio::time::timeout(
        PATIENCE,
        app.get(&format!("/api/v1/operations/{id}?wait=3600")),
    )
    .await
    .expect("the cap ended the wait long before an hour");
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "pending");
}

#[tokio::test]
async fn a_long_poll_on_a_terminal_operation_answers_at_once() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    app.post(&format!("/api/v1/operations/{id}/cancel"), &json!({}))
        .await;
    let response = tokio::time::timeout(
        PATIENCE,
        app.get(&format!("/api/v1/operations/{id}?wait=60")),
    )
    .await
    .expect("answered");
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
}
