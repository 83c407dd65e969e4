//! A full disk, for real: the database on a small tmpfs this test mounts
//! (root), filled by a file until the kernel says `ENOSPC`. Enqueues then
//! answer `503 storage_full` with `Retry-After`, `/ready` fails and the
//! metric says so, while the worker and the monitor keep running; once a
//! little space is freed, every enqueue is accepted again and runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use opsqueue_tests::{Cluster, Response, completed};
use reqwest::StatusCode;
use serde_json::json;

/// A tmpfs of `size` mounted on a new directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test mounts a tmpfs, which needs root"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs on {:?}", dir.path());
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 4096];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {path:?}: {e}"),
        }
    }
    let _ = file.sync_all();
    written
}

/// Frees `bytes` at the end of the filler file.
fn free(path: &Path, bytes: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(bytes)).unwrap();
}

async fn noop(cluster: &Cluster) -> Response {
    cluster
        .post(
            "/api/v1/operations",
            json!({"type": "diag.noop", "payload": {}}),
        )
        .await
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_storage_full_and_a_little_freed_space_brings_every_enqueue_back() {
    let disk = SmallDisk::mount("2m");
    let mut cluster = Cluster::new();
    cluster.set_env(
        "OPSQUEUE_DATABASE__PATH",
        disk.path("opsqueue.db").display(),
    );
    cluster.start_all();
    // Some history first, so the WAL holds more than a fresh database.
    for _ in 0..30 {
        let op = noop(&cluster).await;
        assert_eq!(op.status, StatusCode::ACCEPTED, "{:?}", op.body);
    }

    let filler = disk.path("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the disk was full before the filler");

    // Writes may still fit in pages SQLite already has; soon none does.
    let mut refused = None;
    for _ in 0..200 {
        let answer = noop(&cluster).await;
        if answer.status != StatusCode::ACCEPTED {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("200 enqueues on a full disk were all accepted");
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    refused.assert_problem("storage_full", "an enqueue on a full disk");
    let retry_after = refused.headers.get(reqwest::header::RETRY_AFTER);
    assert!(
        retry_after
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some(),
        "no Retry-After: {:?}",
        refused.headers
    );
    let ready = cluster.get("/ready").await;
    ready.assert_problem("not_ready", "/ready on a full disk");
    assert!(
        ready.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("full"),
        "{:?}",
        ready.body
    );
    let metrics = cluster.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap_or_default();
    assert_eq!(metric(text, "opsqueue_store_full"), Some(1.0), "{text}");

    // Free a little (a tenth of the disk), and every enqueue is back.
    free(&filler, 200 * 1024);
    let mut ids = Vec::new();
    for i in 0..60 {
        let answer = noop(&cluster).await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "enqueue {i} after freeing space: {:?}\n{}",
            answer.body,
            cluster.logs_tail()
        );
        ids.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        completed(&cluster.wait_terminal(id).await);
    }
    let ready = cluster.get("/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    let metrics = cluster.get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert_eq!(metric(text, "opsqueue_store_full"), Some(0.0), "{text}");

    // The worker and the monitor rode it out.
    for proc in cluster
        .workers
        .iter_mut()
        .chain(cluster.monitors.iter_mut())
    {
        assert!(
            proc.wait_exit(std::time::Duration::from_millis(200))
                .is_none(),
            "a process exited on the full disk:\n{}",
            proc.log_text()
        );
    }
    drop(cluster);
    drop(disk);
}
