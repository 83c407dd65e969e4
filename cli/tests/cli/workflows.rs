//! `opsqueue workflow`: a file checked locally with the API's rules, fired,
//! followed as a tree of steps, and its exit code the workflow's outcome.

use crate::helpers::{spawn_api_only, spawn_app};

const DIAMOND: &str = r#"
name = "diamond"

[[steps]]
name = "a"
type = "diag.noop"

[[steps]]
name = "b"
type = "diag.sleep"
depends_on = ["a"]
payload = { seconds = 0.2 }

[[steps]]
name = "c"
type = "diag.noop"
depends_on = ["a"]

[[steps]]
name = "d"
type = "diag.noop"
depends_on = ["b", "c"]
"#;

#[tokio::test]
async fn a_toml_workflow_runs_and_follow_shows_each_step_until_it_completes() {
    let app = spawn_app();
    let file = app.home.path().join("diamond.toml");
    std::fs::write(&file, DIAMOND).unwrap();
    let run = app.run(&["workflow", "run", file.to_str().unwrap(), "--follow"]);
    run.expect_code(0);
    let id = run.id();
    for step in [
        "a: completed",
        "b: completed",
        "c: completed",
        "d: completed",
    ] {
        assert!(run.stdout.contains(step), "{step} missing: {run:#?}");
    }
    assert!(run.stdout.contains("workflow: completed"), "{run:#?}");
    let view = app
        .cluster
        .get(&format!("/api/v1/workflows/{id}"))
        .await
        .body;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["name"], "diamond");
}

#[tokio::test]
async fn a_failing_workflow_exits_1_and_get_shows_its_tree() {
    let app = spawn_app();
    let file = app.home.path().join("fails.json");
    std::fs::write(
        &file,
        r#"{"steps": [
            {"name": "ok", "type": "diag.noop", "compensate": {"type": "diag.noop"}},
            {"name": "bad", "type": "diag.fail", "depends_on": ["ok"], "payload": {"message": "nope"}}
        ]}"#,
    )
    .unwrap();
    let run = app.run(&["workflow", "run", file.to_str().unwrap(), "--wait"]);
    run.expect_code(1);
    let shown = app.run(&["workflow", "get", &run.id()]);
    shown.expect_code(0);
    assert!(shown.stdout.contains("- bad failed"), "{shown:#?}");
    assert!(shown.stdout.contains("compensations"), "{shown:#?}");
    let listed = app.run(&["workflow", "ls", "-o", "json"]);
    assert_eq!(listed.json()["items"][0]["id"], run.id().as_str());
}

#[test]
fn an_invalid_workflow_is_refused_locally_with_its_field_and_nothing_is_sent() {
    let app = spawn_api_only();
    let file = app.home.path().join("cycle.json");
    std::fs::write(
        &file,
        r#"{"steps": [
            {"name": "a", "type": "diag.noop", "depends_on": ["b"]},
            {"name": "b", "type": "diag.sleep", "depends_on": ["a"], "payload": {"seconds": 1}}
        ]}"#,
    )
    .unwrap();
    let run = app.run(&["workflow", "run", file.to_str().unwrap()]);
    run.expect_code(4);
    assert!(run.stderr.contains("a → b → a"), "{run:#?}");
    std::fs::write(
        &file,
        r#"{"steps": [{"name": "a", "type": "diag.sleep", "payload": {"seconds": "x"}}]}"#,
    )
    .unwrap();
    let run = app.run(&["workflow", "run", file.to_str().unwrap()]);
    run.expect_code(4);
    assert!(run.stderr.contains("steps[0].payload.seconds"), "{run:#?}");
    let stored: i64 = app
        .cluster
        .sqlite()
        .query_row("SELECT count(*) FROM operations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0);
}
