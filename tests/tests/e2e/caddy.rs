//! The caddy family end to end: the real API, worker and monitor as
//! processes, driven over the typed routes, against a real Caddy (Debian's
//! package, `opsqueue_tests::caddy_server`) and a tiny upstream; every
//! claim about a site is a request through Caddy with the site's `Host`.

use std::path::Path;
use std::time::{Duration, Instant};

use opsqueue_tests::caddy_server::{CaddyServer, NO_SITE, Upstream};
use opsqueue_tests::{Cluster, DEADLINE, completed};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn caddy() -> CaddyServer {
    CaddyServer::start(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn cluster_for(caddy: &CaddyServer, refresh_cron: &str) -> Cluster {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_CADDY__ENABLED", "true");
    cluster.set_env("OPSQUEUE_CADDY__ADMIN_URL", caddy.admin_url());
    cluster.set_env("OPSQUEUE_CADDY__REFRESH_CRON", refresh_cron);
    cluster
}

#[tokio::test]
async fn a_site_added_over_http_proxies_through_caddy_and_stops_once_removed() {
    let caddy = caddy();
    let upstream = Upstream::start("hello from pb-demo").await;
    // A refresh that never fires during the test: only the routes act.
    let mut cluster = cluster_for(&caddy, "0 0 0 1 1 *");
    cluster.start_api();
    cluster.start_worker(&[]);

    let site = json!({"domain": "pb-demo.example.test", "upstream": upstream.address()});
    let op = cluster
        .accepted(Method::POST, "/api/v1/caddy/sites", Some(site.clone()))
        .await;
    assert_eq!(op["resource"], "caddy:site:pb-demo.example.test");
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(
        caddy.get("pb-demo.example.test").await,
        (200, "hello from pb-demo".into())
    );
    let op = cluster
        .accepted(Method::POST, "/api/v1/caddy/sites", Some(site))
        .await;
    assert_eq!(completed(&op)["changed"], false);

    let read = cluster
        .get("/api/v1/caddy/sites/pb-demo.example.test")
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
    assert_eq!(read.body["upstreams"], json!([upstream.address()]));
    assert_eq!(read.body["opsqueue"], true);
    assert_eq!(read.body["managed"]["spec"]["upstream"], upstream.address());
    assert!(read.body["observed_at"].is_string());

    let op = cluster
        .accepted(
            Method::DELETE,
            "/api/v1/caddy/sites/pb-demo.example.test",
            None,
        )
        .await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(
        caddy.get("pb-demo.example.test").await,
        (404, NO_SITE.into())
    );
    let gone = cluster
        .get("/api/v1/caddy/sites/pb-demo.example.test")
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:#}", gone.body);
    gone.assert_problem("not_found", "a removed site");
}

#[tokio::test]
async fn bad_sites_are_refused_before_anything_is_stored() {
    let caddy = caddy();
    let mut cluster = cluster_for(&caddy, "0 0 0 1 1 *");
    cluster.start_api();
    for bad in [
        json!({"domain": "a.example.test", "upstream": "127.0.0.1:notaport"}),
        json!({"domain": "a.example.test", "upstream": "127.0.0.1:70000"}),
        json!({"domain": "a.example.test", "upstream": "203.0.113.5:80"}),
        json!({"domain": "a;b.example.test", "upstream": "127.0.0.1:8080"}),
        json!({"domain": "-a.example.test", "upstream": "127.0.0.1:8080"}),
        json!({"domain": "a.example.test"}),
    ] {
        let response = cluster.post("/api/v1/caddy/sites", bad.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {:#}",
            response.body
        );
        response.assert_problem("invalid_payload", &bad.to_string());
    }
    let response = cluster
        .request(Method::DELETE, "/api/v1/caddy/sites/..%2Fetc", None)
        .await;
    assert_eq!(
        response.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:#}",
        response.body
    );
    response.assert_problem("invalid_request", "DELETE a site named ../etc");
    let stored = cluster.get("/api/v1/operations").await;
    assert_eq!(stored.body["items"], json!([]), "something was stored");

    let document = cluster.get("/api/v1/openapi.json").await.body;
    for path in [
        "/api/v1/caddy/sites",
        "/api/v1/caddy/sites/{domain}",
        "/api/v1/caddy/reload",
        "/api/v1/caddy/validate",
        "/api/v1/systemd/units",
        "/api/v1/systemd/units/{unit}/{verb}",
        "/api/v1/systemd/units/{unit}/logs",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    let mut ids: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds must be unique");
}

#[tokio::test]
async fn managed_sites_come_back_after_a_caddy_restart_through_the_monitor_s_reload() {
    let mut caddy = caddy();
    let upstream = Upstream::start("still here").await;
    let mut cluster = cluster_for(&caddy, "*/1 * * * * *");
    cluster.start_all();

    let site = json!({"domain": "keep.example.test", "upstream": upstream.address()});
    let op = cluster
        .accepted(Method::POST, "/api/v1/caddy/sites", Some(site))
        .await;
    completed(&op);
    assert_eq!(
        caddy.get("keep.example.test").await,
        (200, "still here".into())
    );

    caddy.restart();
    // The monitor's refresh-caddy schedule re-applies the managed site.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = caddy.get("keep.example.test").await;
        if answer == (200, "still here".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the site never came back: {answer:?}\n{}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let op = cluster
        .accepted(Method::POST, "/api/v1/caddy/validate", None)
        .await;
    assert_eq!(completed(&op)["ok"], true, "{op:#}");
    let schedules = cluster.get("/api/v1/schedules").await.body;
    let refresh = schedules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "refresh-caddy")
        .cloned()
        .unwrap_or_else(|| panic!("no refresh-caddy schedule: {schedules:#}"));
    assert_eq!(refresh["type"], "caddy.reload");
}
