use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, id_of, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_accepted_operation_answers_202_with_location_and_retry_after_and_is_stored() {
    let app = spawn_app().await;
    let response = app
        .enqueue(
            json!({"type": "diag.sleep", "payload": {"seconds": 1, "key": "k1"}, "priority": 2}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.headers().get("idempotent-replayed").is_none());
    let operation: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/operations/{}", id_of(&operation))
    );
    assert_eq!(operation["status"], "pending");
    assert_eq!(operation["type"], "diag.sleep");
    assert_eq!(operation["source"], "api");
    assert_eq!(operation["target"], "local");
    assert_eq!(operation["resource"], "diag:k1");
    assert_eq!(operation["priority"], 2);

    assert_eq!(app.count_operations(), 1);
    let mut stored = app.operation(&id_of(&operation)).await;
    // A read also says whether anything serves the target (no worker here).
    assert_eq!(stored["target_status"], "offline");
    stored.as_object_mut().unwrap().remove("target_status");
    assert_eq!(stored, operation);
    let read = app.get(&location).await;
    assert_eq!(read.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_replay_with_the_same_key_and_body_returns_the_first_operation() {
    let app = spawn_app().await;
    let body = json!({"type": "diag.noop", "idempotency_key": "deploy-42"});
    let first = app.enqueue_ok(body.clone()).await;
    let replay = app.enqueue(body).await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(id_of(&replayed), id_of(&first));

    // The same key in the header is the same request.
    let by_header = app
        .client
        .post(app.url("/api/v1/operations"))
        .bearer_auth(&app.write)
        .header("Idempotency-Key", "\"deploy-42\"")
        .json(&json!({"type": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), StatusCode::ACCEPTED);
    assert_eq!(by_header.headers()["idempotent-replayed"], "true");
    assert_eq!(id_of(&by_header.json().await.unwrap()), id_of(&first));
    assert_eq!(app.count_operations(), 1);
}

#[tokio::test]
async fn a_bare_token_idempotency_header_is_accepted() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(app.url("/api/v1/operations"))
            .bearer_auth(&app.write)
            .header("Idempotency-Key", "bare-token-1")
            .json(&json!({"type": "diag.noop"}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["idempotency_key"], "bare-token-1");
    let again = send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count_operations(), 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused_with_422() {
    let app = spawn_app().await;
    app.enqueue_ok(json!({"type": "diag.noop", "idempotency_key": "k"}))
        .await;
    let different = app
        .enqueue(json!({"type": "diag.sleep", "payload": {"seconds": 1}, "idempotency_key": "k"}))
        .await;
    assert_problem(
        different,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.count_operations(), 1);
}

#[tokio::test]
async fn a_header_key_that_differs_from_the_field_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/operations"))
        .bearer_auth(&app.write)
        .header("Idempotency-Key", "\"one\"")
        .json(&json!({"type": "diag.noop", "idempotency_key": "two"}))
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "idempotency_key_mismatch",
    )
    .await;
    assert_eq!(app.count_operations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_duplicates_create_exactly_one_row() {
    let app = spawn_app().await;
    let body = json!({"type": "diag.noop", "idempotency_key": "once"});
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, token, body) = (
                app.client.clone(),
                app.url("/api/v1/operations"),
                app.write.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut replays = 0;
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        if response.headers().get("idempotent-replayed").is_some() {
            replays += 1;
        }
        ids.insert(id_of(&response.json().await.unwrap()));
    }
    assert_eq!(ids.len(), 1, "every answer names the same operation");
    assert_eq!(replays, 49);
    assert_eq!(app.count_operations(), 1);
}

#[tokio::test]
async fn refused_requests_are_problems_and_store_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"type": "nope.never"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_operation_type",
        ),
        (
            json!({"type": "diag.sleep", "payload": {"seconds": "long"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            json!({"type": "diag.noop", "payload": {"key": "a;rm -rf /"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            json!({"type": "diag.noop", "priority": "high"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"payload": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "bogus": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "priority": 10}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "timeout_secs": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "max_attempts": 1000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "target": "-rf"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "source": "a b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "run_at": "tomorrow"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "idempotency_key": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"type": "diag.noop", "idempotency_key": "k".repeat(256)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let problem = assert_problem(app.enqueue(body.clone()).await, status, code).await;
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{body}: {problem}"
        );
    }
    let bad_label = assert_problem(
        app.enqueue(json!({"type": "diag.noop", "target": "../etc"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(bad_label["errors"][0]["field"], "target");

    let send_raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/operations"))
            .bearer_auth(&app.write)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        send_raw("{\"type\": \"diag.noop\",", "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    assert_problem(
        send_raw("", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    assert_problem(
        send_raw("{\"type\": \"diag.noop\"}", "text/plain")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.count_operations(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_stores_nothing() {
    let app = spawn_app_with(|config| config.api.body_limit_bytes = 1024).await;
    let huge = json!({"type": "diag.fail", "payload": {"message": "x".repeat(2048)}});
    assert_problem(
        app.enqueue(huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(app.count_operations(), 0);
    app.enqueue_ok(json!({"type": "diag.noop"})).await;
}

#[tokio::test]
async fn a_key_bound_to_a_source_stamps_it_and_may_not_name_another() {
    let app = spawn_app().await;
    let (_, ui) = crate::helpers::make_key(
        &app.store,
        "ui",
        &[opsqueue_shared::store::Scope::Write],
        Some("ui"),
    );
    let stamped: Value = app
        .post_as("/api/v1/operations", &ui, &json!({"type": "diag.noop"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stamped["source"], "ui");
    let other = app
        .post_as(
            "/api/v1/operations",
            &ui,
            &json!({"type": "diag.noop", "source": "cron"}),
        )
        .await;
    assert_problem(other, StatusCode::FORBIDDEN, "source_not_allowed").await;
    let admin_may: Value = app
        .post_as(
            "/api/v1/operations",
            &app.admin,
            &json!({"type": "diag.noop", "source": "cli"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin_may["source"], "cli");
    assert_eq!(app.count_operations(), 2);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_source() {
    let app = spawn_app().await;
    let first = app
        .enqueue_ok(json!({"type": "diag.noop", "idempotency_key": "k", "source": "ui"}))
        .await;
    let second = app
        .enqueue_ok(json!({"type": "diag.noop", "idempotency_key": "k", "source": "cli"}))
        .await;
    assert_ne!(id_of(&first), id_of(&second));
    assert_eq!(app.count_operations(), 2);
}
