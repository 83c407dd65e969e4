//! `spawn_app()`: an API on port 0 over a database in a temp directory, with
//! rate limits off (unless a test turns them on), three keys made through
//! the store (admin, write, read) and typed helpers for what tests do.

use std::path::PathBuf;
use std::time::Duration;

use opsqueue_api::Application;
use opsqueue_shared::config::RateLimitConfig;
use opsqueue_shared::store::{
    ApiKey, ClaimRequest, Finish, NewKey, Scope, api_key_insert, operation_claim, operation_finish,
    token_generate,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{Config, Operation, OperationError, Store};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The deadline for anything a test waits on; generous on purpose.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub config: Config,
    pub admin: String,
    pub write: String,
    pub read: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A configuration for a database in `dir`, port 0, no rate limits.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.database.path = dir.join("opsqueue.db");
    config.api.bind = "127.0.0.1:0".into();
    config.api.http_workers = Some(2);
    config.api.rate_limit = RateLimitConfig {
        per_key_per_second: 0,
        per_key_burst: 0,
        per_address_per_second: 0,
        per_address_burst: 0,
    };
    config
}

pub fn make_key(
    store: &Store,
    name: &str,
    scopes: &[Scope],
    source: Option<&str>,
) -> (ApiKey, String) {
    let token = token_generate();
    let new = NewKey {
        name,
        scopes,
        source,
        ..Default::default()
    };
    let key = store
        .write(|tx| api_key_insert(tx, &new, &token, opsqueue_shared::time::now()))
        .unwrap();
    (key, token)
}

/// Starts `config`'s application in the background; returns its address.
pub async fn start(config: Config) -> (String, CancellationToken) {
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until(shutdown.clone()));
    (address, shutdown)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    adjust(&mut config);
    let store = Store::open(&config.database).unwrap();
    let (_, admin) = make_key(&store, "test-admin", &[Scope::Admin], None);
    let (_, write) = make_key(&store, "test-write", &[Scope::Write], None);
    let (_, read) = make_key(&store, "test-read", &[Scope::Read], None);
    let (address, shutdown) = start(config.clone()).await;
    TestApp {
        address,
        client: reqwest::Client::new(),
        store,
        config,
        admin,
        write,
        read,
        shutdown,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn wake_dir(&self) -> PathBuf {
        self.config.database.wake_dir()
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is answered")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_as(path, &self.read).await
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the request is answered")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_as(path, &self.write, body).await
    }

    /// `POST /api/v1/operations` with the write key.
    pub async fn enqueue(&self, body: Value) -> Response {
        self.post("/api/v1/operations", &body).await
    }

    /// Enqueues and insists on a 202; returns the operation.
    pub async fn enqueue_ok(&self, body: Value) -> Value {
        let response = self.enqueue(body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// `GET /api/v1/operations/{id}`, insisting on a 200.
    pub async fn operation(&self, id: &str) -> Value {
        let response = self.get(&format!("/api/v1/operations/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub fn count_operations(&self) -> i64 {
        self.store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM operations", [], |r| r.get(0))?))
            .unwrap()
    }

    /// Claims every due operation as `worker`, as a worker would.
    pub fn claim(&self, worker: &str) -> Vec<Operation> {
        let now = opsqueue_shared::time::now();
        let targets = vec!["local".to_owned()];
        self.store
            .write(|tx| {
                operation_claim(
                    tx,
                    &ClaimRequest {
                        worker_id: worker,
                        targets: &targets,
                        sources: None,
                        limit: 100,
                        now,
                        lease_until: now + chrono::Duration::seconds(60),
                    },
                )
            })
            .unwrap()
    }

    /// Ends a claimed operation, as its worker would.
    pub fn finish(&self, operation: &Operation, finish: Finish) {
        let fence = operation.fence().expect("a claimed operation");
        let applied = self
            .store
            .write(|tx| operation_finish(tx, &fence, &finish, opsqueue_shared::time::now()))
            .unwrap();
        assert!(applied, "the fence held");
    }

    pub fn fail(&self, operation: &Operation) {
        self.finish(
            operation,
            Finish::Failed {
                error: OperationError::new("boom", "it failed", false),
            },
        );
    }

    pub fn wake(&self, role: Role) {
        Waker::new(&self.wake_dir()).unwrap().wake(role);
    }
}

/// Asserts an RFC 9457 problem with this status and code; returns it.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert_eq!(
        problem["type"],
        format!("urn:opsqueue:problem:{code}"),
        "{problem}"
    );
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    problem
}

pub fn id_of(operation: &Value) -> String {
    operation["id"]
        .as_str()
        .expect("an operation has an id")
        .to_owned()
}
