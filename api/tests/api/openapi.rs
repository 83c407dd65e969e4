//! The OpenAPI document against the server: every route it documents is
//! served (a request to it reaches a handler, never the "no route" answer),
//! and paths it does not document are not.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// A value for a path parameter that reaches the handler.
fn example(param: &str) -> &'static str {
    match param {
        "id" => "0190a4b2-7c1d-7000-8000-000000000001",
        "vmid" => "100",
        "unit" => "web.service",
        "domain" => "example.com",
        "verb" => "start",
        "name" => "web",
        _ => "x",
    }
}

fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(&rest[..open]);
        out.push_str(example(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether the answer is the catch-all for a request no route matched: a
/// `404` for a path nothing serves, a `405` for a method its path does not
/// take.
async fn unrouted(response: reqwest::Response) -> bool {
    let status = response.status();
    if status != reqwest::StatusCode::NOT_FOUND && status != reqwest::StatusCode::METHOD_NOT_ALLOWED
    {
        // Served; its body may be a stream that does not end (events).
        return false;
    }
    let body: Value = response.json().await.unwrap_or_default();
    match status {
        reqwest::StatusCode::NOT_FOUND => body["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("no route for")),
        reqwest::StatusCode::METHOD_NOT_ALLOWED => body["code"] == "method_not_allowed",
        _ => false,
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_nothing_else_is() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "only {} paths documented", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = app
                .client
                .request(method.clone(), app.url(&concrete(path)))
                .bearer_auth(&app.admin);
            if method == Method::POST || method == Method::PUT {
                request = request.json(&json!({}));
            }
            let response = request.send().await.unwrap();
            assert!(
                !unrouted(response).await,
                "{method} {path} is documented but not served"
            );
            checked += 1;
        }
    }
    assert!(checked >= paths.len());

    for (method, path) in [
        (Method::GET, "/api/v1/pm2/nothing-here"),
        (Method::PATCH, "/api/v1/systemd/units/nginx.service"),
        (Method::POST, "/api/v1/caddy/sites/example.com"),
        (Method::PUT, "/api/v1/cloudpanel/sites"),
        (Method::DELETE, "/api/v1/operations"),
    ] {
        assert!(
            paths
                .get(path)
                .is_none_or(|item| item.get(method.as_str().to_lowercase()).is_none()),
            "{method} {path} is documented"
        );
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        assert!(unrouted(response).await, "{method} {path} is served");
    }
}

#[tokio::test]
async fn each_family_s_typed_routes_are_documented_under_its_tag() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let tags: Vec<&str> = document["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tag| tag["name"].as_str())
        .collect();
    for family in ["pm2", "systemd", "caddy", "cloudpanel", "proxmox"] {
        assert!(tags.contains(&family), "no tag {family}: {tags:?}");
    }
    let restart = &document["paths"]["/api/v1/pm2/processes/{name}/restart"]["post"];
    assert_eq!(restart["tags"], json!(["pm2"]));
    assert_eq!(restart["parameters"][0]["name"], "name");
    assert_eq!(restart["parameters"][0]["in"], "path");
    assert!(
        restart["responses"]["202"]["description"]
            .as_str()
            .unwrap()
            .contains("pm2.restart")
    );
    let logs = &document["paths"]["/api/v1/systemd/units/{unit}/logs"]["post"];
    let query: Vec<&str> = logs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(query, ["target", "lines", "since"]);
}

#[tokio::test]
async fn a_method_a_served_path_does_not_take_is_405_with_allow_as_a_problem() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("TRACE", "/api/v1/operations", "GET, POST"),
        (
            "OPTIONS",
            "/api/v1/operations/0190a4b2-7c1d-7000-8000-000000000001",
            "GET",
        ),
        ("PATCH", "/api/v1/schedules/nightly", "GET, PUT, DELETE"),
        ("TRACE", "/health", "GET"),
        ("DELETE", "/api/v1/systemd/units/web.service/start", "POST"),
    ] {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{body}");
        assert_eq!(body["status"], 405, "{body}");
    }
    let nowhere = app
        .client
        .request(
            Method::from_bytes(b"TRACE").unwrap(),
            app.url("/api/v1/nowhere"),
        )
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_refusal_actix_makes_on_its_own_is_a_problem_too() {
    let app = spawn_app().await;
    // A raw-bytes body over the limit (the guest action route reads bytes).
    let response =
        app.client
            .post(app.url(
                "/api/v1/proxmox/nodes/0190a4b2-7c1d-7000-8000-000000000001/resources/100/start",
            ))
            .bearer_auth(&app.admin)
            .header("content-type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large", "{body}");
}
