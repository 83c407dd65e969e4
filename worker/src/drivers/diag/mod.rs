//! The `diag` driver: actions that touch nothing on the host, for tests,
//! benchmarks and checking that a worker is alive.
//!
//! - `diag.noop` completes at once, `changed: false`.
//! - `diag.sleep {seconds}` waits in-process and stops at once when the
//!   operation is cancelled; with `child: true` it runs `sleep <seconds>`
//!   through the command runner (the runner logs the child's pid as a step
//!   line), so cancellation and timeouts can be seen to kill a real process.
//! - `diag.fail {message, retryable}` fails with code `diag_failure`.
//!
//! If `[diag] record_path` is set, every execution first appends
//! `"<id> <attempt> <worker_id>\n"` to that file in one `write` on an
//! `O_APPEND` descriptor (atomic between processes for lines this short), so
//! a test can prove that each operation ran exactly once across workers.

use std::fs::File;
use std::io::Write as _;
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::diag::{DiagAction, Fail, Sleep};

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Checked, Driver, DriverError, Outcome, codes};
use crate::link::Link;
use crate::runner::CommandSpec;

pub struct Diag {
    record: Option<File>,
}

impl Diag {
    pub fn new(config: &Config) -> std::io::Result<Self> {
        let record = match &config.diag.record_path {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?,
            ),
            None => None,
        };
        Ok(Self { record })
    }

    fn record(&self, ctx: &Context) -> Result<(), DriverError> {
        let Some(mut file) = self.record.as_ref() else {
            return Ok(());
        };
        let line = format!("{} {} {}\n", ctx.id(), ctx.attempt(), ctx.worker_id());
        file.write_all(line.as_bytes()).map_err(|e| {
            DriverError::retryable(
                "diag_record",
                format!("cannot append to the record file: {e}"),
            )
        })
    }

    async fn sleep(&self, sleep: &Sleep, ctx: &Context) -> Result<Outcome, DriverError> {
        if sleep.child {
            let output = ctx
                .run(CommandSpec::new("sleep").arg(sleep.seconds.to_string()))
                .await?;
            let pid = output.pid;
            output.check()?;
            return Ok(Outcome::unchanged()
                .with("slept_secs", sleep.seconds)
                .with("pid", pid));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(sleep.seconds)) => {
                Ok(Outcome::unchanged().with("slept_secs", sleep.seconds))
            }
            () = ctx.cancelled() => Err(DriverError::cancelled()),
        }
    }
}

fn fail(fail: &Fail) -> DriverError {
    if fail.retryable {
        DriverError::retryable(codes::DIAG_FAILURE, fail.message.clone())
    } else {
        DriverError::permanent(codes::DIAG_FAILURE, fail.message.clone())
    }
}

/// The family's driver, as the registry builds it when `[diag]` is enabled.
pub fn driver(config: &Config, _link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::plain(Diag::new(config)?))
}

impl Driver for Diag {
    type Action = DiagAction;

    async fn execute(&self, action: &DiagAction, ctx: &Context) -> Result<Outcome, DriverError> {
        self.record(ctx)?;
        match action {
            DiagAction::Noop(_) => Ok(Outcome::unchanged()),
            DiagAction::Sleep(sleep) => self.sleep(sleep, ctx).await,
            DiagAction::Fail(f) => Err(fail(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opsqueue_shared::families::FamilyAction;
    use serde_json::json;

    use super::*;

    fn diag(config: &Config) -> (Diag, Context) {
        let ctx = Context::detached(Arc::new(config.clone()), "diag");
        (Diag::new(config).unwrap(), ctx)
    }

    fn action(kind: &str, payload: serde_json::Value) -> DiagAction {
        <DiagAction as FamilyAction>::parse(kind, payload).unwrap()
    }

    #[tokio::test]
    async fn each_diag_action_does_what_it_says() {
        let (driver, ctx) = diag(&Config::default());
        let done = driver
            .execute(&action("diag.noop", json!({})), &ctx)
            .await
            .unwrap();
        assert_eq!(done, Outcome::unchanged());

        let slept = driver
            .execute(&action("diag.sleep", json!({"seconds": 0.01})), &ctx)
            .await
            .unwrap();
        assert_eq!(slept.result["slept_secs"], json!(0.01));

        let err = driver
            .execute(
                &action("diag.fail", json!({"message": "boom", "retryable": true})),
                &ctx,
            )
            .await
            .unwrap_err();
        assert_eq!(err, DriverError::retryable(codes::DIAG_FAILURE, "boom"));
    }

    #[tokio::test]
    async fn a_child_sleep_runs_a_real_process_and_logs_its_pid() {
        let (driver, ctx) = diag(&Config::default());
        let done = driver
            .execute(
                &action("diag.sleep", json!({"seconds": 0.01, "child": true})),
                &ctx,
            )
            .await
            .unwrap();
        let pid = done.result["pid"].as_u64().unwrap();
        let lines = ctx.log_lines();
        assert!(lines[0].line.starts_with("$ sleep 0.01 [pid "), "{lines:?}");
        assert!(lines[0].line.contains(&pid.to_string()));
    }

    #[tokio::test]
    async fn a_cancelled_sleep_stops_at_once() {
        let (driver, ctx) = diag(&Config::default());
        ctx.cancel();
        let err = driver
            .execute(&action("diag.sleep", json!({"seconds": 3600})), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::CANCELLED);
    }

    #[tokio::test]
    async fn every_execution_is_recorded_when_a_record_file_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.diag.record_path = Some(dir.path().join("record"));
        let (driver, ctx) = diag(&config);
        driver
            .execute(&action("diag.noop", json!({})), &ctx)
            .await
            .unwrap();
        let _ = driver
            .execute(&action("diag.fail", json!({"message": "x"})), &ctx)
            .await;
        let record = std::fs::read_to_string(dir.path().join("record")).unwrap();
        let line = format!("{} 1 detached\n", ctx.id());
        assert_eq!(record, line.repeat(2));
    }
}
