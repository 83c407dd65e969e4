//! The PM2 controller end to end: the real binaries and the real pm2 (its
//! own `PM2_HOME` per test), driven over the typed `/api/v1/pm2` routes.
//! Reads answer from observations; nothing an app has in its environment
//! ever reaches an API answer or a log line.

use std::time::{Duration, Instant};

use opsqueue_tests::pm2_home::Pm2Home;
use opsqueue_tests::{Cluster, DEADLINE, Response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Points the cluster's processes at `pm2`.
fn configure(pm2: &Pm2Home, cluster: &mut Cluster) {
    cluster.set_env("OPSQUEUE_PM2__ENABLED", "true");
    cluster.set_env("OPSQUEUE_PM2__HOME", pm2.home.display());
    cluster.set_env("OPSQUEUE_PM2__BASE_DIR", pm2.apps.display());
}

/// Every answer a test saw, to search for what must never show.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, response: Response) -> Response {
        self.0.push(response.body.to_string());
        response
    }
}

/// Fires a typed route and waits for its operation to end.
async fn fire(
    cluster: &Cluster,
    seen: &mut Seen,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let id = seen
        .keep(cluster.request(method, path, body).await)
        .accepted_id(path);
    let op = cluster.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{path}: {op:#}");
    seen.0.push(op.to_string());
    for line in cluster.logs(&id).await {
        seen.0.push(line.to_string());
    }
    op
}

#[tokio::test]
async fn an_app_is_run_over_http_and_read_back_from_observations_without_its_environment() {
    let pm2 = Pm2Home::new();
    let mut cluster = Cluster::new();
    configure(&pm2, &mut cluster);
    cluster.start_api();
    cluster.start_worker(&[]);
    let mut seen = Seen::default();
    let secret = format!("planted-{}", uuid::Uuid::new_v4().simple());

    let spec = json!({"name": "web", "script": pm2.script("server.js"), "args": ["e2e"],
                      "env": {"SESSION_SECRET": secret}});
    let started = fire(
        &cluster,
        &mut seen,
        Method::POST,
        "/api/v1/pm2/processes",
        Some(spec),
    )
    .await;
    assert_eq!(started["result"]["changed"], true);
    assert_eq!(started["payload"]["env"], "***");

    let web = seen.keep(cluster.get("/api/v1/pm2/processes/web").await);
    assert_eq!(web.status, StatusCode::OK, "{:?}", web.body);
    assert_eq!(web.body["status"], "online");
    assert!(web.body["observed_at"].is_string());
    assert_eq!(web.body["observed_by"], started["id"]);
    let all = seen.keep(cluster.get("/api/v1/pm2/processes").await);
    assert_eq!(all.body["items"][0]["name"], "web", "{:?}", all.body);

    let stopped = fire(
        &cluster,
        &mut seen,
        Method::POST,
        "/api/v1/pm2/processes/web/stop",
        None,
    )
    .await;
    assert_eq!(stopped["result"]["status"], "stopped");
    let web = seen.keep(cluster.get("/api/v1/pm2/processes/web").await);
    assert_eq!(web.body["status"], "stopped");
    for verb in ["start", "restart", "reload"] {
        let op = fire(
            &cluster,
            &mut seen,
            Method::POST,
            &format!("/api/v1/pm2/processes/web/{verb}"),
            None,
        )
        .await;
        assert_eq!(op["result"]["changed"], true, "{verb}");
    }

    let missing = seen.keep(cluster.get("/api/v1/pm2/processes/web/logs").await);
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "no logs observed yet"
    );
    missing.assert_problem("not_found", "logs before any pm2.logs");
    let deadline = Instant::now() + DEADLINE;
    loop {
        fire(
            &cluster,
            &mut seen,
            Method::POST,
            "/api/v1/pm2/processes/web/logs?lines=5",
            None,
        )
        .await;
        let logs = seen.keep(cluster.get("/api/v1/pm2/processes/web/logs").await);
        assert_eq!(logs.status, StatusCode::OK);
        if logs.body["out"].to_string().contains("hello e2e") {
            assert!(logs.body["observed_at"].is_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app's line never showed: {:?}",
            logs.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flushed = fire(
        &cluster,
        &mut seen,
        Method::DELETE,
        "/api/v1/pm2/processes/web/logs",
        None,
    )
    .await;
    assert_eq!(flushed["result"]["changed"], true);

    let jlist = String::from_utf8(pm2.pm2(&["jlist"]).stdout).unwrap();
    assert!(
        jlist.contains(&secret),
        "pm2 itself holds the secret, so the search can fail"
    );

    let deleted = fire(
        &cluster,
        &mut seen,
        Method::DELETE,
        "/api/v1/pm2/processes/web",
        None,
    )
    .await;
    assert_eq!(deleted["result"]["changed"], true);
    let gone = seen.keep(cluster.get("/api/v1/pm2/processes/web").await);
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    gone.assert_problem("not_found", "a deleted app");
    let again = fire(
        &cluster,
        &mut seen,
        Method::DELETE,
        "/api/v1/pm2/processes/web",
        None,
    )
    .await;
    assert_eq!(again["result"]["changed"], false);

    seen.keep(cluster.get("/api/v1/operations?limit=500").await);
    for text in &seen.0 {
        assert!(
            !text.contains(&secret),
            "the app's environment leaked: {text}"
        );
    }
}

#[tokio::test]
async fn a_refused_pm2_request_is_a_4xx_and_stores_nothing() {
    let pm2 = Pm2Home::new();
    let mut cluster = Cluster::new();
    configure(&pm2, &mut cluster);
    cluster.start_api();
    // A payload the action's parser refuses is `invalid_payload`; a path or
    // query the route cannot take is `invalid_request`.
    let refused = [
        (
            Method::POST,
            "/api/v1/pm2/processes",
            Some(json!({"name": "x", "script": "/etc/passwd"})),
            "invalid_payload",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes",
            Some(json!({"name": "x"})),
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes",
            Some(json!({"name": "all", "script": pm2.script("server.js")})),
            "invalid_payload",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes",
            Some(
                json!({"name": "x", "script": pm2.script("server.js"), "env": {"LD_PRELOAD": "/x.so"}}),
            ),
            "invalid_payload",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes/-x/stop",
            None,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes/a;b/restart",
            None,
            "invalid_request",
        ),
        (
            Method::DELETE,
            "/api/v1/pm2/processes/42",
            None,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/pm2/processes/web/logs?lines=0",
            None,
            "invalid_payload",
        ),
        (
            Method::GET,
            "/api/v1/pm2/processes/a%20b",
            None,
            "invalid_request",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/web",
            Some(json!({})),
            "invalid_payload",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/web",
            Some(json!({"instances": 0})),
            "invalid_payload",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/web",
            Some(json!({"max_memory_restart": "lots"})),
            "invalid_payload",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/web",
            Some(json!({"env": {"NODE_OPTIONS": "--require /tmp/x.js"}})),
            "invalid_payload",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/web",
            Some(json!({"script": "/etc/passwd"})),
            "invalid_payload",
        ),
        (
            Method::PATCH,
            "/api/v1/pm2/processes/-x",
            Some(json!({"args": []})),
            "invalid_request",
        ),
    ];
    for (method, path, body, code) in refused {
        let response = cluster.request(method.clone(), path, body.clone()).await;
        assert!(
            response.status.is_client_error(),
            "{method} {path} {body:?}: {} {:?}",
            response.status,
            response.body
        );
        response.assert_problem(code, &format!("{method} {path} {body:?}"));
    }
    let listed = cluster.get("/api/v1/operations").await;
    assert_eq!(
        listed.body["items"],
        json!([]),
        "a refused request stored an operation"
    );
}

#[tokio::test]
async fn the_monitor_keeps_the_observed_process_list_fresh() {
    let pm2 = Pm2Home::new();
    let mut cluster = Cluster::new();
    configure(&pm2, &mut cluster);
    cluster.set_env("OPSQUEUE_PM2__REFRESH_CRON", "*/1 * * * * *");
    // The daemon first: a `pm2 start` racing the refreshes' `pm2 jlist` on
    // a home without one could each spawn a daemon and hang.
    let ping = pm2.pm2(&["ping"]);
    assert!(ping.status.success(), "{ping:?}");
    cluster.start_all();

    // Started behind opsqueue's back: only a refresh can see it.
    let started = pm2.pm2(&["start", &pm2.script("server.js"), "--name", "outsider"]);
    assert!(started.status.success(), "{started:?}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = cluster.get("/api/v1/pm2/processes").await;
        if listed.body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["name"] == "outsider"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never observed: {:?}\n{}",
            listed.body,
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let schedule = cluster.get("/api/v1/schedules/refresh-pm2").await;
    assert_eq!(schedule.status, StatusCode::OK);
    assert_eq!(schedule.body["type"], "pm2.list");
}

#[tokio::test]
async fn an_apps_settings_change_over_http_and_a_change_it_cannot_run_with_is_undone() {
    let pm2 = Pm2Home::new();
    let mut cluster = Cluster::new();
    configure(&pm2, &mut cluster);
    cluster.start_api();
    cluster.start_worker(&[]);
    let mut seen = Seen::default();
    let secret = format!("planted-{}", uuid::Uuid::new_v4().simple());

    let spec = json!({"name": "web", "script": pm2.script("flag.js"), "args": ["one"],
                      "env": {"GREETING": "hi"}, "max_memory_restart": "200M",
                      "log_date_format": "YYYY-MM-DD HH:mm"});
    fire(
        &cluster,
        &mut seen,
        Method::POST,
        "/api/v1/pm2/processes",
        Some(spec),
    )
    .await;
    let web = seen.keep(cluster.get("/api/v1/pm2/processes/web").await);
    assert_eq!(web.body["max_memory_restart"], 200 << 20, "{:?}", web.body);
    assert_eq!(web.body["log_date_format"], "YYYY-MM-DD HH:mm");

    let changed = fire(
        &cluster,
        &mut seen,
        Method::PATCH,
        "/api/v1/pm2/processes/web",
        Some(
            json!({"args": ["two"], "env": {"API_TOKEN": secret}, "instances": 2,
                    "max_memory_restart": "300M"}),
        ),
    )
    .await;
    assert_eq!(changed["type"], "pm2.update");
    assert_eq!(changed["payload"]["env"], "***");
    assert_eq!(
        changed["result"]["settings"],
        json!(["instances", "env", "args", "max_memory_restart"])
    );
    let web = seen.keep(cluster.get("/api/v1/pm2/processes/web").await);
    assert_eq!(web.body["observed_by"], changed["id"]);
    assert_eq!(web.body["args"], json!(["two"]));
    assert_eq!(web.body["max_memory_restart"], 300 << 20);
    assert_eq!(web.body["instances"].as_array().unwrap().len(), 2);
    assert_eq!(pm2.settings("web")["env"]["API_TOKEN"], secret.as_str());

    let before = pm2.settings("web");
    let path = "/api/v1/pm2/processes/web";
    let id = seen
        .keep(
            cluster
                .request(
                    Method::PATCH,
                    path,
                    Some(json!({"args": ["--crash"], "instances": 3, "autorestart": false})),
                )
                .await,
        )
        .accepted_id(path);
    let failed = cluster.wait_terminal(&id).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["code"], "pm2_update_failed", "{failed:#}");
    assert_eq!(
        pm2.settings("web"),
        before,
        "pm2's list differs after the failed change"
    );

    let missing = seen
        .keep(
            cluster
                .request(
                    Method::PATCH,
                    "/api/v1/pm2/processes/nosuch",
                    Some(json!({"autorestart": false})),
                )
                .await,
        )
        .accepted_id("an app pm2 does not have");
    let missing = cluster.wait_terminal(&missing).await;
    assert_eq!(missing["error"]["code"], "process_not_found", "{missing:#}");

    seen.0.push(failed.to_string());
    for line in cluster.logs(&id).await {
        seen.0.push(line.to_string());
    }
    seen.keep(cluster.get("/api/v1/operations?limit=500").await);
    for text in &seen.0 {
        assert!(!text.contains(&secret), "the new env leaked: {text}");
    }
}
