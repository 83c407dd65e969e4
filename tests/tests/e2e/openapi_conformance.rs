//! The OpenAPI document against the real API binary, by
//! [schemathesis](https://pypi.org/project/schemathesis/) (PyPI, MIT; run
//! from its own virtual environment, which `scripts/install-test-deps`
//! makes): requests generated from the document for every route, valid
//! and invalid ones, and every answer checked against it. No 5xx, no
//! status the document does not declare, no body or header outside its
//! schema, no invalid request accepted and no valid request refused (the
//! few operations whose body rules the document does not state yet are
//! listed, with why, in `tests/schemathesis/schemathesis.toml`).
//!
//! Deterministic (fixed seed, derandomized) and bounded (a few examples per
//! operation), so it stays fast and a failure reproduces.

use std::path::{Path, PathBuf};
use std::process::Command;

use opsqueue_tests::Cluster;

/// schemathesis's virtual environment: `SCHEMATHESIS_VENV`, else
/// `.venv/schemathesis` in the workspace.
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("SCHEMATHESIS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/schemathesis"));
    let st = venv.join("bin/st");
    assert!(
        st.is_file(),
        "{} is missing: run scripts/install-test-deps (it installs schemathesis there)",
        st.display()
    );
    st
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_is_what_the_openapi_document_says() {
    let st = schemathesis();
    let mut cluster = Cluster::new();
    for family in [
        "PM2",
        "SYSTEMD",
        "CADDY",
        "PROXMOX",
        "CLOUDPANEL",
        "SCRIPTS",
    ] {
        cluster.set_env(&format!("OPSQUEUE_{family}__ENABLED"), "true");
    }
    // Every absolute path is inside the base directory, so a path the
    // document allows is one the configuration allows.
    cluster.set_env("OPSQUEUE_PM2__BASE_DIR", "/");
    // A long-poll answers within a request's timeout.
    cluster.set_env("OPSQUEUE_API__MAX_WAIT_SECS", "1");
    cluster.start_api();
    // A worker with no family on keeps /ready ready and runs the diag
    // operations; nothing it could run touches the host.
    let off: Vec<(&str, String)> = [
        "PM2",
        "SYSTEMD",
        "CADDY",
        "PROXMOX",
        "CLOUDPANEL",
        "SCRIPTS",
    ]
    .iter()
    .map(|family| {
        (
            Box::leak(format!("OPSQUEUE_{family}__ENABLED").into_boxed_str()) as &str,
            "false".to_owned(),
        )
    })
    .collect();
    cluster.start_worker(&off);

    let report = cluster.path("schemathesis");
    let output = Command::new(&st)
        .arg("--config-file")
        .arg(workspace().join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", cluster.api_url))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", cluster.token),
        ])
        .args(["--checks", "all"])
        // Streams (see the configuration file).
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--exclude-path", "/api/v1/operations/{id}/logs"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            "12",
            "--seed",
            "18",
            "--generation-deterministic",
        ])
        // One worker: hypothesis parses lambdas' source with `ast`, which on
        // Debian 12's Python 3.11 fails at random from two threads at once
        // ("AST constructor recursion depth mismatch").
        .args(["--workers", "1", "--request-timeout", "20", "--no-color"])
        .arg("--report-dir")
        .arg(&report)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(cluster.dir.path())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers outside the OpenAPI document:\n{text}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs_tail()
    );
    assert!(
        text.contains("Tested:"),
        "schemathesis tested nothing:\n{text}"
    );
}
