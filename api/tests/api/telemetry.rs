use opsqueue_shared::store::{Counters, counters_apply, names};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn metrics_show_the_gauges_and_every_counter() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.enqueue_ok(json!({"type": "diag.noop"})).await;
    }
    let mut counters = Counters::default();
    counters.observe_duration("diag", 0.2);
    counters.add(names::COMPLETED, "family=\"diag\"", 1.0);
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
        "opsqueue_operations{status=\"pending\"} 3",
        "opsqueue_operations{status=\"running\"} 0",
        "# TYPE opsqueue_oldest_pending_age_seconds gauge",
        "# TYPE opsqueue_workers gauge",
        "opsqueue_workers 0",
        "# TYPE opsqueue_operations_enqueued_total counter",
        "opsqueue_operations_enqueued_total{family=\"diag\"} 3",
        "opsqueue_operations_completed_total{family=\"diag\"} 1",
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
