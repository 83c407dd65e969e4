//! The CloudPanel API end to end: the real binaries driven over
//! `/api/v1/cloudpanel`, with `[cloudpanel] clpctl` pointed at the stand-in
//! `tests/fakes/clpctl` (CloudPanel's clpctl cannot be installed here; the
//! stand-in records its calls and echoes its arguments, passwords included).
//! No password may appear in any API answer or any log line.

use std::path::{Path, PathBuf};

use opsqueue_tests::{Cluster, Response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Clpctl {
    dir: tempfile::TempDir,
}

impl Clpctl {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn configure(&self, cluster: &mut Cluster) {
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes/clpctl");
        let argv = json!([
            "env",
            format!(
                "CLPCTL_STANDIN_DIR={}",
                self.dir.path().join("state").display()
            ),
            format!("CLPCTL_STANDIN_HOME={}", self.home().display()),
            std::fs::canonicalize(program).unwrap(),
        ]);
        cluster.set_env("OPSQUEUE_CLOUDPANEL__ENABLED", "true");
        cluster.set_env("OPSQUEUE_CLOUDPANEL__CLPCTL", argv);
        cluster.set_env("OPSQUEUE_CLOUDPANEL__HOME_DIR", self.home().display());
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/calls.jsonl")).unwrap_or_default()
    }
}

#[tokio::test]
async fn no_password_shows_in_any_answer_or_log_line() {
    let clpctl = Clpctl::new();
    let mut cluster = Cluster::new();
    clpctl.configure(&mut cluster);
    cluster.start_api();
    cluster.start_worker(&[]);
    let passwords = ["Site-pass-31337", "Db-pass-27182", "User-pass-16180"];
    let mut answers: Vec<String> = Vec::new();
    let mut keep = |response: &Response| answers.push(response.body.to_string());

    let requests = [
        (
            Method::POST,
            "/api/v1/cloudpanel/sites".to_owned(),
            Some(json!({
            "site_type": "nodejs", "domain": "app.example.com", "site_user": "app",
            "site_user_password": passwords[0], "nodejs_version": "22", "app_port": 3000})),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/databases".to_owned(),
            Some(json!({
            "domain": "app.example.com", "database_name": "app", "database_user_name": "app",
            "database_user_password": passwords[1]})),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/users".to_owned(),
            Some(json!({
            "user_name": "ops", "email": "ops@example.com", "first_name": "Ops", "last_name": "Team",
            "password": passwords[2], "role": "site-manager", "sites": ["app.example.com"]})),
        ),
        (
            Method::DELETE,
            "/api/v1/cloudpanel/users/ops".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/cloudpanel/sites/app.example.com".to_owned(),
            None,
        ),
    ];
    let mut ids = Vec::new();
    for (method, path, body) in requests {
        let response = cluster.request(method.clone(), &path, body).await;
        keep(&response);
        assert_eq!(
            response.status,
            StatusCode::ACCEPTED,
            "{method} {path}: {:?}",
            response.body
        );
        let id = response.body["id"].as_str().unwrap().to_owned();
        let op = cluster.wait_terminal(&id).await;
        assert_eq!(op["status"], "completed", "{path}: {op:#}");
        assert_eq!(op["result"]["changed"], true, "{path}: {op:#}");
        ids.push(id);
    }
    assert!(!clpctl.home().join("app").exists(), "the site was deleted");
    for id in &ids {
        let op = cluster.get(&format!("/api/v1/operations/{id}")).await;
        keep(&op);
        let logs = cluster.get(&format!("/api/v1/operations/{id}/logs")).await;
        assert!(logs.body["items"].as_array().is_some_and(|l| !l.is_empty()));
        keep(&logs);
    }
    let listed = cluster.get("/api/v1/operations?limit=500").await;
    keep(&listed);
    assert_eq!(
        listed.body["items"][4]["payload"]["site_user_password"],
        "***"
    );

    let calls = clpctl.calls();
    for password in passwords {
        assert!(
            calls.contains(password),
            "clpctl never got {password}: the search proves nothing"
        );
        for answer in &answers {
            assert!(!answer.contains(password), "{password} shown: {answer}");
        }
    }
    let stored: Vec<String> = {
        let db = cluster.sqlite();
        let mut stmt = db.prepare("SELECT line FROM operation_logs").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for line in &stored {
        for password in passwords {
            assert!(
                !line.contains(password),
                "{password} in a stored log line: {line}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_cloudpanel_request_is_a_4xx_and_stores_nothing() {
    let clpctl = Clpctl::new();
    let mut cluster = Cluster::new();
    clpctl.configure(&mut cluster);
    cluster.start_api();
    let (certificate, key) = certificate_and_key("ok.example.com");
    let key_body = key_body(&key);
    let site = |field: &str, value: Value| {
        let mut body = json!({"site_type": "static", "domain": "ok.example.com", "site_user": "ok",
                              "site_user_password": "Good-pass-1"});
        body[field] = value;
        Some(body)
    };
    let refused = [
        (
            Method::POST,
            "/api/v1/cloudpanel/sites",
            site("domain", json!("-x.example.com")),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites",
            site("site_user", json!("a;rm -rf /")),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites",
            site("site_user_password", json!("short")),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites",
            site("site_type", json!("perl")),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites",
            site("app_port", json!(3000)),
        ),
        (
            Method::DELETE,
            "/api/v1/cloudpanel/sites/bad_domain.com",
            None,
        ),
        (Method::DELETE, "/api/v1/cloudpanel/users/-x", None),
        (
            Method::POST,
            "/api/v1/cloudpanel/users",
            Some(json!({"user_name": "x"})),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites/ok.example.com/certificate",
            Some(
                json!({"source": "upload", "certificate": "not a certificate",
                        "private_key": NOT_A_KEY}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites/ok.example.com/certificate",
            Some(
                json!({"source": "upload", "certificate": certificate.clone(),
                        "private_key": NOT_A_KEY}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites/ok.example.com/certificate",
            Some(
                json!({"source": "upload", "certificate": key.clone(), "private_key": key.clone()}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites/ok.example.com/certificate",
            Some(json!({"source": "lets-encrypt", "subject_alternative_names": ["a b.com"]})),
        ),
        (
            Method::POST,
            "/api/v1/cloudpanel/sites/bad_domain.com/certificate",
            Some(json!({"source": "lets-encrypt"})),
        ),
    ];
    for (method, path, body) in refused {
        let response = cluster.request(method.clone(), path, body.clone()).await;
        assert!(
            response.status.is_client_error(),
            "{method} {path} {body:?}: {} {:?}",
            response.status,
            response.body
        );
        response.assert_problem("invalid_payload", &format!("{method} {path} {body:?}"));
        for secret in ["short\"", NOT_A_KEY, key_body] {
            assert!(
                !response.body.to_string().contains(secret),
                "{:?}",
                response.body
            );
        }
    }
    let listed = cluster.get("/api/v1/operations").await;
    assert_eq!(listed.body["items"], json!([]));
    assert_eq!(clpctl.calls(), "", "clpctl ran for a refused request");
}

/// The item of `list` named `name`.
fn item<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|item| item["name"] == name)
}

#[tokio::test]
async fn sites_databases_and_users_are_listed_from_the_last_refresh_and_the_monitor_keeps_one() {
    let clpctl = Clpctl::new();
    let mut cluster = Cluster::new();
    clpctl.configure(&mut cluster);
    cluster.start_all();
    for (path, body) in [
        (
            "/api/v1/cloudpanel/sites",
            json!({"site_type": "static", "domain": "www.example.org", "site_user": "web",
                   "site_user_password": "Site-pass-1"}),
        ),
        (
            "/api/v1/cloudpanel/databases",
            json!({"domain": "www.example.org", "database_name": "shop", "database_user_name": "shop",
                   "database_user_password": "Db-pass-1"}),
        ),
        (
            "/api/v1/cloudpanel/users",
            json!({"user_name": "ops", "email": "ops@example.com", "first_name": "Ops",
                   "last_name": "Team", "password": "User-pass-1", "role": "user",
                   "sites": ["www.example.org"]}),
        ),
    ] {
        let op = cluster.accepted(Method::POST, path, Some(body)).await;
        assert_eq!(op["status"], "completed", "{path}: {op:#}");
    }
    // A site CloudPanel made without opsqueue is observed too.
    std::fs::create_dir_all(clpctl.home().join("blog/htdocs/blog.example.net")).unwrap();

    let refresh = cluster
        .accepted(Method::POST, "/api/v1/cloudpanel/refresh", None)
        .await;
    assert_eq!(refresh["status"], "completed", "{refresh:#}");
    assert_eq!(refresh["result"]["sites"], 2, "{refresh:#}");
    assert_eq!(refresh["result"]["users"], 1, "{refresh:#}");

    let sites = cluster.get("/api/v1/cloudpanel/sites").await;
    assert_eq!(sites.status, StatusCode::OK, "{:?}", sites.body);
    let ours = item(&sites.body, "www.example.org").expect("the site opsqueue added");
    assert_eq!(ours["site_user"], "web", "{ours}");
    assert_eq!(ours["managed"]["spec"]["site_type"], "static", "{ours}");
    assert!(
        ours["managed"]["spec"].get("site_user_password").is_none(),
        "{ours}"
    );
    assert!(ours["observed_at"].is_string(), "{ours}");
    let theirs = item(&sites.body, "blog.example.net").expect("the site made behind opsqueue");
    assert_eq!(theirs["site_user"], "blog", "{theirs}");
    assert!(theirs["managed"].is_null(), "{theirs}");

    let databases = cluster.get("/api/v1/cloudpanel/databases").await;
    let shop = item(&databases.body, "shop").expect("the database opsqueue added");
    assert_eq!(
        shop["managed"]["spec"]["domain"], "www.example.org",
        "{shop}"
    );
    assert!(!databases.body.to_string().contains("Db-pass-1"));

    let users = cluster.get("/api/v1/cloudpanel/users").await;
    let ops = item(&users.body, "ops").expect("the panel user");
    assert_eq!(ops["email"], "ops@example.com", "{ops}");
    assert_eq!(ops["role"], "user", "{ops}");
    assert!(!users.body.to_string().contains("User-pass-1"));

    // The monitor keeps refresh-cloudpanel while the family is on.
    let deadline = std::time::Instant::now() + opsqueue_tests::DEADLINE;
    loop {
        let schedule = cluster.get("/api/v1/schedules/refresh-cloudpanel").await;
        if schedule.status == StatusCode::OK {
            assert_eq!(
                schedule.body["type"], "cloudpanel.list",
                "{:?}",
                schedule.body
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh-cloudpanel schedule"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What a refused private key held; no answer may repeat it.
const NOT_A_KEY: &str = "secret-not-a-key-271828";

/// A self-signed certificate and its key for `name`, in PEM.
fn certificate_and_key(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .expect("a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// The first base64 line of a PEM key: what would show if it leaked.
fn key_body(key: &str) -> &str {
    key.lines()
        .find(|l| !l.starts_with("-----"))
        .expect("the key's base64")
}

#[tokio::test]
async fn a_certificate_is_installed_over_http_and_its_key_shows_nowhere() {
    let clpctl = Clpctl::new();
    let mut cluster = Cluster::new();
    clpctl.configure(&mut cluster);
    cluster.start_api();
    cluster.start_worker(&[]);
    let (certificate, key) = certificate_and_key("shop.example.com");
    let mut answers: Vec<String> = Vec::new();

    let mut ids = Vec::new();
    for (path, body) in [
        (
            "/api/v1/cloudpanel/sites",
            json!({"site_type": "static", "domain": "shop.example.com", "site_user": "shop",
                   "site_user_password": "Site-pass-31337"}),
        ),
        (
            "/api/v1/cloudpanel/sites/shop.example.com/certificate",
            json!({"source": "upload", "certificate": certificate, "private_key": key}),
        ),
        (
            "/api/v1/cloudpanel/sites/shop.example.com/certificate",
            json!({"source": "lets-encrypt", "subject_alternative_names": ["www.shop.example.com"]}),
        ),
    ] {
        let response = cluster.request(Method::POST, path, Some(body)).await;
        answers.push(response.body.to_string());
        let id = response.accepted_id(path);
        let op = cluster.wait_terminal(&id).await;
        assert_eq!(op["status"], "completed", "{path}: {op:#}");
        answers.push(op.to_string());
        ids.push(id);
    }
    let upload = cluster.operation(&ids[1]).await;
    assert_eq!(upload["type"], "cloudpanel.certificate.install");
    assert_eq!(upload["payload"]["private_key"], "***");
    assert_eq!(upload["result"]["source"], "upload");
    assert!(
        clpctl
            .calls()
            .contains("--subjectAlternativeName=www.shop.example.com"),
        "{}",
        clpctl.calls()
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(clpctl.dir.path().join("state/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["sites"]["shop.example.com"]["certificate"]["type"], "lets-encrypt",
        "the second install replaced the first"
    );

    for id in &ids {
        answers.push(
            cluster
                .get(&format!("/api/v1/operations/{id}/logs"))
                .await
                .body
                .to_string(),
        );
    }
    answers.push(
        cluster
            .get("/api/v1/operations?limit=500")
            .await
            .body
            .to_string(),
    );
    let db = cluster.sqlite();
    for table in [
        "events",
        "operation_logs",
        "observations",
        "managed_objects",
    ] {
        let rows: Vec<String> = db
            .prepare(&format!("SELECT * FROM {table}"))
            .unwrap()
            .query_map([], |row| {
                let count = row.as_ref().column_count();
                Ok((0..count)
                    .map(|i| match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!rows.is_empty() || table != "events", "no events recorded");
        answers.extend(rows);
    }
    let procs = cluster.api.iter().chain(&cluster.workers);
    answers.extend(procs.map(|proc| proc.log_text()));
    answers.push(clpctl.calls());
    let body = key_body(&key);
    for text in &answers {
        assert!(!text.contains(body), "the private key shows: {text}");
    }
}
