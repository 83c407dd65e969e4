use opsqueue_shared::store::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, make_key, spawn_app};

#[tokio::test]
async fn a_schedule_is_created_read_listed_replaced_and_deleted() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/v1/schedules",
            &json!({"name": "nightly-noop", "cron": "0 3 * * *", "type": "diag.noop", "payload": {"key": "n"}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()["location"],
        "/api/v1/schedules/nightly-noop"
    );
    let schedule: Value = created.json().await.unwrap();
    assert_eq!(schedule["type"], "diag.noop");
    assert_eq!(schedule["payload"], json!({"key": "n"}));
    assert_eq!(schedule["target"], "local");
    assert_eq!(schedule["priority"], 5);
    assert_eq!(schedule["enabled"], true);
    assert_eq!(
        schedule["last_fire_at"], schedule["created_at"],
        "a new schedule waits for its next fire"
    );

    let read: Value = app
        .get("/api/v1/schedules/nightly-noop")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, schedule);
    let list: Value = app.get("/api/v1/schedules").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let duplicate = app
        .post(
            "/api/v1/schedules",
            &json!({"name": "nightly-noop", "cron": "* * * * *", "type": "diag.noop"}),
        )
        .await;
    assert_problem(duplicate, StatusCode::CONFLICT, "schedule_exists").await;

    let replaced = app
        .client
        .put(app.url("/api/v1/schedules/nightly-noop"))
        .bearer_auth(&app.write)
        .json(&json!({"cron": "*/10 * * * * *", "type": "diag.sleep", "payload": {"seconds": 1}, "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["cron"], "*/10 * * * * *");
    assert_eq!(replaced["type"], "diag.sleep");
    assert_eq!(replaced["enabled"], false);
    assert_eq!(replaced["created_at"], schedule["created_at"]);
    assert_eq!(replaced["last_fire_at"], schedule["last_fire_at"]);

    let delete = || {
        app.client
            .delete(app.url("/api/v1/schedules/nightly-noop"))
            .bearer_auth(&app.write)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_problem(delete().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        app.get("/api/v1/schedules/nightly-noop").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn invalid_schedules_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "a b", "cron": "* * * * *", "type": "diag.noop"}),
            "invalid_request",
        ),
        (
            json!({"cron": "* * * * *", "type": "diag.noop"}),
            "invalid_request",
        ),
        (
            json!({"name": "n", "cron": "61 * * * *", "type": "diag.noop"}),
            "invalid_request",
        ),
        (
            json!({"name": "n", "cron": "every day", "type": "diag.noop"}),
            "invalid_request",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "type": "nope.never"}),
            "unknown_operation_type",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "type": "diag.sleep", "payload": {}}),
            "invalid_payload",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "type": "diag.noop", "priority": 12}),
            "invalid_request",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "type": "diag.noop", "target": "-x"}),
            "invalid_request",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "type": "diag.noop", "extra": 1}),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let response = app.post("/api/v1/schedules", &body).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let list: Value = app.get("/api/v1/schedules").await.json().await.unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());

    let missing = app
        .client
        .put(app.url("/api/v1/schedules/absent"))
        .bearer_auth(&app.write)
        .json(&json!({"cron": "* * * * *", "type": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_key_bound_to_a_source_may_not_write_schedules() {
    let app = spawn_app().await;
    let (_, ui) = make_key(&app.store, "ui", &[Scope::Write], Some("ui"));
    let response = app
        .post_as(
            "/api/v1/schedules",
            &ui,
            &json!({"name": "n", "cron": "* * * * *", "type": "diag.noop"}),
        )
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "source_not_allowed").await;
    let read_key = app
        .post_as(
            "/api/v1/schedules",
            &app.read,
            &json!({"name": "n", "cron": "* * * * *", "type": "diag.noop"}),
        )
        .await;
    assert_problem(read_key, StatusCode::FORBIDDEN, "forbidden").await;
}
