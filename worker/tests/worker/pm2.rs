//! The pm2 driver against the real pm2 (installed by
//! `scripts/install-test-deps`), each test with its own `PM2_HOME` and base
//! directory of apps (`tests/src/pm2_home.rs`); `pm2 kill` cleans up. A
//! missing pm2 fails these tests with a message saying how to install it;
//! they never skip.

use std::path::Path;
use std::time::{Duration, Instant};

use opsqueue_shared::store::{managed_list, observation_list};
use opsqueue_shared::{Config, Status};
use serde_json::{Value, json};

use crate::conformance::{Call, Slow, Subject, conforms};
use crate::{PATIENCE, TestApp, changed, error_code, run_on};

#[path = "../../../tests/src/pm2_home.rs"]
#[allow(dead_code)]
mod pm2_home;

use pm2_home::Pm2Home;

impl Pm2Home {
    pub fn configure(&self, config: &mut Config) {
        config.pm2.enabled = true;
        config.pm2.home = Some(self.home.clone());
        config.pm2.base_dir = self.apps.clone();
    }
}

/// The pm2 family, in the conformance test: a real daemon, and a second
/// one stopped with SIGSTOP, which does not answer (a retryable failure).
pub struct Pm2Subject {
    pm2: Pm2Home,
    stuck: Pm2Home,
}

impl Subject for Pm2Subject {
    async fn start(_dir: &Path) -> Self {
        let pm2 = Pm2Home::new();
        let stuck = Pm2Home::new();
        let ping = stuck.pm2(&["ping"]);
        assert!(ping.status.success(), "pm2 ping: {ping:?}");
        let pid = stuck.daemon_pid().expect("the daemon's pid file");
        // SAFETY: kill(2) on the daemon this test just started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Self { pm2, stuck }
    }

    fn configure(&self, config: &mut Config) {
        self.pm2.configure(config);
    }

    fn refused(&self) -> Vec<Call> {
        let script = self.pm2.script("server.js");
        vec![
            ("pm2.stop", json!({"name": "-x"})),
            ("pm2.stop", json!({"name": "all"})),
            ("pm2.stop", json!({"name": "7"})),
            ("pm2.stop", json!({"name": "a;b"})),
            ("pm2.stop", json!({"name": "../x"})),
            ("pm2.stop", json!({"name": "a\nb"})),
            ("pm2.stop", json!({"name": "x".repeat(65)})),
            ("pm2.start", json!({"name": "w", "script": "server.js"})),
            (
                "pm2.start",
                json!({"name": "w", "script": format!("{script}/../x")}),
            ),
            (
                "pm2.start",
                json!({"name": "w", "script": script, "env": {"PM2_HOME": "/"}}),
            ),
            (
                "pm2.start",
                json!({"name": "w", "script": script, "args": ["a\u{0}"]}),
            ),
            ("pm2.logs", json!({"name": "w", "lines": 0})),
            ("pm2.list", json!({"unknown": true})),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some((
            "pm2.start",
            json!({"name": "conform-web", "script": self.pm2.script("server.js")}),
        ))
    }

    fn permanent_failure(&self) -> Call {
        ("pm2.stop", json!({"name": "no-such-app"}))
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        let stuck = self.stuck.home.clone();
        Some((
            ("pm2.list", json!({})),
            Box::new(move |config| {
                config.pm2.home = Some(stuck);
                config.pm2.command_timeout_secs = 2;
            }),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured(
            "pm2.start",
            json!({"name": "conform-slow", "script": self.pm2.script("never_ready.js"),
                   "wait_ready": true, "listen_timeout_ms": 600_000}),
        )
    }

    async fn stop(self) {
        drop(self.stuck);
        drop(self.pm2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pm2_driver_conforms() {
    conforms::<Pm2Subject>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_environment_never_reaches_a_result_an_observation_or_a_log() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;
    let secret = format!("planted-{}", uuid::Uuid::new_v4().simple());

    let mut ids = vec![
        run_on(
            &app,
            &worker,
            "pm2.start",
            json!({
                "name": "envy", "script": pm2.script("server.js"), "args": ["--alpha", "1"],
                "env": {"API_TOKEN": secret, "PORT": "18080"},
            }),
        )
        .await,
    ];
    assert!(changed(&app, ids[0]));
    let started = app.get(ids[0]);
    assert_eq!(started.payload["env"], "***", "env is a secret field");
    let result = started.result.unwrap();
    assert_eq!(result["status"], "online", "{result}");
    assert_eq!(result["process"]["args"], json!(["--alpha", "1"]));

    let jlist = String::from_utf8(pm2.pm2(&["jlist"]).stdout).unwrap();
    assert!(
        jlist.contains(&secret),
        "the secret is in pm2's own list, so the searches below can fail"
    );

    // The app's log lines, once it has printed them.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let id = run_on(
            &app,
            &worker,
            "pm2.logs",
            json!({"name": "envy", "lines": 10}),
        )
        .await;
        ids.push(id);
        let result = app.get(id).result.unwrap();
        let out = result["out"].to_string();
        if out.contains("hello --alpha 1") && result["err"].to_string().contains("an error line") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app's lines never showed: {result}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (kind, payload) in [
        ("pm2.list", json!({})),
        ("pm2.describe", json!({"name": "envy"})),
        ("pm2.restart", json!({"name": "envy"})),
        ("pm2.reload", json!({"name": "envy"})),
        ("pm2.stop", json!({"name": "envy"})),
        ("pm2.start", json!({"name": "envy"})),
    ] {
        let id = run_on(&app, &worker, kind, payload).await;
        changed(&app, id);
        ids.push(id);
    }

    let mut seen = Vec::new();
    for id in &ids {
        seen.push(serde_json::to_string(&app.get(*id)).unwrap());
        seen.extend(app.logs(*id).into_iter().map(|l| l.line));
    }
    for kind in ["process", "logs"] {
        let observed = app
            .store
            .read(|c| observation_list(c, "local", "pm2", kind, None))
            .unwrap();
        assert!(!observed.is_empty(), "nothing observed of kind {kind}");
        seen.extend(observed.iter().map(|o| o.data.to_string()));
    }
    let managed = app
        .store
        .read(|c| managed_list(c, "local", "pm2", "process", None))
        .unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].spec["env_names"], json!(["API_TOKEN", "PORT"]));
    seen.extend(managed.iter().map(|m| m.spec.to_string()));
    for text in &seen {
        assert!(!text.contains(&secret), "the planted secret leaked: {text}");
        assert!(!text.contains("18080"), "an env value leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_says_it_changed_something_only_when_it_did() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;
    let web = |extra: Value| {
        let mut payload =
            json!({"name": "web", "script": pm2.script("server.js"), "cwd": pm2.script("site")});
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        payload
    };

    let steps: &[(&str, Value, bool)] = &[
        ("pm2.start", web(json!({"instances": 2})), true),
        ("pm2.start", web(json!({})), false),
        ("pm2.stop", json!({"name": "web"}), true),
        ("pm2.stop", json!({"name": "web"}), false),
        ("pm2.start", json!({"name": "web"}), true),
        ("pm2.restart", json!({"name": "web"}), true),
        ("pm2.flush", json!({"name": "web"}), true),
        ("pm2.flush", json!({"name": "web"}), false),
        ("pm2.delete", json!({"name": "web"}), true),
        ("pm2.delete", json!({"name": "web"}), false),
    ];
    for (i, (kind, payload, expected)) in steps.iter().enumerate() {
        if *kind == "pm2.flush" && *expected {
            // Something to flush: the app printed its first lines.
            let logs = pm2.home.join("logs");
            let printed = || {
                std::fs::read_dir(&logs).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                })
            };
            app.wait_until("the app wrote its logs", printed).await;
        }
        let id = run_on(&app, &worker, kind, payload.clone()).await;
        assert_eq!(changed(&app, id), *expected, "step {i}: {kind} {payload}");
        if i == 0 {
            let result = app.get(id).result.unwrap();
            assert_eq!(result["process"]["exec_mode"], "cluster");
            assert_eq!(result["process"]["instances"].as_array().unwrap().len(), 2);
            assert_eq!(result["process"]["cwd"], pm2.script("site"));
        }
    }
    let gone = app
        .store
        .read(|c| observation_list(c, "local", "pm2", "process", Some("web")))
        .unwrap();
    assert!(gone.is_empty(), "a deleted app is no longer observed");
    assert!(
        app.store
            .read(|c| managed_list(c, "local", "pm2", "process", None))
            .unwrap()
            .is_empty()
    );

    let id = run_on(&app, &worker, "pm2.restart", json!({"name": "web"})).await;
    assert_eq!(error_code(&app.get(id)), "process_not_found");
    let id = run_on(&app, &worker, "pm2.describe", json!({"name": "web"})).await;
    assert_eq!(app.get(id).result.unwrap()["found"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_outside_the_base_directory_are_refused_even_through_a_symlink() {
    let pm2 = Pm2Home::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("evil.js");
    std::fs::write(&target, "setInterval(() => {}, 1000);\n").unwrap();
    std::os::unix::fs::symlink(&target, pm2.apps.join("link.js")).unwrap();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;

    let id = run_on(
        &app,
        &worker,
        "pm2.start",
        json!({"name": "link", "script": pm2.script("link.js")}),
    )
    .await;
    assert_eq!(error_code(&app.get(id)), "pm2_bad_path");
    let id = run_on(
        &app,
        &worker,
        "pm2.start",
        json!({"name": "out", "script": target}),
    )
    .await;
    assert_eq!(
        error_code(&app.get(id)),
        "invalid_payload",
        "{:?}",
        app.get(id)
    );
    let id = run_on(
        &app,
        &worker,
        "pm2.start",
        json!({"name": "gone", "script": pm2.script("missing.js")}),
    )
    .await;
    assert_eq!(error_code(&app.get(id)), "pm2_bad_path");

    let id = run_on(&app, &worker, "pm2.list", json!({})).await;
    let listed = app.get(id).result.unwrap();
    assert_eq!(
        listed["processes"],
        json!([]),
        "nothing was started: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pm2_home_lists_cleanly_although_pm2_prints_a_banner_there() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;
    assert!(
        pm2.daemon_pid().is_none(),
        "the home is fresh: no daemon yet"
    );

    let id = run_on(&app, &worker, "pm2.list", json!({})).await;

    assert!(!changed(&app, id));
    assert_eq!(app.get(id).result.unwrap()["processes"], json!([]));
    assert!(pm2.daemon_pid().is_some(), "the list started pm2's daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_read_after_pm2_s_banner_even_without_discrete_mode() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| {
        pm2.configure(c);
        // pm2 as the driver runs it, but with its banner on (a pm2 that
        // ignores PM2_DISCRETE_MODE).
        c.pm2.bin = ["env", "-u", "PM2_DISCRETE_MODE", "pm2"]
            .map(String::from)
            .into();
    });
    let worker = app.worker().await;

    let id = run_on(&app, &worker, "pm2.list", json!({})).await;

    assert!(!changed(&app, id), "{:?}", app.get(id).error);
    assert_eq!(app.get(id).result.unwrap()["processes"], json!([]));
}

/// An app's status in pm2's own list, behind the driver's back.
fn status_in_pm2(pm2: &Pm2Home, name: &str) -> Option<String> {
    let jlist = pm2.pm2(&["jlist"]);
    assert!(jlist.status.success(), "pm2 jlist: {jlist:?}");
    let apps: Vec<Value> = serde_json::from_slice(&jlist.stdout).expect("jlist is a list");
    apps.iter()
        .find(|app| app["name"] == name)
        .map(|app| app["pm2_env"]["status"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cancelled_or_timed_out_while_launching_deletes_the_app_it_created() {
    let pm2 = Pm2Home::new();
    // The daemon first: a look from here and the driver's first command
    // would otherwise race to spawn two on the fresh home.
    let ping = pm2.pm2(&["ping"]);
    assert!(ping.status.success(), "pm2 ping: {ping:?}");
    let app = TestApp::with(|c| pm2.configure(c));
    let running = app.start().await;
    let never_ready = |name: &str| {
        json!({"name": name, "script": pm2.script("never_ready.js"),
               "wait_ready": true, "listen_timeout_ms": 600_000})
    };

    let cancelled = app.enqueue("pm2.start", never_ready("cancelled"));
    let deadline = Instant::now() + PATIENCE;
    while status_in_pm2(&pm2, "cancelled").as_deref() != Some("launching") {
        assert!(
            Instant::now() < deadline,
            "pm2 never registered the app: {:?} {:?}",
            app.get(cancelled),
            app.logs(cancelled)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.cancel(cancelled);
    let op = app.wait_until_terminal(cancelled).await;
    assert_eq!(op.status, Status::Cancelled, "{op:?}");
    assert_eq!(
        status_in_pm2(&pm2, "cancelled"),
        None,
        "the cancelled start left its app in pm2: {:?}",
        app.logs(cancelled)
    );

    let timed_out = app.enqueue_with("pm2.start", never_ready("timed-out"), |r| {
        r.timeout_secs = Some(5)
    });
    let op = app.wait_until_terminal(timed_out).await;
    assert_eq!(op.status, Status::Failed, "{op:?}");
    assert_eq!(error_code(&op), "timeout");
    assert_eq!(
        status_in_pm2(&pm2, "timed-out"),
        None,
        "the timed-out start left its app in pm2: {:?}",
        app.logs(timed_out)
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_an_apps_settings_in_place_and_a_second_one_finds_nothing_to_do() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;
    let secret = format!("planted-{}", uuid::Uuid::new_v4().simple());

    let id = run_on(
        &app,
        &worker,
        "pm2.start",
        json!({"name": "web", "script": pm2.script("flag.js"), "args": ["one"],
               "env": {"GREETING": "hi"}, "max_memory_restart": "200M",
               "log_date_format": "YYYY-MM-DD HH:mm", "autorestart": true}),
    )
    .await;
    assert!(changed(&app, id));
    let started = pm2.settings("web");
    assert_eq!(started["max_memory_restart"], 200 << 20, "{started}");
    assert_eq!(started["log_date_format"], "YYYY-MM-DD HH:mm");
    assert_eq!(started["args"], json!(["one"]));

    let update = json!({"name": "web", "args": ["two", "three"],
                        "env": {"GREETING": "hello", "API_TOKEN": secret},
                        "autorestart": false, "max_memory_restart": "300M",
                        "log_date_format": "HH:mm:ss", "instances": 2});
    let id = run_on(&app, &worker, "pm2.update", update.clone()).await;
    assert!(changed(&app, id), "{:?}", app.logs(id));
    let op = app.get(id);
    assert_eq!(op.payload["env"], "***", "env is a secret field");
    let result = op.result.unwrap();
    assert_eq!(
        result["settings"],
        json!([
            "instances",
            "env",
            "args",
            "autorestart",
            "max_memory_restart",
            "log_date_format"
        ])
    );
    assert_eq!(result["process"]["max_memory_restart"], 300 << 20);
    let updated = pm2.settings("web");
    assert_eq!(updated["args"], json!(["two", "three"]), "{updated}");
    assert_eq!(updated["env"]["GREETING"], "hello");
    assert_eq!(updated["env"]["API_TOKEN"], secret.as_str());
    assert_eq!(updated["autorestart"], false);
    assert_eq!(updated["max_memory_restart"], 300 << 20);
    assert_eq!(updated["log_date_format"], "HH:mm:ss");
    assert_eq!(updated["statuses"], json!(["online", "online"]));
    assert_eq!(updated["pm_exec_path"], started["pm_exec_path"]);
    assert_eq!(updated["exec_interpreter"], started["exec_interpreter"]);
    // The app itself runs with them.
    let out_log = pm2.home.join("logs/web-out.log");
    app.wait_until("the app printed its new args and env", || {
        std::fs::read_to_string(&out_log).is_ok_and(|t| t.contains("up two three hello"))
    })
    .await;

    let again = run_on(&app, &worker, "pm2.update", update).await;
    assert!(
        !changed(&app, again),
        "the same settings again change nothing"
    );
    let id = run_on(
        &app,
        &worker,
        "pm2.update",
        json!({"name": "web", "instances": 1}),
    )
    .await;
    assert!(changed(&app, id));
    assert_eq!(pm2.settings("web")["statuses"], json!(["online"]));

    // A cluster-mode app goes through pm2's reload (no downtime).
    let id = run_on(
        &app,
        &worker,
        "pm2.start",
        json!({"name": "cluster", "script": pm2.script("flag.js"), "instances": 2}),
    )
    .await;
    assert!(changed(&app, id));
    let id = run_on(
        &app,
        &worker,
        "pm2.update",
        json!({"name": "cluster", "args": ["clustered"], "instances": 3}),
    )
    .await;
    assert!(changed(&app, id), "{:?}", app.logs(id));
    assert!(
        app.logs(id).iter().any(|l| l.line.contains("reload")),
        "{:?}",
        app.logs(id)
    );
    let clustered = pm2.settings("cluster");
    assert_eq!(clustered["args"], json!(["clustered"]), "{clustered}");
    assert_eq!(clustered["statuses"], json!(["online", "online", "online"]));

    let missing = run_on(
        &app,
        &worker,
        "pm2.update",
        json!({"name": "nosuch", "args": []}),
    )
    .await;
    assert_eq!(error_code(&app.get(missing)), "process_not_found");

    let mut seen = Vec::new();
    for id in [id, again] {
        seen.push(serde_json::to_string(&app.get(id)).unwrap());
        seen.extend(app.logs(id).into_iter().map(|l| l.line));
    }
    for text in seen {
        assert!(!text.contains(&secret), "the env leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_the_app_cannot_run_with_leaves_it_online_with_its_previous_settings() {
    let pm2 = Pm2Home::new();
    let app = TestApp::with(|c| pm2.configure(c));
    let worker = app.worker().await;
    for (autorestart, name) in [(true, "restarts"), (false, "stays-down")] {
        let id = run_on(
            &app,
            &worker,
            "pm2.start",
            json!({"name": name, "script": pm2.script("flag.js"), "args": ["one"],
                   "env": {"GREETING": "hi"}, "max_memory_restart": "200M",
                   "log_date_format": "HH:mm", "autorestart": autorestart}),
        )
        .await;
        assert!(changed(&app, id));
        let before = pm2.settings(name);

        let id = run_on(
            &app,
            &worker,
            "pm2.update",
            json!({"name": name, "args": ["--crash"], "env": {"GREETING": "bye"},
                   "max_memory_restart": "300M", "log_date_format": "HH:mm:ss",
                   "autorestart": !autorestart, "instances": 2}),
        )
        .await;
        let op = app.get(id);
        assert_eq!(error_code(&op), "pm2_update_failed", "{op:?}");
        let message = &op.error.as_ref().unwrap().message;
        assert!(
            message.contains("the previous settings were put back and the app is online"),
            "{message}"
        );
        let after = pm2.settings(name);
        assert_eq!(
            after, before,
            "{name}: pm2's list differs after the failed update"
        );
        assert_eq!(after["statuses"], json!(["online"]));
    }
}
