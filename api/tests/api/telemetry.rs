use opsqueue_shared::store::{Counters, counters_apply, names};
use opsqueue_shared::time::to_db;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{id_of, spawn_app};

/// The value of the one sample of `series` without labels.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample of {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_show_the_gauges_and_every_counter() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.enqueue_ok(json!({"type": "diag.noop"})).await;
    }
    let two_minutes_ago = opsqueue_shared::time::now() - chrono::Duration::seconds(120);
    app.enqueue_ok(json!({"type": "diag.noop", "run_at": to_db(two_minutes_ago)}))
        .await;
    let cancelled = app.enqueue_ok(json!({"type": "diag.noop"})).await;
    let cancel = app
        .post(
            &format!("/api/v1/operations/{}/cancel", id_of(&cancelled)),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    // What a worker records with its claims and finishes.
    let mut counters = Counters::default();
    counters.add(names::CLAIMED, "family=\"diag\"", 2.0);
    counters.observe_duration("diag", 0.2);
    counters.add(names::COMPLETED, "family=\"diag\"", 1.0);
    counters.add(names::FAILED, "family=\"diag\",code=\"boom\"", 1.0);
    app.store.write(|tx| counters_apply(tx, &counters)).unwrap();

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for line in [
        "# TYPE opsqueue_operations gauge",
        "opsqueue_operations{status=\"pending\"} 4",
        "opsqueue_operations{status=\"running\"} 0",
        "opsqueue_operations{status=\"cancelled\"} 1",
        "# TYPE opsqueue_oldest_pending_age_seconds gauge",
        "# TYPE opsqueue_workers gauge",
        "opsqueue_workers 0",
        "# TYPE opsqueue_operations_enqueued_total counter",
        "opsqueue_operations_enqueued_total{family=\"diag\"} 5",
        "# TYPE opsqueue_operations_claimed_total counter",
        "opsqueue_operations_claimed_total{family=\"diag\"} 2",
        "# TYPE opsqueue_operations_completed_total counter",
        "opsqueue_operations_completed_total{family=\"diag\"} 1",
        "# TYPE opsqueue_operations_failed_total counter",
        "opsqueue_operations_failed_total{family=\"diag\",code=\"boom\"} 1",
        "# TYPE opsqueue_operations_cancelled_total counter",
        "opsqueue_operations_cancelled_total{family=\"diag\"} 1",
        "# TYPE opsqueue_operation_duration_seconds histogram",
        "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"0.25\"} 1",
        "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"+Inf\"} 1",
        "opsqueue_operation_duration_seconds_count{family=\"diag\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"0.1\"} 1")
    );
    // The one due two minutes ago has waited that long (and less than an
    // hour more, however slow the test machine).
    let oldest = sample(&text, "opsqueue_oldest_pending_age_seconds");
    assert!(
        (120.0..3720.0).contains(&oldest),
        "oldest pending age {oldest}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &document["paths"];
    for (path, methods) in [
        ("/api/v1/operations", &["get", "post"][..]),
        ("/api/v1/operations/{id}", &["get"]),
        ("/api/v1/operations/{id}/logs", &["get"]),
        ("/api/v1/operations/{id}/cancel", &["post"]),
        ("/api/v1/operations/{id}/retry", &["post"]),
        ("/api/v1/schedules", &["get", "post"]),
        ("/api/v1/schedules/{name}", &["get", "put", "delete"]),
        ("/api/v1/workers", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/health", &["get"]),
        ("/ready", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is missing"
            );
        }
    }
    assert_eq!(
        paths["/health"]["get"]["security"],
        json!([{}]),
        "/health is open"
    );
    assert_eq!(
        document["security"],
        json!([{"bearer": []}, {"api_key": []}])
    );
    let schemes = &document["components"]["securitySchemes"];
    assert!(schemes["bearer"].is_object() && schemes["api_key"].is_object());
    assert!(document["components"]["schemas"]["Problem"].is_object());
}
