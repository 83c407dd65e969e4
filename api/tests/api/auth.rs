use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use opsqueue_shared::Store;
use opsqueue_shared::store::{api_key_find, api_key_list, api_key_revoke};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    PATIENCE, TestApp, assert_problem, spawn_app, spawn_app_with, start, test_config,
};

#[tokio::test]
async fn health_is_open_and_everything_else_needs_a_key() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body = health.json::<serde_json::Value>().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["version"], opsqueue_shared::VERSION, "{body}");
    let at = body["timestamp"].as_str().unwrap_or_default();
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 timestamp");
    let skew = (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    assert!(skew < 300, "the timestamp is the server's clock: {body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

    for path in [
        "/api/v1/operations",
        "/metrics",
        "/ready",
        "/api/v1/openapi.json",
        "/api/v1/workers",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let unknown = app.get_as("/api/v1/operations", "oq_not-a-key").await;
    assert_problem(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_request_without_a_key_is_401_before_its_body_is_looked_at() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/operations"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_x_api_key_header_works_like_bearer() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/operations"))
        .header("X-API-Key", &app.read)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_read_key_may_read_but_not_write() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_as("/api/v1/operations", &app.read).await.status(),
        StatusCode::OK
    );
    let write = app
        .post_as(
            "/api/v1/operations",
            &app.read,
            &json!({"type": "diag.noop"}),
        )
        .await;
    assert_problem(write, StatusCode::FORBIDDEN, "forbidden").await;
    let bad_body_too = app
        .post_as("/api/v1/operations", &app.read, &json!({"type": 1}))
        .await;
    assert_problem(bad_body_too, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.count_operations(), 0);
    // Scopes nest: write and admin keys read too.
    assert_eq!(
        app.get_as("/api/v1/operations", &app.write).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get_as("/api/v1/operations", &app.admin).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_as("/api/v1/operations", &app.write).await.status(),
        StatusCode::OK
    );
    let revoked = app
        .store
        .write(|tx| api_key_revoke(tx, "test-write", opsqueue_shared::time::now()))
        .unwrap();
    assert_eq!(revoked, 1);
    let response = app.get_as("/api/v1/operations", &app.write).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_key_records_when_it_was_last_used() {
    let app = spawn_app().await;
    app.get_as("/api/v1/operations", &app.read).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let key = app
            .store
            .read(|c| api_key_find(c, &app.read))
            .unwrap()
            .unwrap();
        if key.last_used_at.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends up to 50 requests (far more than the bucket refills while they
/// run) until one is refused; returns that refusal.
async fn first_refusal(app: &TestApp, token: &str) -> reqwest::Response {
    for _ in 0..50 {
        let response = app.get_as("/api/v1/operations", token).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return response;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    panic!("never rate limited");
}

#[tokio::test]
async fn past_its_burst_a_key_gets_429_with_retry_after() {
    let app = spawn_app_with(|config| {
        config.api.rate_limit.per_key_per_second = 1;
        config.api.rate_limit.per_key_burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/operations").await.status(), StatusCode::OK);
    }
    let limited = first_refusal(&app, &app.read).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another key has its own bucket.
    assert_eq!(
        app.get_as("/api/v1/operations", &app.write).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn past_its_burst_an_address_gets_429_whatever_key_it_uses() {
    let app = spawn_app_with(|config| {
        config.api.rate_limit.per_address_per_second = 1;
        config.api.rate_limit.per_address_burst = 2;
    })
    .await;
    assert_eq!(
        app.get_as("/api/v1/operations", &app.read).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get_as("/api/v1/operations", &app.write).await.status(),
        StatusCode::OK
    );
    let limited = first_refusal(&app, &app.admin).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // /health stays open.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// The real `opsqueue-api` binary serving `database` on port 0, its stderr
/// in a log file and its stdout kept, so a test can read what it logged.
struct ApiProcess {
    child: Child,
    address: String,
    stdout: std::thread::JoinHandle<String>,
}

impl ApiProcess {
    fn start(database: &Path, log: &Path) -> ApiProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsqueue-api"))
            .env("OPSQUEUE_DATABASE__PATH", database)
            .env("OPSQUEUE_API__BIND", "127.0.0.1:0")
            .env("OPSQUEUE_LOG__FORMAT", "text")
            .env("RUST_LOG", "info")
            .env_remove("OPSQUEUE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("opsqueue-api starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            for line in lines.map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("opsqueue-api listening on ") {
                    let _ = address_tx.send(url.trim().to_owned());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let address = address_rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!("opsqueue-api never said it listens; see {}", log.display())
        });
        ApiProcess {
            child,
            address,
            stdout,
        }
    }

    /// Kills the process; returns everything it wrote to stdout.
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stdout.join().unwrap()
    }
}

#[tokio::test]
async fn a_first_start_writes_one_admin_key_to_a_0600_file_and_later_starts_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let file = config.admin_key_file();
    assert!(!file.exists());

    let log = dir.path().join("api.log");
    let api = ApiProcess::start(&config.database.path, &log);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin key file is private");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/operations", api.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stdout = api.stop();
    let logged = std::fs::read_to_string(&log).unwrap() + &stdout;
    assert!(
        logged.contains(&file.display().to_string()),
        "the file's path is not logged:\n{logged}"
    );
    let secret = token.trim_start_matches("oq_");
    assert!(!logged.contains(secret), "the token was logged:\n{logged}");

    std::fs::remove_file(&file).unwrap();
    let (_, again) = start(config.clone()).await;
    assert!(!file.exists(), "a later start wrote the file again");
    again.cancel();
    let store = Store::open(&config.database).unwrap();
    let keys = store.read(api_key_list).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, "admin");
}
