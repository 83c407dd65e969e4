//! The systemd driver against a real systemd: a `systemd --user` manager
//! in a private mount namespace with its own journald, one per test
//! (`tests/src/user_systemd.rs`), reached through `nsenter`. Units the
//! tests write and the driver installs live in the manager's unit
//! directory under `CARGO_TARGET_TMPDIR`, or `/var/lib/opsqueue-tests`
//! when that is under `/tmp` (a checkout there), so `PrivateTmp` units see
//! the test's files. Needs root; a missing program fails the
//! test with a message, never skips it.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use opsqueue_shared::families::systemd::SystemdScope;
use opsqueue_shared::store::{managed_list, observation_list};
use opsqueue_shared::{Config, Status};
use serde_json::{Value, json};

use crate::conformance::{Call, Slow, Subject, conforms};
use crate::{PATIENCE, TestApp, completed, error_code, run};

#[path = "../../../tests/src/user_systemd.rs"]
#[allow(dead_code)]
mod user_systemd;

use user_systemd::{UNIT_VISIBLE_FALLBACK, UserSystemd, hidden_by_private_tmp, unit_visible_base};

/// A unit that runs until stopped.
const SLEEPER: &str = "[Unit]\nDescription=sleeps\n[Service]\nExecStart=/bin/sleep 600\n\
                       [Install]\nWantedBy=default.target\n";

/// A oneshot unit whose start takes two minutes unless stopped.
const SLOW_START: &str =
    "[Unit]\nDescription=slow start\n[Service]\nType=oneshot\nExecStart=/bin/sleep 120\n";

fn manager() -> UserSystemd {
    UserSystemd::start(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

#[test]
fn files_shared_with_test_units_are_never_where_private_tmp_hides_them() {
    let base = unit_visible_base(Path::new(env!("CARGO_TARGET_TMPDIR")));
    assert!(
        !hidden_by_private_tmp(&base),
        "{base:?} is under /tmp or /var/tmp: a unit with PrivateTmp=yes would not see it"
    );
    for checkout_in_tmp in ["/tmp/opsqueue/target/tmp", "/var/tmp/x/target/tmp"] {
        assert_eq!(
            unit_visible_base(Path::new(checkout_in_tmp)),
            Path::new(UNIT_VISIBLE_FALLBACK),
            "{checkout_in_tmp}"
        );
    }
    assert!(!hidden_by_private_tmp(Path::new(UNIT_VISIBLE_FALLBACK)));
    assert!(!hidden_by_private_tmp(Path::new("/tmpfoo")));
}

/// Points the driver at `manager`; units named `allowed-*` are allowed.
fn configure(manager: &UserSystemd, config: &mut Config) {
    config.systemd.enabled = true;
    config.systemd.scope = SystemdScope::User;
    config.systemd.systemctl = manager.systemctl_argv();
    config.systemd.journalctl = manager.journalctl_argv();
    config.systemd.unit_dir = manager.unit_dir();
    config.systemd.allow = vec!["allowed-*".into()];
}

fn app_for(manager: &UserSystemd) -> TestApp {
    TestApp::with(|config| configure(manager, config))
}

fn observed(app: &TestApp, unit: &str) -> Option<Value> {
    app.store
        .read(|c| observation_list(c, "local", "systemd", "unit", Some(unit)))
        .unwrap()
        .into_iter()
        .next()
        .map(|o| o.data)
}

fn managed(app: &TestApp, unit: &str) -> bool {
    !app.store
        .read(|c| managed_list(c, "local", "systemd", "unit", Some(unit)))
        .unwrap()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_unit_runs_with_exactly_the_argument_vector_it_was_given() {
    let manager = manager();
    let app = app_for(&manager);
    let record = manager.dir().join("argv");
    let args = [
        "a b",
        "$HOME",
        "100%",
        "quo\"te",
        "back\\slash",
        ";",
        ";x",
        "{}",
        "'single'",
        "%n",
    ];
    let mut exec_start = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "printf '%s\\n' \"$@\" > \"$0\"; printf '%s' \"$GREETING\" > \"$0.env\"".to_owned(),
        record.display().to_string(),
    ];
    exec_start.extend(args.iter().map(|a| a.to_string()));
    let spec = json!({
        "unit": "argv-recorder.service",
        "description": "records its argv: 100% literal",
        "exec_start": exec_start,
        "type": "oneshot",
        "restart": "no",
        "environment": {"GREETING": "hello \"world\" $USER 5%"},
        "start": true,
    });

    let op = run(&app, "systemd.unit.install", spec.clone()).await;
    let result = completed(&op);
    assert_eq!(result["changed"], true);
    assert_eq!(result["file_changed"], true);
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().collect::<Vec<_>>(), args);
    assert_eq!(
        manager.property("argv-recorder.service", "Description"),
        "records its argv: 100% literal"
    );
    let environment = std::fs::read_to_string(record.with_extension("env")).unwrap();
    assert_eq!(environment, r#"hello "world" $USER 5%"#);
    assert!(managed(&app, "argv-recorder.service"));
    let file = std::fs::read_to_string(manager.unit_dir().join("argv-recorder.service")).unwrap();
    assert!(file.starts_with(opsqueue_worker::drivers::systemd::HEADER));

    // The same spec again (without `start`: the oneshot has finished, so a
    // start would run it again) finds everything in place.
    let mut same = spec.clone();
    same.as_object_mut().unwrap().remove("start");
    let again = run(&app, "systemd.unit.install", same).await;
    assert_eq!(completed(&again)["changed"], false, "{again:?}");
    assert_eq!(completed(&again)["file_changed"], false);

    let mut changed = spec;
    changed["environment"]["GREETING"] = json!("changed");
    let op = run(&app, "systemd.unit.install", changed).await;
    assert_eq!(completed(&op)["file_changed"], true);
    let environment = std::fs::read_to_string(record.with_extension("env")).unwrap();
    assert_eq!(environment, "changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_enable_and_disable_change_something_only_the_first_time() {
    let manager = manager();
    manager.add_unit("allowed-sleeper.service", SLEEPER);
    let app = app_for(&manager);
    let unit = json!({"unit": "allowed-sleeper.service"});
    for (kind, first_state) in [("systemd.start", "active"), ("systemd.stop", "inactive")] {
        let op = run(&app, kind, unit.clone()).await;
        assert_eq!(completed(&op)["changed"], true, "{kind}: {op:?}");
        assert_eq!(completed(&op)["state"]["active_state"], first_state);
        assert_eq!(
            manager.property("allowed-sleeper.service", "ActiveState"),
            first_state
        );
        let observation = observed(&app, "allowed-sleeper.service").unwrap();
        assert_eq!(observation["active_state"], first_state);
        let again = run(&app, kind, unit.clone()).await;
        assert_eq!(
            completed(&again)["changed"],
            false,
            "{kind} again: {again:?}"
        );
    }
    for (kind, file_state) in [
        ("systemd.enable", "enabled"),
        ("systemd.disable", "disabled"),
    ] {
        let op = run(&app, kind, unit.clone()).await;
        assert_eq!(completed(&op)["changed"], true, "{kind}: {op:?}");
        assert_eq!(
            manager.property("allowed-sleeper.service", "UnitFileState"),
            file_state
        );
        let again = run(&app, kind, unit.clone()).await;
        assert_eq!(
            completed(&again)["changed"],
            false,
            "{kind} again: {again:?}"
        );
    }
    let restart = run(&app, "systemd.restart", unit.clone()).await;
    assert_eq!(completed(&restart)["changed"], true);
    let pid = completed(&restart)["state"]["main_pid"].as_u64().unwrap();
    let restarted = run(&app, "systemd.restart", unit.clone()).await;
    let new_pid = completed(&restarted)["state"]["main_pid"].as_u64().unwrap();
    assert_ne!(pid, new_pid, "a restart starts a new process");

    let reload = run(&app, "systemd.reload", unit.clone()).await;
    assert_eq!(reload.status, Status::Failed);
    assert_eq!(error_code(&reload), "reload_unsupported");

    let status = run(&app, "systemd.status", unit).await;
    assert_eq!(completed(&status)["changed"], false);
    assert_eq!(completed(&status)["state"]["main_pid"], new_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_neither_allowed_nor_installed_are_out_of_reach_and_sshd_always_is() {
    let manager = manager();
    manager.add_unit("other.service", SLEEPER);
    let app = app_for(&manager);

    let op = run(&app, "systemd.start", json!({"unit": "other.service"})).await;
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "unit_not_allowed");
    assert!(!op.error.as_ref().unwrap().retryable);
    assert_eq!(manager.property("other.service", "ActiveState"), "inactive");

    let before = std::fs::read_to_string(manager.unit_dir().join("other.service")).unwrap();
    let op = run(
        &app,
        "systemd.unit.install",
        json!({"unit": "other.service", "exec_start": ["/bin/true"]}),
    )
    .await;
    assert_eq!(error_code(&op), "unit_not_allowed", "{op:?}");
    let after = std::fs::read_to_string(manager.unit_dir().join("other.service")).unwrap();
    assert_eq!(
        before, after,
        "a unit opsqueue did not install was overwritten"
    );

    let everything = TestApp::with(|config| {
        configure(&manager, config);
        config.systemd.allow = vec!["*".into()];
    });
    for unit in ["sshd.service", "ssh.service", "opsqueue-worker.service"] {
        let op = run(&everything, "systemd.stop", json!({"unit": unit})).await;
        assert_eq!(op.status, Status::Failed, "{unit}: {op:?}");
        assert!(
            op.error.as_ref().unwrap().message.contains("deny"),
            "{unit}: {:?}",
            op.error
        );
    }
    let other = run(
        &everything,
        "systemd.start",
        json!({"unit": "other.service"}),
    )
    .await;
    assert_eq!(completed(&other)["changed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_systemd_analyze_refuses_is_never_written() {
    let manager = manager();
    let app = app_for(&manager);
    let op = run(
        &app,
        "systemd.unit.install",
        json!({"unit": "allowed-broken.service", "exec_start": ["/nonexistent/bin/server"], "start": true}),
    )
    .await;
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "unit_invalid");
    assert!(
        op.error
            .as_ref()
            .unwrap()
            .message
            .contains("/nonexistent/bin/server"),
        "{:?}",
        op.error
    );
    assert!(!manager.unit_dir().join("allowed-broken.service").exists());
    assert!(!managed(&app, "allowed-broken.service"));

    // The strict preset passes the same check (it is not started here: the
    // test manager cannot remount /proc/sys for ProtectKernelTunables).
    let strict = run(
        &app,
        "systemd.unit.install",
        json!({"unit": "allowed-strict.service", "exec_start": ["/bin/sleep", "600"],
               "working_directory": "/var/lib", "hardening": "strict"}),
    )
    .await;
    assert_eq!(completed(&strict)["file_changed"], true);
    let file = std::fs::read_to_string(manager.unit_dir().join("allowed-strict.service")).unwrap();
    assert!(
        file.contains("\nSystemCallFilter=@system-service\n"),
        "{file}"
    );
    assert!(file.contains("\nReadWritePaths=/var/lib\n"), "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_lines_of_a_unit_come_back_as_the_logs_result() {
    let manager = manager();
    let app = app_for(&manager);
    let op = run(
        &app,
        "systemd.unit.install",
        json!({
            "unit": "chatty.service",
            "exec_start": ["/bin/sh", "-c", "echo first line; echo second line; exec sleep 600"],
            "start": true,
        }),
    )
    .await;
    completed(&op);
    // journald files the lines shortly after the unit prints them.
    let deadline = Instant::now() + PATIENCE;
    let messages = loop {
        let op = run(&app, "systemd.logs", json!({"unit": "chatty.service"})).await;
        let messages: Vec<String> = completed(&op)["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|line| line["message"].as_str().map(str::to_owned))
            .collect();
        if messages.iter().any(|m| m == "second line") {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "the journal never had the lines: {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = messages.iter().position(|m| m == "first line").unwrap();
    let second = messages.iter().position(|m| m == "second line").unwrap();
    assert!(first < second, "{messages:?}");

    let last = run(
        &app,
        "systemd.logs",
        json!({"unit": "chatty.service", "lines": 1}),
    )
    .await;
    let result = completed(&last);
    assert_eq!(result["count"], 1);
    assert_eq!(result["changed"], false);
    assert!(result["lines"][0]["time"].as_str().unwrap().ends_with('Z'));

    let op = run(&app, "systemd.logs", json!({"unit": "sshd.service"})).await;
    assert_eq!(op.status, Status::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_unit_is_stopped_disabled_and_gone_and_removing_it_again_changes_nothing() {
    let manager = manager();
    let app = app_for(&manager);
    let spec = json!({
        "unit": "pb-app1.service",
        "exec_start": ["/bin/sleep", "600"],
        "enable": true,
        "start": true,
    });
    let op = run(&app, "systemd.unit.install", spec).await;
    assert_eq!(completed(&op)["state"]["active_state"], "active");
    assert_eq!(
        manager.property("pb-app1.service", "UnitFileState"),
        "enabled"
    );
    let pid: i32 = manager
        .property("pb-app1.service", "MainPID")
        .parse()
        .unwrap();
    assert!(pid > 0);

    let removed = run(&app, "systemd.unit.remove", json!({"unit": "pb-app1"})).await;
    assert_eq!(completed(&removed)["changed"], true, "{removed:?}");
    assert!(!manager.unit_dir().join("pb-app1.service").exists());
    assert!(
        !manager
            .unit_dir()
            .join("default.target.wants/pb-app1.service")
            .exists()
    );
    assert_eq!(
        manager.property("pb-app1.service", "LoadState"),
        "not-found"
    );
    assert!(
        !crate::alive(pid as u32),
        "the unit's process survived its removal"
    );
    assert!(!managed(&app, "pb-app1.service"));
    assert!(observed(&app, "pb-app1.service").is_none());

    let again = run(&app, "systemd.unit.remove", json!({"unit": "pb-app1"})).await;
    assert_eq!(completed(&again)["changed"], false, "{again:?}");
    // Once removed it is out of reach again.
    let start = run(&app, "systemd.start", json!({"unit": "pb-app1"})).await;
    assert_eq!(error_code(&start), "unit_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_observes_the_allowed_and_the_installed_units_and_nothing_else() {
    let manager = manager();
    manager.add_unit("allowed-a.service", SLEEPER);
    manager.add_unit("other.service", SLEEPER);
    let app = app_for(&manager);
    let op = run(
        &app,
        "systemd.unit.install",
        json!({"unit": "mine.service", "exec_start": ["/bin/sleep", "600"], "start": true}),
    )
    .await;
    completed(&op);

    let refresh = run(&app, "systemd.refresh", json!({})).await;
    completed(&refresh);
    let names: Vec<String> = app
        .store
        .read(|c| observation_list(c, "local", "systemd", "unit", None))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(names.contains(&"allowed-a.service".to_owned()), "{names:?}");
    assert!(names.contains(&"mine.service".to_owned()), "{names:?}");
    assert!(!names.contains(&"other.service".to_owned()), "{names:?}");
    assert_eq!(
        observed(&app, "mine.service").unwrap()["active_state"],
        "active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_stopped_mid_way_leaves_no_start_job_behind() {
    let manager = manager();
    manager.add_unit("allowed-slow.service", SLOW_START);
    let app = app_for(&manager);
    let running = app.start().await;
    let id = app.enqueue("systemd.start", json!({"unit": "allowed-slow.service"}));
    app.wait_until("the unit is activating", || {
        manager.property("allowed-slow.service", "ActiveState") == "activating"
    })
    .await;
    app.cancel(id);
    let op = app.wait_until_terminal(id).await;
    assert_eq!(op.status, Status::Cancelled, "{op:?}");
    // The killed start job leaves a oneshot `failed` (its process got
    // SIGTERM); without the cleanup it would still be `activating`.
    app.wait_until("the start job is gone", || {
        matches!(
            manager
                .property("allowed-slow.service", "ActiveState")
                .as_str(),
            "inactive" | "failed"
        )
    })
    .await;
    let jobs = manager.systemctl(&["list-jobs", "--no-legend"]);
    assert!(
        !String::from_utf8_lossy(&jobs.stdout).contains("allowed-slow.service"),
        "{jobs:?}"
    );
    running.stop().await.unwrap();
}

/// The systemd family in the conformance test: a real user manager; a
/// second configuration whose systemctl finds no bus (a retryable failure).
pub struct SystemdSubject {
    manager: UserSystemd,
    no_bus: tempfile::TempDir,
}

impl Subject for SystemdSubject {
    async fn start(_dir: &Path) -> Self {
        let manager = manager();
        manager.add_unit("allowed-slow.service", SLOW_START);
        let no_bus = tempfile::tempdir().unwrap();
        Self { manager, no_bus }
    }

    fn configure(&self, config: &mut Config) {
        configure(&self.manager, config);
    }

    fn refused(&self) -> Vec<Call> {
        vec![
            ("systemd.start", json!({"unit": "-x.service"})),
            ("systemd.start", json!({"unit": "a;b.service"})),
            ("systemd.start", json!({"unit": "../etc.service"})),
            ("systemd.start", json!({"unit": "a\nb.service"})),
            (
                "systemd.start",
                json!({"unit": format!("{}.service", "x".repeat(300))}),
            ),
            ("systemd.start", json!({"unit": "web", "now": true})),
            ("systemd.logs", json!({"unit": "web", "lines": "10"})),
            (
                "systemd.unit.install",
                json!({"unit": "web", "exec_start": ["sleep", "1"]}),
            ),
            (
                "systemd.unit.install",
                json!({"unit": "web", "exec_start": ["/bin/sh", "-c", "a\nb"]}),
            ),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some((
            "systemd.unit.install",
            json!({"unit": "allowed-web.service", "exec_start": ["/bin/sleep", "600"], "start": true}),
        ))
    }

    fn permanent_failure(&self) -> Call {
        ("systemd.start", json!({"unit": "allowed-missing.service"}))
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        let runtime = self.no_bus.path().display().to_string();
        Some((
            ("systemd.start", json!({"unit": "allowed-web.service"})),
            Box::new(move |config| {
                config.systemd.systemctl = vec![
                    "env".into(),
                    format!("XDG_RUNTIME_DIR={runtime}"),
                    "systemctl".into(),
                ];
            }),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured("systemd.start", json!({"unit": "allowed-slow.service"}))
    }

    async fn stop(self) {
        drop(self.manager);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_driver_conforms() {
    conforms::<SystemdSubject>().await;
}
