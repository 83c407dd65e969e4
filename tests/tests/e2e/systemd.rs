//! The systemd family end to end: the real API, worker and monitor as
//! processes, driven over the typed routes, against a real systemd (a
//! `systemd --user` manager with its own journald in a private mount
//! namespace, `opsqueue_tests::user_systemd`). Needs root.

use std::path::Path;

use opsqueue_tests::user_systemd::UserSystemd;
use opsqueue_tests::{Cluster, completed};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SLEEPER: &str = "[Unit]\nDescription=left alone\n[Service]\nExecStart=/bin/sleep 600\n";

fn manager() -> UserSystemd {
    UserSystemd::start(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap()
}

/// A cluster whose processes reach `manager`; units named `allowed-*` are
/// allowed; the monitor refreshes every two seconds.
fn cluster_for(manager: &UserSystemd) -> Cluster {
    let mut cluster = Cluster::new();
    cluster.set_env("OPSQUEUE_SYSTEMD__ENABLED", "true");
    cluster.set_env("OPSQUEUE_SYSTEMD__SCOPE", "user");
    cluster.set_env(
        "OPSQUEUE_SYSTEMD__SYSTEMCTL",
        json_list(&manager.systemctl_argv()),
    );
    cluster.set_env(
        "OPSQUEUE_SYSTEMD__JOURNALCTL",
        json_list(&manager.journalctl_argv()),
    );
    cluster.set_env("OPSQUEUE_SYSTEMD__UNIT_DIR", manager.unit_dir().display());
    cluster.set_env("OPSQUEUE_SYSTEMD__ALLOW", r#"["allowed-*"]"#);
    cluster.set_env("OPSQUEUE_SYSTEMD__REFRESH_CRON", "*/2 * * * * *");
    cluster
}

#[tokio::test]
async fn a_unit_installed_over_http_runs_is_read_back_stopped_and_removed() {
    let manager = manager();
    let mut cluster = cluster_for(&manager);
    cluster.start_all();

    let spec = json!({
        "unit": "pb-demo",
        "description": "PocketBase demo",
        "exec_start": ["/bin/sleep", "600"],
        "restart": "always",
        "enable": true,
        "start": true,
    });
    let op = cluster
        .accepted(reqwest::Method::POST, "/api/v1/systemd/units", Some(spec))
        .await;
    assert_eq!(op["type"], "systemd.unit.install");
    assert_eq!(op["resource"], "systemd:pb-demo.service");
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(manager.property("pb-demo.service", "ActiveState"), "active");
    assert_eq!(
        manager.property("pb-demo.service", "UnitFileState"),
        "enabled"
    );

    let unit = cluster.get("/api/v1/systemd/units/pb-demo.service").await;
    assert_eq!(unit.status, StatusCode::OK, "{:#}", unit.body);
    assert_eq!(unit.body["active_state"], "active");
    assert_eq!(unit.body["description"], "PocketBase demo");
    assert!(unit.body["observed_at"].is_string());
    assert_eq!(
        unit.body["managed"]["spec"]["exec_start"],
        json!(["/bin/sleep", "600"])
    );
    let list = cluster.get("/api/v1/systemd/units").await;
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "pb-demo.service"),
        "{:#}",
        list.body
    );

    let stop = "/api/v1/systemd/units/pb-demo.service/stop";
    let op = cluster.accepted(reqwest::Method::POST, stop, None).await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(
        manager.property("pb-demo.service", "ActiveState"),
        "inactive"
    );
    let op = cluster.accepted(reqwest::Method::POST, stop, None).await;
    assert_eq!(completed(&op)["changed"], false);
    let unit = cluster.get("/api/v1/systemd/units/pb-demo.service").await;
    assert_eq!(unit.body["active_state"], "inactive");

    let logs = "/api/v1/systemd/units/pb-demo.service/logs?lines=5";
    let op = cluster.accepted(reqwest::Method::POST, logs, None).await;
    assert!(completed(&op)["lines"].is_array(), "{op:#}");
    assert_eq!(op["type"], "systemd.logs");

    let op = cluster
        .accepted(
            reqwest::Method::DELETE,
            "/api/v1/systemd/units/pb-demo.service",
            None,
        )
        .await;
    assert_eq!(completed(&op)["changed"], true);
    assert_eq!(
        manager.property("pb-demo.service", "LoadState"),
        "not-found"
    );
    let gone = cluster.get("/api/v1/systemd/units/pb-demo.service").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:#}", gone.body);
    gone.assert_problem("not_found", "a removed unit");
}

#[tokio::test]
async fn sshd_and_units_opsqueue_did_not_install_are_refused_before_anything_is_stored() {
    let manager = manager();
    manager.add_unit("other.service", SLEEPER);
    let mut cluster = cluster_for(&manager);
    cluster.set_env("OPSQUEUE_SYSTEMD__ALLOW", r#"["*"]"#);
    cluster.start_api();

    for (path, status, code) in [
        (
            "/api/v1/systemd/units/sshd.service/restart",
            403,
            "forbidden",
        ),
        ("/api/v1/systemd/units/sshd/stop", 403, "forbidden"),
        (
            "/api/v1/systemd/units/opsqueue-worker.service/stop",
            403,
            "forbidden",
        ),
        (
            "/api/v1/systemd/units/a%3Bb.service/start",
            422,
            "invalid_request",
        ),
        (
            "/api/v1/systemd/units/-x.service/start",
            422,
            "invalid_request",
        ),
        (
            "/api/v1/systemd/units/web.service/explode",
            404,
            "not_found",
        ),
    ] {
        let response = cluster.post(path, json!({})).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{path}: {:#}",
            response.body
        );
        response.assert_problem(code, path);
    }
    let install = cluster
        .post(
            "/api/v1/systemd/units",
            json!({"unit": "sshd.service", "exec_start": ["/bin/true"]}),
        )
        .await;
    assert_eq!(install.status, StatusCode::FORBIDDEN, "{:#}", install.body);
    install.assert_problem("forbidden", "install sshd.service");
    for bad in [
        json!({"unit": "web", "exec_start": ["sleep", "1"]}),
        json!({"unit": "web", "exec_start": ["/bin/sh", "-c", "a\nb"]}),
        json!({"unit": "web", "exec_start": ["/bin/true"], "user": "-root"}),
    ] {
        let response = cluster.post("/api/v1/systemd/units", bad.clone()).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        response.assert_problem("invalid_payload", &bad.to_string());
    }
    let generic = cluster
        .post(
            "/api/v1/operations",
            json!({"type": "systemd.stop", "payload": {"unit": "sshd.service"}}),
        )
        .await;
    assert_eq!(
        generic.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:#}",
        generic.body
    );
    generic.assert_problem("invalid_payload", "systemd.stop sshd.service");
    let stored = cluster.get("/api/v1/operations").await;
    assert_eq!(stored.body["items"], json!([]), "something was stored");

    // Without the catch-all allow pattern, a unit that exists and that
    // opsqueue did not install is out of reach too.
    let mut strict = cluster_for(&manager);
    strict.start_api();
    let response = strict
        .post("/api/v1/systemd/units/other.service/start", json!({}))
        .await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{:#}",
        response.body
    );
    response.assert_problem("forbidden", "start other.service");
    let response = strict
        .post("/api/v1/systemd/units/allowed-x.service/start", json!({}))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{:#}", response.body);
}

#[tokio::test]
async fn the_monitor_s_refresh_schedule_keeps_the_unit_list_current() {
    let manager = manager();
    manager.add_unit("allowed-app.service", SLEEPER);
    let mut cluster = cluster_for(&manager);
    cluster.start_all();

    let mut schedule = Value::Null;
    let deadline = std::time::Instant::now() + opsqueue_tests::DEADLINE;
    while schedule.is_null() {
        let schedules = cluster.get("/api/v1/schedules").await.body;
        schedule = schedules["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "refresh-systemd")
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh-systemd schedule: {schedules:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(schedule["type"], "systemd.refresh", "{schedule:#}");

    // Started behind opsqueue's back: only a refresh can tell.
    let out = manager.systemctl(&["start", "allowed-app.service"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + opsqueue_tests::DEADLINE;
    loop {
        let unit = cluster
            .get("/api/v1/systemd/units/allowed-app.service")
            .await;
        if unit.status == StatusCode::OK && unit.body["active_state"] == "active" {
            assert_eq!(
                unit.body["managed"],
                Value::Null,
                "opsqueue did not install it"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never observed the unit: {:#}\n{}",
            unit.body,
            cluster.logs_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let list = cluster.get("/api/v1/systemd/units").await.body;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["allowed-app.service"],
        "only allowed units are observed"
    );
}
