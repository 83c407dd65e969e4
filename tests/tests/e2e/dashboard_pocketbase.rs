//! The dashboard's PocketBase page in a real browser (see `dashboard.rs`)
//! against the real family: the real binaries, PocketBase, a `systemd
//! --user` manager and Caddy, as the pocketbase tests run them (their
//! [`Host`]). Services are made through the page's create form (which runs
//! `pocketbase.validate` on the worker first) or, where the test is about
//! something else, through `POST /api/v1/pocketbase/services`.

use opsqueue_tests::browser::Browser;
use opsqueue_tests::pocketbase::binary;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::dashboard::{cookie_client, session_of};
use super::pocketbase::{Host, VERSION, free_port};

const PASSWORD: &str = "dashboard-Secret-Passw0rd";
const UNIT: &str = "pocketbase-my-app.service";

/// A host with the real family and a cached version, and a browser.
async fn host_and_browser() -> (Host, Browser) {
    let host = Host::start();
    host.install_version(VERSION, &binary()).await;
    let browser = Browser::start(&host.cluster).await;
    (host, browser)
}

/// Opens the create form, fills `fields` and sends it.
async fn submit_create(browser: &Browser, fields: &[(&str, &str)]) {
    browser.visit("/ui/pocketbase/create").await;
    for (name, value) in fields {
        browser.fill(&format!("#create [name={name}]"), value).await;
    }
    browser.click("#create button[type=submit]").await;
}

async fn items(host: &Host, path: &str) -> Vec<Value> {
    let answer = host.cluster.get(path).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:#}", answer.body);
    answer.body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_service_made_from_the_form_is_validated_first_then_listed_with_buttons_that_fire_its_operations()
 {
    let (host, browser) = host_and_browser().await;
    browser.sign_in(&host.cluster.token).await;
    browser.click("nav a[href='/ui/families/pocketbase']").await;
    assert_eq!(browser.text("main h1").await, "PocketBase on local");
    browser.click("a[href^='/ui/pocketbase/create']").await;
    let port = free_port().to_string();
    submit_create(
        &browser,
        &[
            ("name", "my-app"),
            ("port", &port),
            ("version", VERSION),
            ("description", "Made from the dashboard"),
            ("superuser_email", "admin@example.com"),
            ("superuser_password", PASSWORD),
        ],
    )
    .await;

    // The host's check ran and found nothing wrong; then the workflow was
    // made, and its page is where the form leads.
    browser.find("#phase").await;
    let path = browser.path().await;
    let workflow = path
        .strip_prefix("/ui/workflows/")
        .unwrap_or_else(|| panic!("the form led to {path}"))
        .to_owned();
    let validations = items(&host, "/api/v1/operations?type=pocketbase.validate").await;
    assert_eq!(validations.len(), 1, "{validations:#?}");
    assert_eq!(validations[0]["status"], "completed");
    let validation = host
        .cluster
        .operation(validations[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(validation["result"]["valid"], true, "{validation:#}");
    assert_eq!(validation["payload"]["superuser_password"], "***");
    browser
        .wait_text("#phase", "the create workflow ends", |t| t == "ended")
        .await;
    let view = host
        .cluster
        .get(&format!("/api/v1/workflows/{workflow}"))
        .await
        .body;
    assert_eq!(
        view["status"],
        "completed",
        "{view:#}\n{}",
        host.cluster.logs_tail()
    );
    assert_eq!(view["name"], "pocketbase-create-my-app");
    let time = |value: &Value| {
        value
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .unwrap_or_else(|| panic!("not a time: {value}"))
    };
    assert!(
        time(&validation["finished_at"]) <= time(&view["created_at"]),
        "the workflow was made before its validation ended: {validation:#} {view:#}"
    );

    // Listed as observed, its secret nowhere on the page.
    browser.visit("/ui/families/pocketbase").await;
    let row = browser.text("tr[data-name=my-app]").await;
    for shown in ["my-app", port.as_str(), VERSION, "active", "healthy"] {
        assert!(row.contains(shown), "{shown:?} is not in the row: {row}");
    }
    let page = browser
        .eval("return document.documentElement.outerHTML;")
        .await;
    assert!(
        !page.as_str().unwrap().contains(PASSWORD),
        "the page shows the password"
    );
    browser.screenshot("pocketbase").await;

    // Stop asks first, then fires pocketbase.stop and shows its operation.
    let stop = "tr[data-name=my-app] form:has(input[value='pocketbase.stop']) button";
    browser.click(stop).await;
    browser.client.dismiss_alert().await.unwrap();
    assert_eq!(browser.path().await, "/ui/families/pocketbase");
    browser.click(stop).await;
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_text("#summary .badge", "the stop completes", |t| {
            t == "completed"
        })
        .await;
    let stopped = browser.path().await;
    let id = stopped.strip_prefix("/ui/operations/").unwrap();
    let operation = host.cluster.operation(id).await;
    assert_eq!(operation["type"], "pocketbase.stop");
    assert_eq!(operation["payload"], json!({"name": "my-app"}));
    assert_eq!(host.manager.property(UNIT, "ActiveState"), "inactive");
    browser.visit("/ui/families/pocketbase").await;
    browser
        .wait_text("tr[data-name=my-app]", "the row says it stopped", |t| {
            t.contains("inactive")
        })
        .await;

    // Delete asks first, then runs the delete workflow and shows it.
    browser
        .click("tr[data-name=my-app] form[action$='/delete'] button")
        .await;
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_text("#phase", "the delete workflow ends", |t| t == "ended")
        .await;
    let deleted = browser.path().await;
    let delete = deleted.strip_prefix("/ui/workflows/").unwrap();
    let view = host
        .cluster
        .get(&format!("/api/v1/workflows/{delete}"))
        .await
        .body;
    assert_eq!(view["status"], "completed", "{view:#}");
    let gone = host.cluster.get("/api/v1/pocketbase/services/my-app").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:#}", gone.body);
}

#[tokio::test]
async fn the_create_form_shows_each_refusal_beside_its_field_and_makes_nothing() {
    let (host, browser) = host_and_browser().await;
    browser.sign_in(&host.cluster.token).await;

    // Refused by the parse, before anything is stored.
    submit_create(
        &browser,
        &[("name", "My App"), ("port", "8090"), ("version", VERSION)],
    )
    .await;
    browser
        .wait_text("#name-error", "the name is refused", |t| !t.is_empty())
        .await;
    submit_create(
        &browser,
        &[("name", "my-app"), ("port", "80"), ("version", VERSION)],
    )
    .await;
    browser
        .wait_text("#port-error", "a privileged port is refused", |t| {
            t.contains("between 1024 and 65535")
        })
        .await;
    assert_eq!(
        browser.value("#create [name=name]").await.as_deref(),
        Some("my-app")
    );
    let before = items(&host, "/api/v1/operations").await;
    assert!(
        before
            .iter()
            .all(|op| op["type"] == "pocketbase.version.install"),
        "a refused form stored an operation: {before:#?}"
    );

    // Refused by the host's check: a port in use, a version not cached.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    submit_create(
        &browser,
        &[("name", "my-app"), ("port", &port), ("version", "0.0.1")],
    )
    .await;
    browser
        .wait_text("#port-error", "the port in use is said", |t| {
            t.contains("already in use")
        })
        .await;
    assert!(
        browser
            .text("#version-error")
            .await
            .contains("not in the version cache")
    );
    assert!(browser.has("#validation a[href^='/ui/operations/']").await);
    browser.screenshot("pocketbase-create-refused").await;
    let validations = items(&host, "/api/v1/operations?type=pocketbase.validate").await;
    assert_eq!(validations.len(), 1, "{validations:#?}");
    assert_eq!(
        items(&host, "/api/v1/workflows").await,
        Vec::<Value>::new(),
        "a refused form made a workflow"
    );
    assert!(!host.manager.unit_dir().join(UNIT).exists());
}

#[tokio::test]
async fn a_read_key_sees_the_services_without_buttons_and_its_posts_are_refused() {
    let (host, browser) = host_and_browser().await;
    let port = free_port();
    let view = host
        .create(json!({"name": "my-app", "port": port, "version": VERSION}))
        .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    let read = host.cluster.create_key("viewer", "read");
    browser.sign_in(&read).await;
    browser.visit("/ui/families/pocketbase").await;
    assert!(
        browser
            .text("tr[data-name=my-app]")
            .await
            .contains("active")
    );
    let changing = browser
        .eval("return document.querySelectorAll('main form[method=post]').length;")
        .await;
    assert_eq!(changing, json!(0), "a read key sees a button");
    assert!(
        !browser.has("a[href^='/ui/pocketbase/create']").await,
        "a read key sees the create form's link"
    );
    browser.screenshot("pocketbase-read-only").await;

    let (cookie, csrf) = session_of(&browser).await;
    let base = &host.cluster.api_url;
    for (path, form) in [
        ("/ui/pocketbase/services/my-app/delete", vec![]),
        (
            "/ui/pocketbase/create",
            vec![("name", "other"), ("port", "9999"), ("version", VERSION)],
        ),
        (
            "/ui/fire",
            vec![
                ("type", "pocketbase.stop"),
                ("payload", r#"{"name": "my-app"}"#),
            ],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let refused = cookie_client()
            .post(format!("{base}{path}"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(host.manager.property(UNIT, "ActiveState"), "active");
    assert_eq!(items(&host, "/api/v1/workflows").await.len(), 1);
}
