//! The script driver against real executables in a temporary scripts
//! directory: what a script learns (environment, stdin, arguments), how its
//! exit status and last line decide, and which files may run at all.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use opsqueue_shared::{Config, Status};
use serde_json::{Value, json};

use crate::conformance::{Call, Slow, Subject, conforms};
use crate::{TestApp, error_code};

/// A scripts directory with one script per behaviour, and a state
/// directory beside it that the scripts write to.
pub struct ScriptsFixture {
    dir: tempfile::TempDir,
}

impl ScriptsFixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Self { dir };
        std::fs::create_dir_all(fixture.scripts()).unwrap();
        std::fs::create_dir_all(fixture.state()).unwrap();
        let marker = fixture.state().join("marker");
        fixture.write(
            "change.sh",
            &format!(
                "if [ -e {m} ]; then echo '{{\"changed\": false}}'; else touch {m}; echo made it; \
                 echo '{{\"changed\": true, \"made\": \"marker\"}}'; fi",
                m = marker.display()
            ),
        );
        fixture.write("fail.sh", "echo 'cannot do that' >&2\nexit 3");
        fixture.write("tempfail.sh", "echo 'busy, try later' >&2\nexit 75");
        fixture.write("sleepy.sh", "sleep 120");
        fixture.write(
            "record.sh",
            "env > \"$1/env\"\ncat > \"$1/stdin\"\necho \"$@\" > \"$1/args\"\npwd > \"$1/pwd\"\n\
             echo 'some progress'\necho '{\"changed\": false, \"note\": \"recorded\"}'",
        );
        fixture
    }

    pub fn scripts(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes an executable shell script.
    pub fn write(&self, name: &str, body: &str) {
        let path = self.scripts().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn configure(&self, config: &mut Config) {
        config.scripts.enabled = true;
        config.scripts.dir = self.scripts();
    }
}

impl Subject for ScriptsFixture {
    async fn start(_dir: &Path) -> Self {
        ScriptsFixture::new()
    }

    fn configure(&self, config: &mut Config) {
        ScriptsFixture::configure(self, config);
    }

    fn refused(&self) -> Vec<Call> {
        vec![
            ("script.run", json!({"name": "../change.sh"})),
            ("script.run", json!({"name": "/bin/sh"})),
            ("script.run", json!({"name": "-x"})),
            ("script.run", json!({"name": "a;b"})),
            ("script.run", json!({"name": "x".repeat(129)})),
            (
                "script.run",
                json!({"name": "change.sh", "args": ["$(id)"]}),
            ),
            ("script.run", json!({"name": "change.sh", "args": ["a b"]})),
            ("script.run", json!({"name": "change.sh", "args": ["a\nb"]})),
            (
                "script.run",
                json!({"name": "change.sh", "args": ["../../etc"]}),
            ),
            ("script.run", json!({"name": "change.sh", "unknown": 1})),
        ]
    }

    fn change(&self) -> Option<Call> {
        Some(("script.run", json!({"name": "change.sh"})))
    }

    fn permanent_failure(&self) -> Call {
        ("script.run", json!({"name": "fail.sh"}))
    }

    fn retryable_failure(&self) -> Option<(Call, Box<dyn FnOnce(&mut Config)>)> {
        Some((
            ("script.run", json!({"name": "tempfail.sh"})),
            Box::new(|_| {}),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured("script.run", json!({"name": "sleepy.sh"}))
    }

    async fn stop(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_driver_conforms() {
    conforms::<ScriptsFixture>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_learns_its_operation_from_its_environment_and_stdin_and_answers_on_its_last_line()
{
    let scripts = ScriptsFixture::new();
    let out = scripts.state();
    let app = TestApp::with(|c| scripts.configure(c));
    let worker = app.worker().await;
    let payload = json!({"name": "record.sh", "args": [out.display().to_string(), "create", "{operation_id}"],
                         "input": {"domain": "example.com"}});
    let id = app.enqueue("script.run", payload.clone());
    worker.step().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.status, Status::Completed, "{op:?} {:?}", app.logs(id));
    assert_eq!(
        op.result,
        Some(json!({"changed": false, "note": "recorded"}))
    );
    assert!(
        app.logs(id).iter().any(|l| l.line == "some progress"),
        "its output is in the log"
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(
        read("args").trim(),
        format!("{} create {id}", out.display())
    );
    assert_eq!(
        Path::new(read("pwd").trim()),
        std::fs::canonicalize(scripts.scripts()).unwrap()
    );
    let env: Vec<String> = read("env").lines().map(str::to_owned).collect();
    for expected in [
        format!("OPSQUEUE_OPERATION_ID={id}"),
        "OPSQUEUE_ATTEMPT=1".to_owned(),
        "OPSQUEUE_OPERATION_TYPE=script.run".to_owned(),
        "OPSQUEUE_SCRIPT=record.sh".to_owned(),
        "OPSQUEUE_TARGET=local".to_owned(),
    ] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    let in_env = env
        .iter()
        .find_map(|l| l.strip_prefix("OPSQUEUE_PAYLOAD="))
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(in_env).unwrap(), payload);
    assert!(
        !env.iter()
            .any(|l| l.starts_with("OPSQUEUE_DATABASE") || l.starts_with("CARGO")),
        "the worker's own environment reached the script: {env:?}"
    );
    let stdin: Value = serde_json::from_str(&read("stdin")).unwrap();
    assert_eq!(stdin["operation_id"], id.to_string());
    assert_eq!(stdin["attempt"], 1);
    assert_eq!(stdin["payload"], payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_executable_files_inside_the_scripts_directory_run() {
    let scripts = ScriptsFixture::new();
    let outside = tempfile::tempdir().unwrap();
    let escapee = outside.path().join("escapee.sh");
    let ran = outside.path().join("ran");
    std::fs::write(&escapee, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    std::fs::set_permissions(&escapee, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&escapee, scripts.scripts().join("escape.sh")).unwrap();
    std::fs::write(scripts.scripts().join("plain.sh"), "#!/bin/sh\ntrue\n").unwrap();
    std::fs::create_dir(scripts.scripts().join("subdir")).unwrap();
    let app = TestApp::with(|c| scripts.configure(c));
    let worker = app.worker().await;

    for name in ["escape.sh", "plain.sh", "subdir", "missing.sh"] {
        let id = app.enqueue("script.run", json!({"name": name}));
        worker.step().await.unwrap();
        let op = app.get(id);
        assert_eq!(op.status, Status::Failed, "{name}: {op:?}");
        assert_eq!(error_code(&op), "script_not_allowed", "{name}");
        assert_eq!(op.attempt, 1);
    }
    assert!(!ran.exists(), "the script outside the directory ran");
}
