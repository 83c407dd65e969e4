//! `script.run` end to end, the CloudPanel pattern: the real binaries run
//! `manage_site.sh create <operation id>` from a scripts directory; the
//! script learns the operation from its environment and stdin, and its last
//! line becomes the result.

use opsqueue_tests::Cluster;
use serde_json::json;

const MANAGE_SITE: &str = r#"#!/bin/sh
# manage_site.sh <create|delete> <operation id>: answers on its last line.
set -eu
payload=$(cat)
[ "$2" = "$OPSQUEUE_OPERATION_ID" ] || { echo "called for $2, not $OPSQUEUE_OPERATION_ID" >&2; exit 2; }
case "$payload" in
  *'"domain":"shop.example.com"'*) ;;
  *) echo "the payload did not arrive on stdin: $payload" >&2; exit 3 ;;
esac
echo "managing: $1"
printf '{"changed": true, "action": "%s", "operation": "%s"}\n' "$1" "$2"
"#;

#[tokio::test]
async fn a_script_runs_with_its_operation_id_and_answers_with_its_last_line() {
    let mut cluster = Cluster::new();
    let dir = cluster.path("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("manage_site.sh");
    std::fs::write(&script, MANAGE_SITE).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    cluster.set_env("OPSQUEUE_SCRIPTS__ENABLED", "true");
    cluster.set_env("OPSQUEUE_SCRIPTS__DIR", dir.display());
    cluster.start_api();
    cluster.start_worker(&[]);

    let id = cluster
        .enqueue_kind(
            "script.run",
            json!({"name": "manage_site.sh", "args": ["create", "{operation_id}"],
                   "input": {"domain": "shop.example.com"}}),
        )
        .await;
    let op = cluster.wait_terminal(&id).await;
    assert_eq!(
        op["status"],
        "completed",
        "{op:#}\n{:?}",
        cluster.logs(&id).await
    );
    assert_eq!(
        op["result"],
        json!({"changed": true, "action": "create", "operation": id})
    );
    let lines: Vec<String> = cluster
        .logs(&id)
        .await
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_owned())
        .collect();
    assert!(lines.contains(&"managing: create".to_owned()), "{lines:?}");

    let refused = cluster
        .post(
            "/api/v1/operations",
            json!({"type": "script.run", "payload": {"name": "../bin/sh"}}),
        )
        .await;
    assert_eq!(refused.status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    refused.assert_problem("invalid_payload", "script.run ../bin/sh");
}
