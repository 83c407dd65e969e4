//! PVE tasks: parsing a UPID, waiting until its task stops, and reading its
//! log into the operation's log.
//!
//! A UPID reads `UPID:node:pid:pstart:starttime:type:id:user:` (pve-common
//! `PVE/UPID.pm`). Its status is polled on the node it names, starting at
//! the configured interval and growing by half each poll up to twice that,
//! never sleeping past the operation's deadline, and stopping at once when
//! the operation is cancelled (PVE is then asked, best effort, to stop the
//! task too). A task succeeded iff its `exitstatus` is `OK` or
//! `WARNINGS: n`; anything else is PVE's error message.
//!
//! So that a later attempt can resume waiting instead of starting a second
//! task, the UPID goes into the operation's progress step
//! ([`progress_step`]), which the store keeps with the operation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::client::{PveClient, codes};
use crate::context::{Context, StopReason};
use crate::drivers::driver::DriverError;

/// Polls in a row that may fail (PVE or the network hiccuping) before the
/// attempt gives up with a retryable error.
const POLL_FAILURES_TOLERATED: u32 = 5;
/// Task log lines copied into the operation's log.
const TASK_LOG_LINES: usize = 500;
/// How long a best-effort stop of the PVE task may take on cancel.
const STOP_TASK_WAIT: Duration = Duration::from_secs(3);

/// A parsed UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    raw: String,
    pub node: String,
    pub task_type: String,
    pub id: String,
    pub user: String,
}

impl Upid {
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// An HA task (`hastart`, `hamigrate`, …) only files a request with
    /// ha-manager; the change happens after it ends.
    pub fn is_ha(&self) -> bool {
        self.task_type.starts_with("ha")
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Upid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "not a PVE task id (UPID): {:?}",
                s.chars().take(120).collect::<String>()
            )
        };
        let fields: Vec<&str> = s.split(':').collect();
        // "UPID", node, pid, pstart, starttime, type, id, user, "" (the trailing colon)
        if fields.len() != 9 || fields[0] != "UPID" || !fields[8].is_empty() {
            return Err(bad());
        }
        let hex = |f: &str, lengths: &[usize]| {
            lengths.contains(&f.len()) && f.bytes().all(|b| b.is_ascii_hexdigit())
        };
        let node = fields[1];
        let node_ok = !node.is_empty()
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        let plain = |f: &str| f.bytes().all(|b| !b.is_ascii_whitespace() && b != b'/');
        if !node_ok
            || !hex(fields[2], &[8])
            || !hex(fields[3], &[8, 9])
            || !hex(fields[4], &[8])
            || fields[5].is_empty()
            || !plain(fields[5])
            || !plain(fields[6])
            || fields[7].is_empty()
            || !plain(fields[7])
        {
            return Err(bad());
        }
        Ok(Self {
            raw: s.to_owned(),
            node: node.to_owned(),
            task_type: fields[5].to_owned(),
            id: fields[6].to_owned(),
            user: fields[7].to_owned(),
        })
    }
}

/// How a stopped task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub exitstatus: String,
}

impl TaskEnd {
    /// `OK`, or `WARNINGS: n` (a success with warnings).
    pub fn succeeded(&self) -> bool {
        self.exitstatus == "OK"
            || self
                .exitstatus
                .strip_prefix("WARNINGS: ")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The task's failure as a permanent error with PVE's message.
    pub fn into_error(self, upid: &Upid) -> DriverError {
        DriverError::permanent(
            codes::TASK_FAILED,
            format!("PVE task {} failed: {}", upid.task_type, self.exitstatus),
        )
    }
}

/// The progress step that records a task, and how a later attempt finds it.
const STEP_PREFIX: &str = "waiting for PVE task ";

pub fn progress_step(upid: &Upid) -> String {
    format!("{STEP_PREFIX}{upid}")
}

/// The UPID a progress step recorded, if it recorded one.
pub fn recorded_upid(step: &str) -> Option<Upid> {
    step.strip_prefix(STEP_PREFIX)?.parse().ok()
}

/// Sleeps `pause` (capped by the deadline); false when the operation was
/// asked to stop meanwhile.
pub async fn pause(ctx: &Context, pause: Duration) -> bool {
    let pause = pause.min(ctx.remaining());
    tokio::select! {
        () = tokio::time::sleep(pause) => !ctx.is_cancelled(),
        () = ctx.cancelled() => false,
    }
}

/// The growing pause between polls: ×1.5 per poll, at most twice `first`.
pub fn next_pause(current: Duration, first: Duration) -> Duration {
    (current.mul_f64(1.5)).min(first * 2)
}

/// The task's status now: `None` while it runs.
pub async fn status(client: &PveClient, upid: &Upid) -> Result<Option<TaskEnd>, DriverError> {
    let status = client
        .get(
            &["nodes", &upid.node, "tasks", upid.as_str(), "status"],
            &[],
        )
        .await?;
    match status.get("status").and_then(Value::as_str) {
        Some("running") => Ok(None),
        Some("stopped") => Ok(Some(TaskEnd {
            exitstatus: status
                .get("exitstatus")
                .and_then(Value::as_str)
                .unwrap_or("unexpected status")
                .to_owned(),
        })),
        _ => Err(DriverError::retryable(
            codes::BAD_RESPONSE,
            format!("task {upid}: status without running/stopped: {status}"),
        )),
    }
}

/// Waits until the task stops, then copies its log into the operation's
/// log. Stops waiting (and asks PVE to stop the task) when the operation is
/// cancelled.
pub async fn wait(
    client: &PveClient,
    upid: &Upid,
    ctx: &Context,
    first_pause: Duration,
) -> Result<TaskEnd, DriverError> {
    let mut delay = first_pause;
    let mut failures = 0;
    let end = loop {
        match status(client, upid).await {
            Ok(Some(end)) => break end,
            Ok(None) => failures = 0,
            Err(e) if e.retryable && failures + 1 < POLL_FAILURES_TOLERATED => {
                failures += 1;
                ctx.step(format!(
                    "polling the task failed ({failures}): {}",
                    e.message
                ));
            }
            Err(e) => return Err(e),
        }
        if !pause(ctx, delay).await {
            // A cancel or a timeout stops the task too; a worker shutting
            // down (or losing its claim) leaves it for the next attempt.
            if matches!(
                ctx.stop_reason(),
                Some(StopReason::Cancelled | StopReason::Timeout)
            ) {
                stop(client, upid, ctx).await;
            }
            return Err(DriverError::cancelled());
        }
        delay = next_pause(delay, first_pause);
    };
    copy_log(client, upid, ctx).await;
    ctx.step(format!(
        "PVE task {} ended: {}",
        upid.task_type, end.exitstatus
    ));
    Ok(end)
}

/// Asks PVE to stop the task; best effort, briefly.
async fn stop(client: &PveClient, upid: &Upid, ctx: &Context) {
    let path = ["nodes", &upid.node, "tasks", upid.as_str()];
    let request = client.delete(&path);
    match tokio::time::timeout(STOP_TASK_WAIT, request).await {
        Ok(Ok(_)) => ctx.step(format!("asked PVE to stop task {upid}")),
        Ok(Err(e)) => ctx.step(format!("could not stop PVE task {upid}: {}", e.message)),
        Err(_) => ctx.step(format!(
            "PVE did not answer the stop of task {upid} in time"
        )),
    }
}

/// The task's log lines, as `pve: <line>` steps.
async fn copy_log(client: &PveClient, upid: &Upid, ctx: &Context) {
    let lines = client
        .get(
            &["nodes", &upid.node, "tasks", upid.as_str(), "log"],
            &[("start", "0".into()), ("limit", TASK_LOG_LINES.to_string())],
        )
        .await;
    match lines {
        Ok(Value::Array(lines)) => {
            for line in lines {
                if let Some(text) = line.get("t").and_then(Value::as_str) {
                    ctx.step(format!("pve: {text}"));
                }
            }
        }
        Ok(other) => ctx.step(format!("the task log is not a list: {other}")),
        Err(e) => ctx.step(format!("cannot read the task log: {}", e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_upid_parses_into_its_node_type_and_id() {
        let upid: Upid = "UPID:pve1:000003E8:00001B58:6B02C01D:qmstart:100:root@pam!ci:"
            .parse()
            .unwrap();
        assert_eq!(upid.node, "pve1");
        assert_eq!(upid.task_type, "qmstart");
        assert_eq!(upid.id, "100");
        assert_eq!(upid.user, "root@pam!ci");
        assert!(!upid.is_ha());
        let nine: Upid = "UPID:pve-2:000003E8:100001B58:6B02C01D:hamigrate:200:root@pam:"
            .parse()
            .unwrap();
        assert!(nine.is_ha());
        for bad in [
            "",
            "UPID:pve1:3E8:1B58:6B02C01D:qmstart:100:root@pam:",
            "UPID:pve1:000003E8:00001B58:6B02C01D:qmstart:100:root@pam",
            "UPID:-pve:000003E8:00001B58:6B02C01D:qmstart:100:root@pam:",
            "UPID:pve1:000003E8:00001B58:6B02C01D:qm/start:100:root@pam:",
            "TASK:pve1:000003E8:00001B58:6B02C01D:qmstart:100:root@pam:",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ok_and_warnings_succeed_anything_else_fails() {
        let end = |s: &str| TaskEnd {
            exitstatus: s.into(),
        };
        assert!(end("OK").succeeded());
        assert!(end("WARNINGS: 2").succeeded());
        assert!(!end("WARNINGS: ").succeeded());
        assert!(!end("VM is locked (backup)").succeeded());
        assert!(!end("unexpected status").succeeded());
    }

    #[test]
    fn a_recorded_task_is_found_again_and_polls_back_off_to_twice_the_interval() {
        let upid: Upid = "UPID:pve1:000003E8:00001B58:6B02C01D:qmstart:100:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(recorded_upid(&progress_step(&upid)), Some(upid));
        assert_eq!(recorded_upid("something else"), None);
        let first = Duration::from_millis(1000);
        assert_eq!(next_pause(first, first), Duration::from_millis(1500));
        assert_eq!(next_pause(Duration::from_millis(1500), first), first * 2);
        assert_eq!(next_pause(first * 2, first), first * 2);
    }
}
