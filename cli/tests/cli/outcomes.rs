//! Exit codes a pipeline can branch on, one test per code, and what each
//! failure prints.

use serde_json::json;

use crate::helpers::{Started, client_only, spawn_api_only, spawn_app};

#[tokio::test]
async fn a_completed_operation_exits_0_and_prints_its_id_first() {
    let app = spawn_app();
    let run = app.run(&["run", "diag.noop", "--wait"]);
    run.expect_code(0);
    let op = app.cluster.operation(&run.id()).await;
    assert_eq!(op["status"], "completed");
    assert_eq!(op["type"], "diag.noop");
    assert!(run.stderr.contains("completed"), "{run:#?}");
}

#[tokio::test]
async fn firing_without_waiting_exits_0_once_accepted() {
    let app = spawn_api_only();
    let run = app.run(&["run", "diag.sleep", "seconds:=1", "key=db"]);
    run.expect_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    let op = app.cluster.operation(&run.id()).await;
    assert_eq!(op["payload"]["key"], "db");
    assert_eq!(op["payload"]["seconds"].as_f64(), Some(1.0));
    assert_eq!(op["status"], "pending");
}

#[test]
fn a_failed_operation_exits_1_and_says_why() {
    let app = spawn_app();
    let run = app.run(&["run", "diag.fail", "message=disk full", "--wait"]);
    run.expect_code(1);
    assert!(run.stderr.contains("failed"), "{run:#?}");
    assert!(run.stderr.contains("diag_failure: disk full"), "{run:#?}");
}

#[tokio::test]
async fn a_cancelled_operation_exits_2() {
    let app = spawn_app();
    let id = app
        .cluster
        .enqueue_kind("diag.sleep", json!({"seconds": 300}))
        .await;
    let waiter = app.command(&["ops", "wait", &id]).spawn().unwrap();
    app.run(&["ops", "cancel", &id]).expect_code(0);
    let run = crate::helpers::finish(waiter);
    run.expect_code(2);
    assert!(run.stderr.contains("cancelled"), "{run:#?}");
}

#[tokio::test]
async fn a_wait_that_times_out_exits_3_and_says_how_to_keep_waiting() {
    let app = spawn_app();
    let run = app.run(&["run", "diag.sleep", "seconds:=300", "--timeout", "1s"]);
    run.expect_code(3);
    let id = run.id();
    assert!(
        run.stderr.contains(&format!("opsqueue ops wait {id}")),
        "{run:#?}"
    );
    let op = app.cluster.operation(&id).await;
    assert!(
        matches!(op["status"].as_str(), Some("pending" | "running")),
        "a timed-out wait must not cancel: {op:#}"
    );
}

#[test]
fn a_refused_payload_exits_4_and_prints_the_field_errors() {
    let app = spawn_api_only();
    let run = app.run(&[
        "run",
        "diag.noop",
        "--target",
        "not a label",
        "--priority",
        "12",
    ]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("Invalid request (422 invalid_request)"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("  - target: "), "{run:#?}");
    assert!(
        run.stderr
            .contains("  - priority: must be between 0 and 9, got 12"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:#?}");

    let run = app.run(&["run", "diag.sleep", "seconds=soon"]);
    run.expect_code(4);
    assert!(run.stderr.contains("422 invalid_payload"), "{run:#?}");

    let run = app.run(&["run", "nope.never"]);
    run.expect_code(4);
    assert!(run.stderr.contains("unknown_operation_type"), "{run:#?}");
}

#[test]
fn a_401_exits_4_and_says_how_to_log_in() {
    let app = spawn_api_only();
    let run = app
        .command(&["ops", "ls"])
        .env("OPSQUEUE_TOKEN", "not-a-key")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("Unauthorized (401 unauthorized)"),
        "{stderr}"
    );
    assert!(stderr.contains("opsqueue login --url"), "{stderr}");

    let run = app
        .bare_command(&["ops", "ls", "--url", &app.cluster.api_url])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4), "no key at all is a 401 too");
    assert!(String::from_utf8_lossy(&run.stderr).contains("opsqueue login"));
}

#[test]
fn an_api_that_cannot_be_reached_exits_5() {
    let app = client_only();
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = app.run(&["ops", "ls", "--url", &url]);
    run.expect_code(5);
    assert!(run.stderr.contains("cannot reach the API at"), "{run:#?}");
    assert!(run.stderr.contains("hint: is the API running?"), "{run:#?}");
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let app = client_only();
    for args in [
        &["run"][..],
        &["run", "diag.noop", "seconds"],
        &["frobnicate"],
        &["ops", "ls", "--status", "sideways"],
        &["run", "diag.noop", "--wait", "--follow"],
        &["ops", "ls", "--since", "yesterday"],
        &["ops", "ls", "--url", "localhost:8080"],
    ] {
        let run = app.run(args);
        assert_eq!(run.code(), Some(64), "{args:?}: {run:#?}");
        assert!(!run.stderr.is_empty(), "{args:?} said nothing");
    }
    let help = app.run(&["run", "--help"]);
    help.expect_code(0);
    assert!(help.stdout.contains("Examples:"), "{help:#?}");
    assert!(help.stdout.contains("key:=json"), "{help:#?}");
}

#[tokio::test]
async fn ctrl_c_stops_waiting_without_cancelling_and_says_how_to_resume() {
    let app = spawn_app();
    let waiting = Started::spawn(app.command(&["run", "diag.sleep", "seconds:=300", "--wait"]));
    let id = waiting.id.clone();
    app.cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    waiting.interrupt();
    let run = waiting.finish();
    run.expect_code(130);
    assert!(
        run.stderr
            .contains(&format!("resume with: opsqueue ops wait {id}")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("not cancelled"), "{run:#?}");
    assert_eq!(app.cluster.operation(&id).await["status"], "running");
}

#[tokio::test]
async fn ctrl_c_with_cancel_on_interrupt_cancels_and_exits_2() {
    let app = spawn_app();
    let waiting = Started::spawn(app.command(&[
        "run",
        "diag.sleep",
        "seconds:=300",
        "child:=true",
        "--wait",
        "--cancel-on-interrupt",
    ]));
    let id = waiting.id.clone();
    app.cluster
        .wait_until(&id, |op| op["status"] == "running")
        .await;
    waiting.interrupt();
    let run = waiting.finish();
    run.expect_code(2);
    assert!(run.stderr.contains(&format!("cancelling {id}")), "{run:#?}");
    assert_eq!(app.cluster.operation(&id).await["status"], "cancelled");
}

#[test]
fn a_server_error_exits_5_and_shows_the_problem() {
    let app = client_only();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"{"type":"urn:opsqueue:problem:internal","title":"Internal error","status":500,"detail":"an internal error occurred; it has been logged","code":"internal"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let run = app.run(&["ops", "ls", "--url", &url]);
    run.expect_code(5);
    assert!(
        run.stderr.contains("error: Internal error (500 internal)"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("it has been logged"), "{run:#?}");
}

#[tokio::test]
async fn a_wait_rides_out_a_restart_of_the_api() {
    // A fixed port, so the restarted API is where the client looks.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cluster = opsqueue_tests::Cluster::new();
    cluster.set_env("OPSQUEUE_API__BIND", format!("127.0.0.1:{port}"));
    cluster.start_api();
    cluster.start_worker(&[]);
    let mut app = crate::helpers::App {
        cluster,
        home: tempfile::tempdir().unwrap(),
    };
    let waiting = Started::spawn(app.command(&["run", "diag.sleep", "seconds:=3", "--wait"]));
    drop(app.cluster.api.take());
    app.cluster.start_api();
    let run = waiting.finish();
    run.expect_code(0);
    assert!(run.stderr.contains("still waiting: retrying"), "{run:#?}");
    assert!(run.stderr.contains("reached the API again"), "{run:#?}");
    assert!(run.stderr.contains("completed"), "{run:#?}");
}
