//! `opsqueue login` and where the connection comes from.

use std::os::unix::fs::PermissionsExt as _;

use crate::helpers::spawn_api_only;

#[test]
fn login_writes_a_0600_file_that_later_commands_use() {
    let app = spawn_api_only();
    let key_file = app.home.path().join("ops.key");
    std::fs::write(&key_file, format!("{}\n", app.cluster.token)).unwrap();

    let run = crate::helpers::finish(
        app.bare_command(&[
            "login",
            "--url",
            &app.cluster.api_url,
            "--token-file",
            key_file.to_str().unwrap(),
        ])
        .spawn()
        .unwrap(),
    );
    run.expect_code(0);
    let path = app.config_file();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&app.cluster.token), "{text}");
    assert!(text.contains(&app.cluster.api_url), "{text}");

    // No flag, no environment: the file is used.
    let listed = crate::helpers::finish(app.bare_command(&["ops", "ls"]).spawn().unwrap());
    listed.expect_code(0);
    // A flag still wins over the file.
    let wrong = crate::helpers::finish(
        app.bare_command(&["ops", "ls", "--token", "not-a-key"])
            .spawn()
            .unwrap(),
    );
    wrong.expect_code(4);
}

#[test]
fn a_login_with_a_wrong_key_is_refused_and_writes_nothing() {
    let app = spawn_api_only();
    let run = crate::helpers::finish(
        app.bare_command(&["login", "--url", &app.cluster.api_url, "--token", "wrong"])
            .spawn()
            .unwrap(),
    );
    run.expect_code(4);
    assert!(run.stderr.contains("401"), "{run:#?}");
    assert!(!app.config_file().exists());

    let run = crate::helpers::finish(
        app.bare_command(&["login", "--token", "x"])
            .spawn()
            .unwrap(),
    );
    run.expect_code(64);
    assert!(run.stderr.contains("--url"), "{run:#?}");
}
