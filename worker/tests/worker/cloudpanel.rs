//! The cloudpanel driver against the clpctl stand-in (`tests/fakes/clpctl`:
//! CloudPanel's clpctl cannot be installed here). The stand-in records every
//! call's argument vector and stdin, keeps sites as directories under a home
//! directory as CloudPanel does, and prints its whole argument vector,
//! passwords included, so that redaction is put to the test.

use std::path::{Path, PathBuf};

use opsqueue_shared::store::managed_list;
use opsqueue_shared::{Config, Status};
use serde_json::{Value, json};

use crate::conformance::{Call, Slow, Subject, conforms};
use crate::{TestApp, changed, error_code, run_on};

/// The stand-in with its own state and home directories.
pub struct ClpctlFixture {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl ClpctlFixture {
    pub fn new() -> Self {
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fakes/clpctl");
        let program = std::fs::canonicalize(&program)
            .unwrap_or_else(|e| panic!("the clpctl stand-in {}: {e}", program.display()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir, program }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `[cloudpanel] clpctl` reaching the stand-in, with `extra` variables.
    pub fn argv(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "env".to_owned(),
            format!("CLPCTL_STANDIN_DIR={}", self.state().display()),
            format!("CLPCTL_STANDIN_HOME={}", self.home().display()),
            "CLPCTL_STANDIN_SLOW_DOMAIN=slow.example.com".to_owned(),
        ];
        argv.extend(extra.iter().map(|e| (*e).to_owned()));
        argv.push(self.program.display().to_string());
        argv
    }

    pub fn configure(&self, config: &mut Config) {
        config.cloudpanel.enabled = true;
        config.cloudpanel.clpctl = self.argv(&[]);
        config.cloudpanel.home_dir = self.home();
    }

    /// Every call the stand-in received: `{argv, stdin, stdin_at_eof}`.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The calls of one clpctl command.
    pub fn calls_of(&self, command: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["argv"][0] == command)
            .collect()
    }
}

pub fn static_site(domain: &str, user: &str, password: &str) -> Value {
    json!({"site_type": "static", "domain": domain, "site_user": user,
           "site_user_password": password})
}

impl Subject for ClpctlFixture {
    async fn start(_dir: &Path) -> Self {
        ClpctlFixture::new()
    }

    fn configure(&self, config: &mut Config) {
        ClpctlFixture::configure(self, config);
    }

    fn refused(&self) -> Vec<Call> {
        vec![
            (
                "cloudpanel.site.add",
                static_site("-x.com", "u", "password1"),
            ),
            (
                "cloudpanel.site.add",
                static_site("a;b.com", "u", "password1"),
            ),
            (
                "cloudpanel.site.add",
                static_site("x.com", "../u", "password1"),
            ),
            (
                "cloudpanel.site.add",
                static_site("x.com", "u\nv", "password1"),
            ),
            ("cloudpanel.site.add", static_site("x.com", "u", "short")),
            (
                "cloudpanel.site.add",
                static_site(&format!("{}.com", "a".repeat(64)), "u", "password1"),
            ),
            (
                "cloudpanel.site.delete",
                json!({"domain": "x.com", "force": false}),
            ),
            ("cloudpanel.user.delete", json!({"user_name": "--all"})),
            (
                "cloudpanel.db.add",
                json!({"domain": "x.com", "database_name": "a b",
                "database_user_name": "u", "database_user_password": "password1"}),
            ),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some((
            "cloudpanel.site.add",
            static_site("conform.example.com", "conform", "Conform-pass1"),
        ))
    }

    fn permanent_failure(&self) -> Call {
        (
            "cloudpanel.db.add",
            json!({"domain": "nosite.example.com", "database_name": "db1",
                   "database_user_name": "u1", "database_user_password": "Db-pass-123"}),
        )
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        let unavailable = self.argv(&["CLPCTL_STANDIN_UNAVAILABLE=1"]);
        Some((
            (
                "cloudpanel.site.add",
                static_site("down.example.com", "down", "Down-pass-1"),
            ),
            Box::new(move |config| config.cloudpanel.clpctl = unavailable),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured(
            "cloudpanel.site.add",
            static_site("slow.example.com", "slow", "Slow-pass-1"),
        )
    }

    async fn stop(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudpanel_driver_conforms() {
    conforms::<ClpctlFixture>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_added_once_and_deleted_once_with_force_and_a_closed_stdin() {
    let clpctl = ClpctlFixture::new();
    let app = TestApp::with(|c| clpctl.configure(c));
    let worker = app.worker().await;
    let site = json!({"site_type": "php", "domain": "www.example.com", "site_user": "john-doe",
                      "site_user_password": "!secretPassword!", "php_version": "8.4"});

    let first = run_on(&app, &worker, "cloudpanel.site.add", site.clone()).await;
    assert!(changed(&app, first));
    assert!(
        clpctl
            .home()
            .join("john-doe/htdocs/www.example.com")
            .is_dir()
    );
    let again = run_on(&app, &worker, "cloudpanel.site.add", site).await;
    assert!(
        !changed(&app, again),
        "the site's htdocs exists: nothing to do"
    );
    let adds = clpctl.calls_of("site:add:php");
    assert_eq!(adds.len(), 1, "clpctl was called again: {adds:?}");
    assert_eq!(
        adds[0]["argv"],
        json!([
            "site:add:php",
            "--domainName=www.example.com",
            "--phpVersion=8.4",
            "--vhostTemplate=Generic",
            "--siteUser=john-doe",
            "--siteUserPassword=!secretPassword!"
        ])
    );
    let managed = app
        .store
        .read(|c| managed_list(c, "local", "cloudpanel", "site", None))
        .unwrap();
    assert_eq!(managed.len(), 1);
    assert!(managed[0].spec.get("site_user_password").is_none());

    let db = run_on(
        &app,
        &worker,
        "cloudpanel.db.add",
        json!({"domain": "www.example.com",
        "database_name": "my-database", "database_user_name": "john",
        "database_user_password": "!secret-db!"}),
    )
    .await;
    assert!(changed(&app, db));

    let delete = json!({"domain": "www.example.com"});
    let deleted = run_on(&app, &worker, "cloudpanel.site.delete", delete.clone()).await;
    assert!(changed(&app, deleted));
    assert!(!clpctl.home().join("john-doe").exists());
    let again = run_on(&app, &worker, "cloudpanel.site.delete", delete).await;
    assert!(!changed(&app, again), "an absent site: nothing to do");
    let deletes = clpctl.calls_of("site:delete");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        deletes[0]["argv"],
        json!(["site:delete", "--domainName=www.example.com", "--force"])
    );
    assert_eq!(deletes[0]["stdin_at_eof"], true, "stdin was left open");
    assert!(clpctl.calls().iter().all(|c| c["stdin_at_eof"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_reach_clpctl_and_no_log_result_or_payload() {
    let clpctl = ClpctlFixture::new();
    let app = TestApp::with(|c| clpctl.configure(c));
    let worker = app.worker().await;
    let passwords = [
        "Site-pw-4711!",
        "Db-pw-0815$x",
        "User-pw-1234%",
        "Other-pw-999#",
    ];

    let ids = vec![
        run_on(
            &app,
            &worker,
            "cloudpanel.site.add",
            static_site("shop.example.com", "shop", passwords[0]),
        )
        .await,
        run_on(
            &app,
            &worker,
            "cloudpanel.db.add",
            json!({"domain": "shop.example.com",
            "database_name": "shop", "database_user_name": "shop",
            "database_user_password": passwords[1]}),
        )
        .await,
        run_on(
            &app,
            &worker,
            "cloudpanel.user.add",
            json!({"user_name": "jane", "email": "jane@example.com",
            "first_name": "Jane", "last_name": "Doe", "password": passwords[2], "role": "user",
            "sites": ["shop.example.com"]}),
        )
        .await,
        // Refused by clpctl (the site user exists), which echoed the
        // password before it failed.
        run_on(
            &app,
            &worker,
            "cloudpanel.site.add",
            static_site("other.example.com", "shop", passwords[3]),
        )
        .await,
    ];
    for id in &ids[..3] {
        assert!(changed(&app, *id));
    }
    let refused = app.get(ids[3]);
    assert_eq!(refused.status, Status::Failed);
    assert_eq!(error_code(&refused), "clpctl_failed");
    assert!(
        refused
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("already exists"),
        "{refused:?}"
    );

    let recorded = serde_json::to_string(&clpctl.calls()).unwrap();
    for password in passwords {
        assert!(
            recorded.contains(password),
            "clpctl never got {password}, so the search below proves nothing"
        );
    }
    let mut seen = Vec::new();
    for id in &ids {
        let op = app.get(*id);
        assert!(
            op.payload.as_object().unwrap().values().any(|v| v == "***"),
            "{:?}",
            op.payload
        );
        seen.push(serde_json::to_string(&op).unwrap());
        let logs = app.logs(*id);
        assert!(!logs.is_empty());
        seen.extend(logs.into_iter().map(|l| l.line));
    }
    let managed = app
        .store
        .read(|c| managed_list(c, "local", "cloudpanel", "site", None))
        .unwrap();
    seen.extend(managed.iter().map(|m| m.spec.to_string()));
    for text in &seen {
        for password in passwords {
            assert!(!text.contains(password), "{password} leaked: {text}");
        }
    }
    assert!(
        seen.iter().any(|t| t.contains("--siteUserPassword=***")),
        "the redacted argv is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_users_are_added_and_deleted_once() {
    let clpctl = ClpctlFixture::new();
    let app = TestApp::with(|c| clpctl.configure(c));
    let worker = app.worker().await;
    let user = json!({"user_name": "john.doe", "email": "john.doe@example.com", "first_name": "John",
                      "last_name": "Doe", "password": "!password!", "role": "admin",
                      "timezone": "Europe/Berlin", "active": false});
    let steps = [
        ("cloudpanel.user.add", user.clone(), true),
        ("cloudpanel.user.add", user, false),
        (
            "cloudpanel.user.delete",
            json!({"user_name": "john.doe"}),
            true,
        ),
        (
            "cloudpanel.user.delete",
            json!({"user_name": "john.doe"}),
            false,
        ),
    ];
    for (kind, payload, expected) in steps {
        let id = run_on(&app, &worker, kind, payload).await;
        assert_eq!(changed(&app, id), expected, "{kind}");
    }
    let adds = clpctl.calls_of("user:add");
    assert_eq!(adds.len(), 1);
    assert_eq!(
        adds[0]["argv"],
        json!([
            "user:add",
            "--userName=john.doe",
            "--email=john.doe@example.com",
            "--firstName=John",
            "--lastName=Doe",
            "--password=!password!",
            "--role=admin",
            "--timezone=Europe/Berlin",
            "--status=0"
        ])
    );
    assert_eq!(clpctl.calls_of("user:delete").len(), 1);
}

/// A self-signed certificate and its key for `name`, in PEM.
fn certificate_and_key(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .expect("a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// The certificate the stand-in recorded for a site.
fn installed(clpctl: &ClpctlFixture, domain: &str) -> Value {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(clpctl.state().join("state.json")).unwrap())
            .unwrap();
    state["sites"][domain]["certificate"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_key_reaches_clpctl_as_a_private_file_that_is_gone_afterwards() {
    let clpctl = ClpctlFixture::new();
    let app = TestApp::with(|c| clpctl.configure(c));
    let worker = app.worker().await;
    let site = run_on(
        &app,
        &worker,
        "cloudpanel.site.add",
        static_site("shop.example.com", "shop", "Site-pw-4711!"),
    )
    .await;
    assert!(changed(&app, site));
    let (certificate, key) = certificate_and_key("shop.example.com");
    let (chain, _) = certificate_and_key("Example Intermediate");

    let id = run_on(
        &app,
        &worker,
        "cloudpanel.certificate.install",
        json!({"domain": "shop.example.com", "source": "upload", "certificate": certificate,
               "private_key": key, "certificate_chain": chain}),
    )
    .await;
    assert!(changed(&app, id), "{:?}", app.logs(id));
    let op = app.get(id);
    assert_eq!(op.payload["private_key"], "***");
    let result = op.result.as_ref().unwrap();
    assert_eq!(result["source"], "upload");
    assert_eq!(result["sha256"].as_str().map(str::len), Some(64));

    let recorded = installed(&clpctl, "shop.example.com");
    assert_eq!(recorded["key_file_mode"], "0o600", "{recorded}");
    let sha = |text: &str| {
        use sha2::Digest as _;
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        recorded["sha256"]["privateKey"],
        sha(&key),
        "the key clpctl read"
    );
    assert_eq!(recorded["sha256"]["certificate"], sha(&certificate));
    assert_eq!(recorded["sha256"]["certificateChain"], sha(&chain));
    let call = &clpctl.calls_of("site:install:certificate")[0];
    let argv: Vec<&str> = call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let key_path = argv
        .iter()
        .find_map(|a| a.strip_prefix("--privateKey="))
        .expect("the key's file");
    assert!(
        !Path::new(key_path).exists(),
        "{key_path} outlived the command"
    );
    assert!(
        !Path::new(key_path).parent().unwrap().exists(),
        "its directory outlived the command"
    );

    let body = key
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("the key's base64");
    let mut seen = vec![
        serde_json::to_string(&op).unwrap(),
        serde_json::to_string(&clpctl.calls()).unwrap(),
    ];
    seen.extend(app.logs(id).into_iter().map(|l| l.line));
    for text in &seen {
        assert!(!text.contains(body), "the private key leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lets_encrypt_is_asked_for_the_site_and_its_extra_names_and_a_missing_site_fails() {
    let clpctl = ClpctlFixture::new();
    let app = TestApp::with(|c| clpctl.configure(c));
    let worker = app.worker().await;
    let missing = run_on(
        &app,
        &worker,
        "cloudpanel.certificate.install",
        json!({"domain": "example.com", "source": "lets-encrypt"}),
    )
    .await;
    assert_eq!(error_code(&app.get(missing)), "site_not_found");
    assert!(
        clpctl
            .calls_of("lets-encrypt:install:certificate")
            .is_empty()
    );

    let site = run_on(
        &app,
        &worker,
        "cloudpanel.site.add",
        static_site("example.com", "web", "Site-pw-4711!"),
    )
    .await;
    assert!(changed(&app, site));
    let id = run_on(
        &app,
        &worker,
        "cloudpanel.certificate.install",
        json!({"domain": "example.com", "source": "lets-encrypt",
               "subject_alternative_names": ["www.example.com", "api.example.com"]}),
    )
    .await;
    assert!(changed(&app, id), "{:?}", app.logs(id));
    assert_eq!(
        clpctl.calls_of("lets-encrypt:install:certificate")[0]["argv"],
        json!([
            "lets-encrypt:install:certificate",
            "--domainName=example.com",
            "--subjectAlternativeName=www.example.com,api.example.com"
        ])
    );
    assert_eq!(
        installed(&clpctl, "example.com")["names"],
        json!(["example.com", "www.example.com", "api.example.com"])
    );
}
