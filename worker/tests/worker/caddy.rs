//! The caddy driver against a real Caddy (Debian's package), one process
//! per test on loopback ports with automatic HTTPS off
//! (`tests/src/caddy_server.rs`), and a tiny upstream HTTP server: every
//! claim about a site is proven by a request through Caddy with the site's
//! `Host`. A missing caddy fails the test with a message, never skips it.

use std::path::Path;

use opsqueue_shared::store::{managed_list, observation_list};
use opsqueue_shared::{Config, Status};
use reqwest::Method;
use serde_json::{Value, json};

use crate::conformance::{Call, Slow, Subject, conforms};
use crate::{PATIENCE, TestApp, completed, error_code, run};

#[path = "../../../tests/src/caddy_server.rs"]
#[allow(dead_code)]
mod caddy_server;

use caddy_server::{CaddyServer, NO_SITE, STATIC_BODY, STATIC_SITE, Upstream};

fn caddy() -> CaddyServer {
    CaddyServer::start(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn configure(caddy: &CaddyServer, config: &mut Config) {
    config.caddy.enabled = true;
    config.caddy.admin_url = caddy.admin_url();
}

fn app_for(caddy: &CaddyServer) -> TestApp {
    TestApp::with(|config| configure(caddy, config))
}

/// Caddy's own view, behind the driver's back.
async fn admin(caddy: &CaddyServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}{path}", caddy.admin_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {response:?}");
    response.json().await.unwrap_or(Value::Null)
}

fn routes_with_id(config: &Value, id: &str) -> usize {
    config["apps"]["http"]["servers"]["test"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["@id"] == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_site_proxies_to_its_upstream_and_adding_it_again_changes_nothing() {
    let caddy = caddy();
    let blue = Upstream::start("blue upstream").await;
    let app = app_for(&caddy);
    assert_eq!(caddy.get("pb1.example.test").await, (404, NO_SITE.into()));

    let site = json!({"domain": "pb1.example.test", "upstream": blue.address()});
    let op = run(&app, "caddy.site.add", site.clone()).await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(completed(&op)["server"], "test");
    assert_eq!(
        caddy.get("pb1.example.test").await,
        (200, "blue upstream".into())
    );
    assert_eq!(caddy.get(STATIC_SITE).await, (200, STATIC_BODY.into()));
    assert_eq!(caddy.get("other.example.test").await.1, NO_SITE);

    let again = run(&app, "caddy.site.add", site).await;
    assert_eq!(completed(&again)["changed"], false);
    let config = admin(&caddy, Method::GET, "/config/", None).await;
    assert_eq!(routes_with_id(&config, "opsqueue-site-pb1.example.test"), 1);

    let observed = app
        .store
        .read(|c| observation_list(c, "local", "caddy", "site", Some("pb1.example.test")))
        .unwrap();
    assert_eq!(observed[0].data["upstreams"], json!([blue.address()]));
    let managed = app
        .store
        .read(|c| managed_list(c, "local", "caddy", "site", Some("pb1.example.test")))
        .unwrap();
    assert_eq!(managed[0].spec["upstream"], blue.address());

    let green = Upstream::start("green upstream").await;
    let moved = run(
        &app,
        "caddy.site.add",
        json!({"domain": "pb1.example.test", "upstream": green.address()}),
    )
    .await;
    assert_eq!(completed(&moved)["changed"], true);
    assert_eq!(
        caddy.get("pb1.example.test").await,
        (200, "green upstream".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_site_no_longer_proxies_and_removing_it_again_changes_nothing() {
    let caddy = caddy();
    let upstream = Upstream::start("app").await;
    let app = app_for(&caddy);
    let add = run(
        &app,
        "caddy.site.add",
        json!({"domain": "gone.example.test", "upstream": upstream.address()}),
    )
    .await;
    completed(&add);
    assert_eq!(caddy.get("gone.example.test").await, (200, "app".into()));

    let removed = run(
        &app,
        "caddy.site.remove",
        json!({"domain": "gone.example.test"}),
    )
    .await;
    assert_eq!(completed(&removed)["changed"], true);
    assert_eq!(caddy.get("gone.example.test").await, (404, NO_SITE.into()));
    assert!(
        app.store
            .read(|c| managed_list(c, "local", "caddy", "site", None))
            .unwrap()
            .is_empty()
    );

    let again = run(
        &app,
        "caddy.site.remove",
        json!({"domain": "gone.example.test"}),
    )
    .await;
    assert_eq!(completed(&again)["changed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_that_caddy_2_6_accepts_are_cleaned_up_to_one_route() {
    let caddy = caddy();
    let upstream = Upstream::start("dup").await;
    let app = app_for(&caddy);
    let route = json!({
        "@id": "opsqueue-site-dup.example.test",
        "match": [{"host": ["dup.example.test"]}],
        "handle": [{"handler": "static_response", "body": "stale copy"}],
        "terminal": true,
    });
    for _ in 0..2 {
        admin(
            &caddy,
            Method::PUT,
            "/config/apps/http/servers/test/routes/0",
            Some(route.clone()),
        )
        .await;
    }
    let config = admin(&caddy, Method::GET, "/config/", None).await;
    assert_eq!(routes_with_id(&config, "opsqueue-site-dup.example.test"), 2);

    let op = run(
        &app,
        "caddy.site.add",
        json!({"domain": "dup.example.test", "upstream": upstream.address()}),
    )
    .await;
    assert_eq!(completed(&op)["changed"], true);
    let config = admin(&caddy, Method::GET, "/config/", None).await;
    assert_eq!(routes_with_id(&config, "opsqueue-site-dup.example.test"), 1);
    assert_eq!(caddy.get("dup.example.test").await, (200, "dup".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_sites_come_back_after_a_caddy_restart_with_a_reload() {
    let mut caddy = caddy();
    let upstream = Upstream::start("survivor").await;
    let app = app_for(&caddy);
    let add = run(
        &app,
        "caddy.site.add",
        json!({"domain": "keep.example.test", "upstream": upstream.address()}),
    )
    .await;
    completed(&add);

    caddy.restart();
    assert_eq!(caddy.get("keep.example.test").await.1, NO_SITE);
    let validate = run(&app, "caddy.validate", json!({})).await;
    let report = completed(&validate);
    assert_eq!(report["ok"], false);
    assert_eq!(report["missing"], json!(["keep.example.test"]));

    let reload = run(&app, "caddy.reload", json!({})).await;
    assert_eq!(completed(&reload)["changed"], true);
    assert_eq!(
        completed(&reload)["reapplied"],
        json!(["keep.example.test"])
    );
    assert_eq!(
        caddy.get("keep.example.test").await,
        (200, "survivor".into())
    );

    let again = run(&app, "caddy.reload", json!({})).await;
    assert_eq!(completed(&again)["changed"], false);
    let validate = run(&app, "caddy.validate", json!({})).await;
    assert_eq!(completed(&validate)["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_opsqueue_did_not_add_is_listed_and_never_shadowed() {
    let caddy = caddy();
    let upstream = Upstream::start("hijack").await;
    let app = app_for(&caddy);
    let op = run(
        &app,
        "caddy.site.add",
        json!({"domain": STATIC_SITE, "upstream": upstream.address()}),
    )
    .await;
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "caddy_site_conflict");
    assert_eq!(caddy.get(STATIC_SITE).await, (200, STATIC_BODY.into()));

    let list = run(&app, "caddy.list", json!({})).await;
    let result = completed(&list);
    assert_eq!(result["count"], 1);
    assert_eq!(result["sites"][0]["domain"], STATIC_SITE);
    assert_eq!(result["sites"][0]["opsqueue"], false);
}

/// A Caddy admin API that hangs: a loopback listener that accepts
/// connections and never answers, holding them open until dropped.
pub struct HungAdmin {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl HungAdmin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        Self { url, task }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for HungAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_that_never_answers_is_retryable_once_a_request_times_out() {
    let hung = HungAdmin::start().await;
    let app = TestApp::with(|config| {
        config.caddy.enabled = true;
        config.caddy.admin_url = hung.url();
        config.caddy.request_timeout_secs = 1;
    });
    let id = app.enqueue_with("caddy.list", json!({}), |r| r.max_attempts = Some(1));
    app.worker().await.step().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.status, Status::Failed, "{op:?}");
    assert_eq!(error_code(&op), "caddy_unreachable");
    assert!(op.error.unwrap().retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starts_although_caddy_s_admin_api_hangs() {
    let hung = HungAdmin::start().await;
    let app = TestApp::with(|config| {
        config.caddy.enabled = true;
        config.caddy.admin_url = hung.url();
        config.caddy.request_timeout_secs = 3_600;
    });

    let started = tokio::time::timeout(PATIENCE, app.worker()).await;

    assert!(
        started.is_ok(),
        "the start-up probe waited for the hung Caddy"
    );
}

/// The caddy family in the conformance test: a real Caddy, an admin
/// address where nothing listens (a retryable failure), and one that
/// accepts and never answers (a slow action, to cancel and time out).
pub struct CaddySubject {
    caddy: CaddyServer,
    hung: HungAdmin,
}

impl Subject for CaddySubject {
    async fn start(_dir: &Path) -> Self {
        Self {
            caddy: caddy(),
            hung: HungAdmin::start().await,
        }
    }

    fn configure(&self, config: &mut Config) {
        configure(&self.caddy, config);
    }

    fn refused(&self) -> Vec<Call> {
        vec![
            (
                "caddy.site.add",
                json!({"domain": "a.test", "upstream": "127.0.0.1:notaport"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a.test", "upstream": "127.0.0.1:0"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a.test", "upstream": "8.8.8.8:53"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "-a.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a;b.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a..test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": "a\nb.test", "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.add",
                json!({"domain": format!("{}.test", "a".repeat(64)), "upstream": "127.0.0.1:80"}),
            ),
            (
                "caddy.site.remove",
                json!({"domain": "a.test", "force": true}),
            ),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some((
            "caddy.site.add",
            json!({"domain": "conformance.example.test", "upstream": "127.0.0.1:9"}),
        ))
    }

    fn permanent_failure(&self) -> Call {
        (
            "caddy.site.add",
            json!({"domain": STATIC_SITE, "upstream": "127.0.0.1:9"}),
        )
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        // A port nothing listens on: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some((
            ("caddy.list", json!({})),
            Box::new(move |config| {
                config.caddy.admin_url = format!("http://127.0.0.1:{closed}");
            }),
        ))
    }

    fn slow(&self) -> Slow {
        let hung = self.hung.url();
        Slow::with(
            "caddy.site.add",
            json!({"domain": "slow.example.test", "upstream": "127.0.0.1:9"}),
            move |config| {
                config.caddy.admin_url = hung;
                // Only the operation's cancel or deadline can end it.
                config.caddy.request_timeout_secs = 3_600;
            },
        )
    }

    async fn stop(self) {
        drop(self.hung);
        drop(self.caddy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caddy_driver_conforms() {
    conforms::<CaddySubject>().await;
}
