//! The dashboard in a real browser (headless chromium through WebDriver,
//! see `opsqueue_tests::browser`) against the real binaries: signing in,
//! firing from the form and watching the operation move without a reload,
//! cancelling from its page, what a read key sees and may do, the CSRF
//! token, the live log, field errors. Each test leaves a screenshot in
//! `target/tmp/screenshots/`.

use std::time::Duration;

use opsqueue_tests::Cluster;
use opsqueue_tests::browser::Browser;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A cluster with the API and the monitor (workers are the test's to
/// start), and a browser.
async fn setup() -> (Cluster, Browser) {
    let mut cluster = Cluster::new();
    cluster.start_api();
    cluster.start_monitor();
    let browser = Browser::start(&cluster).await;
    (cluster, browser)
}

/// A client for requests made beside the browser, that shows redirects
/// rather than following them.
pub(crate) fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The browser's session as a request beside it presents it: the cookie
/// header, and the CSRF token.
pub(crate) async fn session_of(browser: &Browser) -> (String, String) {
    let cookie = format!("opsqueue_session={}", browser.session_cookie().await);
    (cookie, browser.csrf_token().await)
}

/// Starts a worker and a long sleep; returns the sleep's id once it runs.
async fn a_running_sleep(cluster: &mut Cluster) -> String {
    cluster.start_worker(&[]);
    let id = cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 120, "child": true}))
        .await;
    cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    id
}

#[tokio::test]
async fn signing_in_with_a_key_shows_the_overview_and_signing_out_ends_the_session() {
    let (cluster, browser) = setup().await;
    browser.visit("/ui/operations").await;
    assert!(
        browser.path().await == "/ui/login",
        "a page without a session leads to the sign-in form"
    );
    browser.submit_key("oq_wrong").await;
    browser
        .wait_text(".field-error", "the wrong key is refused", |t| {
            t.contains("unknown")
        })
        .await;
    browser.screenshot("sign-in").await;

    browser.sign_in(&cluster.token).await;
    assert_eq!(browser.text("main h1").await, "Overview");
    browser.wait_live().await;

    let cookie = browser.session_cookie().await;
    browser.click("form[action='/ui/logout'] button").await;
    browser.find("#key").await;
    let answer = cookie_client()
        .get(format!("{}/api/v1/operations", cluster.api_url))
        .header("cookie", format!("opsqueue_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "the signed-out session still works"
    );
}

#[tokio::test]
async fn a_sleep_fired_from_the_form_goes_pending_running_completed_without_a_reload() {
    let (mut cluster, browser) = setup().await;
    browser.sign_in(&cluster.token).await;
    browser.visit("/ui/fire?type=diag.sleep").await;
    browser.fill("#payload", r#"{"seconds": 2}"#).await;
    browser.click("#fire button[type=submit]").await;

    // No worker yet: it waits, pending, on its own page.
    browser
        .wait_text("#summary .badge", "the new operation shows pending", |t| {
            t == "pending"
        })
        .await;
    let path = browser.path().await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(cluster.operation(&id).await["type"], "diag.sleep");
    browser.wait_live().await;
    browser.mark_page().await;

    cluster.start_worker(&[]);
    browser
        .wait_text("#summary .badge", "it runs", |t| t == "running")
        .await;
    browser.screenshot("operation-running").await;
    browser
        .wait_text("#summary .badge", "it completes", |t| t == "completed")
        .await;
    assert!(browser.not_reloaded().await, "the page was reloaded");
    assert!(browser.text("#summary").await.contains("Result"));
}

#[tokio::test]
async fn the_operations_list_gains_new_rows_and_their_states_change_in_place() {
    let (mut cluster, browser) = setup().await;
    browser.sign_in(&cluster.token).await;
    browser.visit("/ui/operations").await;
    browser.wait_live().await;
    browser.mark_page().await;
    let mut ids = Vec::new();
    for seconds in [1, 2, 3] {
        ids.push(
            cluster
                .enqueue_kind("diag.sleep", json!({"seconds": seconds}))
                .await,
        );
    }
    for id in &ids {
        browser
            .wait_text(&format!("#op-{id} .badge"), "the new row appears", |t| {
                t == "pending"
            })
            .await;
    }
    cluster.start_worker(&[]);
    for id in &ids {
        browser
            .wait_text(
                &format!("#op-{id} .badge"),
                "the row's state changes",
                |t| t == "completed",
            )
            .await;
    }
    assert!(browser.not_reloaded().await, "the page was reloaded");
    browser.screenshot("operations").await;
    browser.visit("/ui").await;
    browser
        .wait_text("[data-count=completed]", "the overview counts them", |t| {
            t == "3"
        })
        .await;
    assert_eq!(
        browser.text("#stats h2").await,
        "Last hour: 3 ended, 0 failed"
    );
    browser.screenshot("overview").await;
    browser.visit("/ui/operations").await;

    // Readable on a phone: the table scrolls inside its box, the page
    // does not.
    browser.resize(390, 844).await;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(overflow, json!(true), "the page is wider than a phone");
    browser.screenshot("operations-phone").await;
}

#[tokio::test]
async fn a_running_operation_is_cancelled_from_its_page_after_a_confirmation() {
    let (mut cluster, browser) = setup().await;
    let id = a_running_sleep(&mut cluster).await;
    browser.sign_in(&cluster.token).await;
    browser.visit(&format!("/ui/operations/{id}")).await;
    browser
        .wait_text("#summary .badge", "it runs", |t| t == "running")
        .await;

    // Declining the question changes nothing.
    browser.click("form[action$='/cancel'] button").await;
    browser.client.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.operation(&id).await["status"], "running");

    browser.click("form[action$='/cancel'] button").await;
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_text("#summary .badge", "it ends cancelled", |t| t == "cancelled")
        .await;
    assert_eq!(cluster.operation(&id).await["status"], "cancelled");
    browser.screenshot("operation-cancelled").await;
}

#[tokio::test]
async fn a_read_key_sees_no_button_that_changes_anything_and_its_posts_are_refused() {
    let (mut cluster, browser) = setup().await;
    let id = a_running_sleep(&mut cluster).await;
    let read = cluster.create_key("viewer", "read");
    browser.sign_in(&read).await;
    assert!(
        !browser.has("nav a[href='/ui/fire']").await,
        "a read key sees Fire"
    );
    browser.visit(&format!("/ui/operations/{id}")).await;
    browser
        .wait_text("#summary .badge", "it runs", |t| t == "running")
        .await;
    assert!(
        browser.has("form[action='/ui/logout']").await,
        "it may sign out"
    );
    let changing = browser
        .eval("return document.querySelectorAll('main form[method=post]').length;")
        .await;
    assert_eq!(
        changing,
        json!(0),
        "a read key sees a form that changes something"
    );
    assert!(browser.text("header").await.contains("read only"));
    browser.screenshot("read-only").await;

    let (cookie, csrf) = session_of(&browser).await;
    let refused = cookie_client()
        .post(format!("{}/ui/operations/{id}/cancel", cluster.api_url))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = cookie_client()
        .post(format!("{}/api/v1/operations", cluster.api_url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"type": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(cluster.operation(&id).await["status"], "running");
}

#[tokio::test]
async fn a_request_of_a_session_without_its_csrf_token_is_refused() {
    let (mut cluster, browser) = setup().await;
    let id = a_running_sleep(&mut cluster).await;
    browser.sign_in(&cluster.token).await;
    let (cookie, csrf) = session_of(&browser).await;
    let csrf = csrf.as_str();
    let http = cookie_client();
    let cancel = format!("{}/ui/operations/{id}/cancel", cluster.api_url);
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let refused = http
            .post(&cancel)
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{form:?}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "csrf_failed");
    }
    let refused = http
        .post(format!("{}/api/v1/operations", cluster.api_url))
        .header("cookie", &cookie)
        .json(&json!({"type": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(cluster.operation(&id).await["status"], "running");

    // With the token, the same requests go through.
    let accepted = http
        .post(format!("{}/api/v1/operations", cluster.api_url))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({"type": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let cancelled = http
        .post(&cancel)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    let op = cluster.wait_terminal(&id).await;
    assert_eq!(op["status"], "cancelled");
}

const TICKER: &str = "#!/bin/sh\nfor i in 1 2 3 4; do echo \"tick $i\"; sleep 1; done\necho '{\"changed\": false}'\n";

#[tokio::test]
async fn the_log_of_a_running_operation_follows_live_on_its_page() {
    let mut cluster = Cluster::new();
    let dir = cluster.path("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("ticker.sh");
    std::fs::write(&script, TICKER).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    cluster.set_env("OPSQUEUE_SCRIPTS__ENABLED", "true");
    cluster.set_env("OPSQUEUE_SCRIPTS__DIR", dir.display());
    cluster.start_api();
    let browser = Browser::start(&cluster).await;
    let id = cluster
        .enqueue_kind("script.run", json!({"name": "ticker.sh"}))
        .await;
    browser.sign_in(&cluster.token).await;
    browser.visit(&format!("/ui/operations/{id}")).await;
    browser.find("#log[data-follow]").await;
    browser.mark_page().await;
    cluster.start_worker(&[]);
    browser
        .wait_text("#log", "the first line arrives", |t| t.contains("tick 1"))
        .await;
    let early = browser.text("#log").await;
    assert!(
        !early.contains("tick 4"),
        "the lines came at once, not as written: {early}"
    );
    browser
        .wait_text("#log", "the last line arrives", |t| t.contains("tick 4"))
        .await;
    browser
        .wait_text("#summary .badge", "it completes", |t| t == "completed")
        .await;
    browser
        .wait_until(
            "return document.getElementById('log').dataset.ended === 'true';",
            "the log stream says `end`",
        )
        .await;
    assert!(browser.not_reloaded().await, "the page was reloaded");
    let text = browser.text("#log").await;
    assert_eq!(
        text.matches("tick 2").count(),
        1,
        "a line came twice: {text}"
    );
    browser.screenshot("operation-log").await;
}

#[tokio::test]
async fn an_invalid_payload_is_refused_with_the_error_beside_its_field() {
    let (cluster, browser) = setup().await;
    browser.sign_in(&cluster.token).await;
    browser.visit("/ui/fire?type=diag.sleep").await;
    let submit = |payload: &'static str, priority: &'static str| {
        let browser = &browser;
        async move {
            browser.fill("#payload", payload).await;
            browser.fill("input[name=priority]", priority).await;
            browser.click("#fire button[type=submit]").await;
        }
    };
    submit("{seconds: 2", "").await;
    browser
        .wait_text("#payload-error", "non-JSON is refused", |t| {
            t.contains("is not JSON")
        })
        .await;

    submit(r#"{"seconds": "soon"}"#, "12").await;
    browser
        .wait_text("#priority-error", "the priority is out of range", |t| {
            t.contains("between 0 and 9")
        })
        .await;

    submit(r#"{"seconds": "soon"}"#, "1").await;
    let error = browser
        .wait_text("#payload-error", "the payload is refused", |t| {
            t.contains("seconds") || t.contains("invalid")
        })
        .await;
    assert!(error.contains("diag.sleep"), "{error}");
    assert_eq!(
        browser.value("#payload").await.as_deref(),
        Some(r#"{"seconds": "soon"}"#),
        "what was typed is kept"
    );
    browser.screenshot("fire-invalid").await;
    let stored = cluster.get("/api/v1/operations").await;
    assert_eq!(
        stored.body["items"],
        json!([]),
        "a refused form stored something"
    );
}

#[tokio::test]
async fn a_workflow_s_steps_are_drawn_by_depth_and_change_state_without_a_reload() {
    let (mut cluster, browser) = setup().await;
    let response = cluster
        .post(
            "/api/v1/workflows",
            json!({"name": "diamond", "steps": [
                {"name": "a", "type": "diag.noop"},
                {"name": "b", "type": "diag.sleep", "payload": {"seconds": 1}, "depends_on": ["a"]},
                {"name": "c", "type": "diag.noop", "depends_on": ["a"]},
                {"name": "d", "type": "diag.noop", "depends_on": ["b", "c"]},
            ]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
    let id = response.body["id"].as_str().unwrap().to_owned();
    browser.sign_in(&cluster.token).await;
    browser.visit(&format!("/ui/workflows/{id}")).await;
    let columns = browser
        .eval(
            "return [...document.querySelectorAll('.graph .column')]
                .map(c => [...c.querySelectorAll('[data-step]')].map(s => s.dataset.step));",
        )
        .await;
    assert_eq!(columns, json!([["a"], ["b", "c"], ["d"]]));
    assert_eq!(
        browser
            .find("[data-step=d]")
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("pending")
    );
    browser.wait_live().await;
    browser.mark_page().await;

    cluster.start_worker(&[]);
    browser
        .wait_text(
            "[data-step=d] .badge",
            "the last step completes on the page",
            |t| t == "completed",
        )
        .await;
    browser
        .wait_text("#phase", "the workflow's phase ends", |t| t == "ended")
        .await;
    assert!(browser.not_reloaded().await, "the page was reloaded");
    browser.screenshot("workflow").await;

    // The step's own page leads back to its workflow.
    browser.click("[data-step=b]").await;
    browser
        .wait_text("#summary", "the step names its workflow", |t| {
            t.contains("Step b of workflow")
        })
        .await;

    // The fleet's targets: the worker's target is online.
    browser.visit("/ui/workers").await;
    browser
        .wait_text(
            "#targets [data-target=local]",
            "the local target is online",
            |t| t.contains("online") && t.contains("1 of 1"),
        )
        .await;
}

#[tokio::test]
async fn a_migration_appears_on_its_page_and_its_progress_moves_without_a_reload() {
    use opsqueue_shared::config::DatabaseConfig;
    use opsqueue_shared::families::migration::Pm2Migration;
    use opsqueue_shared::families::pm2::ProcessName;
    use opsqueue_shared::names::{AbsolutePath, Label};
    use opsqueue_shared::store::{self, ClaimRequest, MigrationRow};
    use opsqueue_shared::time::{add_secs, now};

    // No monitor: its reaper must not hand back the step this test claims
    // for a worker that does not exist.
    let mut cluster = Cluster::new();
    cluster.start_api();
    let browser = Browser::start(&cluster).await;
    browser.sign_in(&cluster.token).await;
    browser.visit("/ui/migrations").await;
    browser
        .wait_text("#migrations tbody", "the empty page says so", |t| {
            t.contains("No migration yet")
        })
        .await;
    browser.wait_live().await;
    browser.mark_page().await;

    // Stored as POST /api/v1/migrations stores one (the route itself needs
    // two servers with pm2: tests/tests/e2e/migration.rs runs it whole).
    let db = opsqueue_shared::Store::open(&DatabaseConfig {
        path: cluster.db_path(),
        ..Default::default()
    })
    .unwrap();
    let id = opsqueue_shared::OperationId::new();
    let new = Pm2Migration {
        migration: id,
        name: ProcessName::parse("web").unwrap(),
        source: Label::parse("a").unwrap(),
        target: Label::parse("b").unwrap(),
        state_dir: AbsolutePath::parse("/srv/web/state").unwrap(),
        port: None,
        health_timeout_secs: 120,
    }
    .plan()
    .parse(Label::parse("api").unwrap())
    .unwrap()
    .prepare(now());
    let process = opsqueue_shared::families::migration::ProcessId::parse("pm2:web@a").unwrap();
    let row = MigrationRow::new(id, &process, "b", &new, now());
    db.write(|tx| store::migration_insert(tx, &row, &new))
        .unwrap();
    let steps = new.steps.len();
    browser
        .wait_text("#migrations tbody", "the stored migration appears", |t| {
            t.contains("pm2:web@a") && t.contains(&format!("0 of {steps}"))
        })
        .await;

    // Its first step is claimed on the source: the page names it running.
    let at = now();
    let claimed = db
        .write(|tx| {
            store::operation_claim(
                tx,
                &ClaimRequest {
                    worker_id: "worker-on-a",
                    targets: &["a".to_owned()],
                    sources: None,
                    limit: 1,
                    now: at,
                    lease_until: add_secs(at, 60.0),
                },
            )
        })
        .unwrap();
    assert_eq!(claimed.len(), 1);
    browser
        .wait_text("#migrations tbody", "the running step is named", |t| {
            t.contains(&format!("({})", claimed[0].step.as_deref().unwrap()))
        })
        .await;
    assert_eq!(
        browser
            .find(&format!("#migration-{id}"))
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("running")
    );
    assert!(browser.not_reloaded().await, "the page was reloaded");
    browser.screenshot("migrations").await;
}
