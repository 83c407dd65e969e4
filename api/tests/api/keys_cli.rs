use std::path::Path;
use std::process::{Command, Output};

use opsqueue_shared::Store;
use opsqueue_shared::store::{Scope, api_key_find};
use reqwest::StatusCode;

use crate::helpers::{start, test_config};

fn keys(database: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsqueue-api"))
        .arg("keys")
        .args(args)
        .env("OPSQUEUE_DATABASE__PATH", database)
        .env_remove("OPSQUEUE_CONFIG")
        .output()
        .expect("opsqueue-api runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let database = config.database.path.clone();

    let created = stdout(&keys(
        &database,
        &[
            "create", "--name", "ci", "--scope", "write", "--source", "ci",
        ],
    ));
    let token = created.lines().last().unwrap().trim().to_owned();
    assert!(
        token.starts_with("oq_"),
        "the last line is the token: {created}"
    );

    let store = Store::open(&config.database).unwrap();
    let key = store
        .read(|c| api_key_find(c, &token))
        .unwrap()
        .expect("stored");
    assert_eq!(key.name, "ci");
    assert_eq!(key.scopes, [Scope::Write]);
    assert_eq!(key.source.as_deref(), Some("ci"));

    let duplicate = keys(&database, &["create", "--name", "ci", "--scope", "read"]);
    assert!(
        !duplicate.status.success(),
        "an active name cannot be reused"
    );
    let bad_scope = keys(&database, &["create", "--name", "x", "--scope", "root"]);
    assert!(!bad_scope.status.success());

    let listed = stdout(&keys(&database, &["list"]));
    assert!(
        listed.lines().any(|l| l.contains("\tci\twrite\tci\t")),
        "{listed}"
    );
    assert!(!listed.contains(&token), "list never shows tokens");

    let (address, shutdown) = start(config.clone()).await;
    let client = reqwest::Client::new();
    let use_key = || {
        client
            .get(format!("{address}/api/v1/operations"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(use_key().await.unwrap().status(), StatusCode::OK);

    stdout(&keys(&database, &["revoke", "ci"]));
    assert_eq!(use_key().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let again = keys(&database, &["revoke", "ci"]);
    assert!(!again.status.success(), "nothing left to revoke");
    shutdown.cancel();
}

#[test]
fn an_agent_key_is_bound_to_its_targets_and_holds_no_other_scope() {
    let dir = tempfile::tempdir().unwrap();
    let database = test_config(dir.path()).database.path;
    let created = stdout(&keys(
        &database,
        &[
            "create", "--name", "web-2", "--scope", "agent", "--target", "web-2", "--target",
            "web-3",
        ],
    ));
    assert!(created.contains("targets web-2,web-3"), "{created}");
    let token = created.lines().last().unwrap().trim();
    let store = Store::open(&test_config(dir.path()).database).unwrap();
    let key = store
        .read(|c| api_key_find(c, token))
        .unwrap()
        .expect("the key is stored");
    assert_eq!(key.scopes, [Scope::Agent]);
    assert_eq!(key.targets, ["web-2", "web-3"]);
    assert!(key.allows(Scope::Agent) && !key.allows(Scope::Read));

    for (args, why) in [
        (
            vec!["--scope", "agent", "--scope", "read", "--target", "a"],
            "stands alone",
        ),
        (vec!["--scope", "agent"], "needs the targets"),
        (vec!["--scope", "write", "--target", "a"], "for agent keys"),
        (vec!["--scope", "agent", "--target=-rf"], "--target"),
    ] {
        let mut all = vec!["create", "--name", "refused"];
        all.extend(args.iter().copied());
        let out = keys(&database, &all);
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[test]
fn only_opsqueue_section_key_variables_are_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let database = test_config(dir.path()).database.path;
    let other_tool = Command::new(env!("CARGO_BIN_EXE_opsqueue-api"))
        .args(["keys", "list"])
        .env("OPSQUEUE_DATABASE__PATH", &database)
        .env("OPSQUEUE_FAKEPVE_VENV", "/opt/elsewhere")
        .env_remove("OPSQUEUE_CONFIG")
        .output()
        .unwrap();
    stdout(&other_tool);
    let misspelt = Command::new(env!("CARGO_BIN_EXE_opsqueue-api"))
        .args(["keys", "list"])
        .env("OPSQUEUE_DATABASE__PATH", &database)
        .env("OPSQUEUE_API__LISTEN_ADRESS", "127.0.0.1:1")
        .env_remove("OPSQUEUE_CONFIG")
        .output()
        .unwrap();
    assert!(!misspelt.status.success(), "a misspelt key was accepted");
    assert!(
        String::from_utf8_lossy(&misspelt.stderr).contains("listen_adress"),
        "{}",
        String::from_utf8_lossy(&misspelt.stderr)
    );
}
