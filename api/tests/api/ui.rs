//! The dashboard over plain HTTP (the browser tests in `tests/` drive it in
//! chromium): sign-in and its cookie, expiry and revocation, every page,
//! the fire form's refusals, schedule edits, escaping and the headers
//! every page carries.

use std::time::Duration;

use opsqueue_shared::store::{
    LogLine, Stream, api_key_revoke, operation_log_append, schedule_get, schedule_insert,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::helpers::{TestApp, id_of, spawn_app, spawn_app_with};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in session: its cookie header and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, token: &str) -> Session {
    let response = client()
        .post(app.url("/ui/login"))
        .form(&[("key", token), ("next", "/ui/operations")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/operations");
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = get(app, &cookie, "/ui").await;
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries the CSRF token")
        .to_owned();
    Session { cookie, csrf }
}

async fn get_response(app: &TestApp, cookie: &str, path: &str) -> reqwest::Response {
    client()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, cookie: &str, path: &str) -> String {
    let response = get_response(app, cookie, path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

async fn post_form(
    app: &TestApp,
    session: &Session,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut fields = form.to_vec();
    fields.push(("csrf", &session.csrf));
    client()
        .post(app.url(path))
        .header("cookie", &session.cookie)
        .form(&fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_session_cookie_is_http_only_same_site_strict_and_secure_behind_tls() {
    let app = spawn_app().await;
    let response = client()
        .post(app.url("/ui/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("key", app.read.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Secure",
        "Max-Age=",
    ] {
        assert!(cookie.contains(part), "{part} missing in {cookie}");
    }
    assert!(
        !cookie.contains(&app.read),
        "the key itself went into the cookie"
    );

    let plain = client()
        .post(app.url("/ui/login"))
        .form(&[("key", app.read.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = plain.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        !cookie.contains("Secure"),
        "Secure over plain HTTP: {cookie}"
    );
}

#[tokio::test]
async fn a_sign_in_with_a_wrong_key_or_from_another_site_makes_no_session() {
    let app = spawn_app().await;
    let wrong = client()
        .post(app.url("/ui/login"))
        .form(&[("key", "oq_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(wrong.text().await.unwrap().contains("unknown or revoked"));

    let forged = client()
        .post(app.url("/ui/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("key", app.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());
    let forged = client()
        .post(app.url("/ui/login"))
        .header("origin", "https://evil.example")
        .form(&[("key", app.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_session_ends_when_it_expires_when_its_key_is_revoked_and_when_it_signs_out() {
    let app = spawn_app_with(|config| config.api.session_secs = 1).await;
    let session = sign_in(&app, &app.write).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = get_response(&app, &session.cookie, "/ui/operations").await;
    assert_eq!(expired.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        expired.headers()[LOCATION],
        "/ui/login?next=%2Fui%2Foperations"
    );
    let api = get_response(&app, &session.cookie, "/api/v1/operations").await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    let app = spawn_app().await;
    let (_, token) = crate::helpers::make_key(
        &app.store,
        "person",
        &[opsqueue_shared::store::Scope::Write],
        None,
    );
    let session = sign_in(&app, &token).await;
    get(&app, &session.cookie, "/ui/operations").await;
    app.store
        .write(|tx| api_key_revoke(tx, "person", opsqueue_shared::time::now()))
        .unwrap();
    let revoked = get_response(&app, &session.cookie, "/api/v1/operations").await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);

    let session = sign_in(&app, &app.read).await;
    let out = post_form(&app, &session, "/ui/logout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let gone = get_response(&app, &session.cookie, "/ui").await;
    assert_eq!(
        gone.status(),
        StatusCode::SEE_OTHER,
        "the session outlived its sign-out"
    );
}

#[tokio::test]
async fn every_page_renders_with_its_security_headers_and_a_disabled_family_says_so() {
    let app = spawn_app_with(|config| config.pm2.enabled = true).await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let session = sign_in(&app, &app.admin).await;
    for (path, heading) in [
        ("/ui", "Overview"),
        ("/ui/operations", "Operations"),
        ("/ui/operations?status=pending&since=1h", "Operations"),
        (&format!("/ui/operations/{id}") as &str, "diag.noop"),
        ("/ui/fire", "Fire an operation"),
        ("/ui/schedules", "Schedules"),
        ("/ui/workers", "Workers"),
        ("/ui/migrations", "Migrations"),
        ("/ui/families/pm2", "pm2 on local"),
        ("/ui/families/systemd", "systemd on local"),
        ("/ui/families/caddy", "Caddy on local"),
        ("/ui/families/proxmox?target=web-2", "Proxmox on web-2"),
        ("/ui/families/pocketbase", "PocketBase on local"),
        ("/ui/pocketbase/create", "Create a PocketBase service"),
    ] {
        let response = get_response(&app, &session.cookie, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let policy = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!("<h1>{heading}")),
            "{path} has no heading {heading:?}"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{path} links another origin"
        );
    }
    let pm2 = get(&app, &session.cookie, "/ui/families/pm2").await;
    assert!(
        pm2.contains("pm2.list"),
        "the refresh button fires pm2.list"
    );
    let systemd = get(&app, &session.cookie, "/ui/families/systemd").await;
    assert!(systemd.contains("The systemd family is off"));
    assert!(
        systemd.contains(r#"href="/ui/families/pm2""#)
            && !systemd.contains(r#"href="/ui/families/pocketbase""#),
        "the navigation links only the enabled families"
    );
    let bad = get_response(&app, &session.cookie, "/ui/operations?status=exploded").await;
    assert_eq!(bad.status(), StatusCode::OK);
    assert!(bad.text().await.unwrap().contains("unknown status"));
    for asset in ["/ui/assets/app.css", "/ui/assets/app.js"] {
        let response = client().get(app.url(asset)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{asset} needs no session"
        );
    }
}

#[tokio::test]
async fn what_an_operation_printed_is_shown_as_text_never_as_markup() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let claimed = app.claim("w1");
    let line = LogLine {
        at: opsqueue_shared::time::now(),
        stream: Stream::Stdout,
        line: "<script>alert('owned')</script>".into(),
    };
    app.store
        .write(|tx| {
            operation_log_append(
                tx,
                &claimed[0].fence().unwrap(),
                std::slice::from_ref(&line),
                1 << 20,
            )
        })
        .unwrap();
    let session = sign_in(&app, &app.read).await;
    let page = get(&app, &session.cookie, &format!("/ui/operations/{id}")).await;
    assert!(page.contains("&lt;script&gt;alert('owned')&lt;/script&gt;"));
    assert!(!page.contains("<script>alert"));
}

#[tokio::test]
async fn the_fire_form_enqueues_like_the_api_and_shows_its_refusals_by_field() {
    let app = spawn_app().await;
    let session = sign_in(&app, &app.write).await;
    let refused = post_form(
        &app,
        &session,
        "/ui/fire",
        &[
            ("type", "diag.sleep"),
            ("payload", r#"{"seconds": 1}"#),
            ("max_attempts", "0"),
        ],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = refused.text().await.unwrap();
    assert!(page.contains("must be between 1 and"), "{page}");
    assert_eq!(app.count_operations(), 0, "a refused form stored something");

    let unknown = post_form(&app, &session, "/ui/fire", &[("type", "nope.never")]).await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("unknown operation type")
    );

    let fired = post_form(
        &app,
        &session,
        "/ui/fire",
        &[
            ("type", "diag.sleep"),
            ("payload", r#"{"seconds": 1}"#),
            ("priority", "2"),
        ],
    )
    .await;
    assert_eq!(fired.status(), StatusCode::SEE_OTHER);
    let location = fired.headers()[LOCATION].to_str().unwrap().to_owned();
    let id = location.strip_prefix("/ui/operations/").unwrap();
    let op = app.operation(id).await;
    assert_eq!(
        (op["type"].as_str(), op["priority"].as_i64()),
        (Some("diag.sleep"), Some(2))
    );
    assert_eq!(op["source"], "api", "the same source rules as the API");
}

#[tokio::test]
async fn a_schedule_s_cron_is_edited_and_it_is_turned_off_through_the_api_s_checks() {
    let app = spawn_app().await;
    let now = opsqueue_shared::time::now();
    app.store
        .write(|tx| {
            schedule_insert(
                tx,
                &opsqueue_shared::store::Schedule {
                    name: "nightly".into(),
                    cron: "0 3 * * *".into(),
                    kind: "diag.noop".into(),
                    payload: json!({}),
                    target: "local".into(),
                    priority: 5,
                    timeout_secs: None,
                    max_attempts: None,
                    enabled: true,
                    last_fire_at: Some(now),
                    created_at: now,
                    updated_at: now,
                },
            )
        })
        .unwrap();
    let session = sign_in(&app, &app.admin).await;
    let refused = post_form(
        &app,
        &session,
        "/ui/schedules/nightly",
        &[("cron", "every night")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("cron"));

    let saved = post_form(
        &app,
        &session,
        "/ui/schedules/nightly",
        &[("cron", "30 4 * * *")],
    )
    .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let off = post_form(
        &app,
        &session,
        "/ui/schedules/nightly",
        &[("enabled", "false")],
    )
    .await;
    assert_eq!(off.status(), StatusCode::SEE_OTHER);
    let stored = app
        .store
        .read(|c| schedule_get(c, "nightly"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.cron.as_str(), stored.enabled),
        ("30 4 * * *", false)
    );
}

#[tokio::test]
async fn the_pocketbase_create_form_makes_nothing_until_a_worker_has_validated_it() {
    let app = spawn_app_with(|config| {
        config.systemd.enabled = true;
        config.pocketbase.enabled = true;
        config.api.max_wait_secs = 1;
    })
    .await;
    let session = sign_in(&app, &app.write).await;
    let form = [("name", "my-app"), ("version", "0.40.6")];
    let refused = post_form(&app, &session, "/ui/pocketbase/create", &form).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = refused.text().await.unwrap();
    assert!(page.contains(r#"id="port-error""#), "{page}");
    assert_eq!(app.count_operations(), 0, "a refused form stored something");

    // No worker validates it: the form says so and nothing is created.
    let form = [
        ("name", "my-app"),
        ("port", "8090"),
        ("version", "0.40.6"),
        ("superuser_email", "admin@example.com"),
        ("superuser_password", "a-Secret-Passw0rd"),
    ];
    let waited = post_form(&app, &session, "/ui/pocketbase/create", &form).await;
    assert_eq!(waited.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = waited.text().await.unwrap();
    assert!(
        page.contains("no worker of this target finished the validation"),
        "{page}"
    );
    assert!(
        !page.contains("a-Secret-Passw0rd"),
        "the page shows the password"
    );
    assert!(page.contains(r#"value="my-app""#), "what was typed is kept");
    let operations = app.get("/api/v1/operations").await;
    let operations: serde_json::Value = operations.json().await.unwrap();
    let items = operations["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{operations:#}");
    assert_eq!(items[0]["type"], "pocketbase.validate");
    assert_eq!(items[0]["status"], "pending");
    let workflows: serde_json::Value = app.get("/api/v1/workflows").await.json().await.unwrap();
    assert_eq!(workflows["items"], json!([]), "a workflow was made");
}

#[tokio::test]
async fn the_migrations_page_shows_each_migration_as_the_api_does_with_its_steps_done() {
    use opsqueue_shared::families::migration::Pm2Migration;
    use opsqueue_shared::names::{AbsolutePath, Label};
    use opsqueue_shared::store::{MigrationRow, migration_insert};
    use opsqueue_shared::time::now;

    let app = spawn_app().await;
    let session = sign_in(&app, &app.read).await;
    let empty = get(&app, &session.cookie, "/ui/migrations").await;
    assert!(empty.contains("No migration yet."), "{empty}");

    // Stored as POST /api/v1/migrations stores one.
    let id = opsqueue_shared::OperationId::new();
    let new = Pm2Migration {
        migration: id,
        name: opsqueue_shared::families::pm2::ProcessName::parse("web").unwrap(),
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
    let workflow = new.parent.id.to_string();
    let steps = new.steps.len();
    let process = opsqueue_shared::families::migration::ProcessId::parse("pm2:web@a").unwrap();
    let row = MigrationRow::new(id, &process, "b", &new, now());
    app.store
        .write(|tx| migration_insert(tx, &row, &new))
        .unwrap();

    let api = app
        .client
        .get(app.url("/api/v1/migrations"))
        .bearer_auth(&app.read)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let status = api[0]["status"].as_str().unwrap().to_owned();
    let page = get(&app, &session.cookie, "/ui/migrations").await;
    for shown in [
        "pm2:web@a".to_owned(),
        "a → b".to_owned(),
        format!(r#"href="/ui/workflows/{workflow}""#),
        format!(r#"data-status="{status}""#),
        format!("0 of {steps}"),
        r#"data-src="/ui/migrations/rows""#.to_owned(),
        "type=migration.*".to_owned(),
    ] {
        assert!(page.contains(&shown), "the page lacks {shown:?}: {page}");
    }
    let rows = get(&app, &session.cookie, "/ui/migrations/rows").await;
    assert!(
        rows.trim_start().starts_with("<tr") && rows.contains(&format!("migration-{id}")),
        "{rows}"
    );
    assert!(!rows.contains("<html"), "the rows come alone: {rows}");
}
