//! Runs one claimed attempt to its end and records how it ended.
//!
//! The executor parses the stored action again (`invalid_payload` if it no
//! longer parses), hands it to its family's driver and decides the outcome;
//! drivers never decide their own fate:
//! - the driver returned a result → `completed`, with `changed` always in it
//!   (a result wins even over a stop asked for too late to matter);
//! - the deadline (`timeout_secs`) passed → the driver is cancelled (its
//!   process group is killed by the runner) → `failed`, code `timeout`;
//! - a caller cancelled it → `cancelled`;
//! - the worker shut down past its grace → released (pending again, the
//!   attempt not counted) when `rerun_safe`, else `failed` `worker_shutdown`;
//! - the claim was lost (reaped, or ended elsewhere) → nothing is written;
//! - a retryable driver error with attempts left → back to pending at
//!   `now + min(backoff_max, base · 2^(attempt−1))` ±25 % jitter; any other
//!   error → `failed` with the driver's code;
//! - a panic in the driver → `failed`, code `panic`.
//!
//! A stopped driver gets the runner's kill grace plus a margin to return;
//! past that its future is dropped (which kills any process group it still
//! had). Buffered log lines are flushed every [`FLUSH_EVERY`] while it runs
//! and go with the finish, in the same transaction.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opsqueue_shared::config::WorkerConfig;
use opsqueue_shared::operation::codes;
use opsqueue_shared::store::{Finish, FinishWrite, StoreError, WorkerWrite, WorkerWritten};
use opsqueue_shared::time::{self, Timestamp};
use opsqueue_shared::{Action, Operation, OperationError, OperationId};
use tokio::time::{Instant, sleep_until};

use crate::context::{Context, Stop, StopReason};
use crate::drivers::Registry;
use crate::drivers::driver::{DriverError, DriverFuture, Outcome};
use crate::runner::DEFAULT_KILL_GRACE;
use crate::state::Shared;
use crate::writer::Writer;

/// How one attempt ended, as far as this worker knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Recorded (fenced) as this.
    Finished(Finish),
    /// The claim no longer held: nothing was recorded.
    Lost,
    /// The store refused the finish; the monitor will reap the operation.
    Unrecorded(String),
}

/// One attempt run by [`Worker::step`].
#[derive(Debug, Clone)]
pub struct Ran {
    pub id: OperationId,
    pub kind: String,
    pub attempt: i64,
    pub ended: Ended,
}

/// How often a running operation's buffered log lines are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How long a driver asked to stop may take beyond the kill grace.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (1-based, the attempt that just
/// failed): `min(max, base · 2^(attempt−1))`, scaled by `jitter` in
/// [0.75, 1.25).
pub fn backoff(attempt: i64, base_ms: u64, max_ms: u64, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 63) as u32;
    let raw = base_ms.saturating_mul(2u64.saturating_pow(doublings));
    let capped = raw.min(max_ms) as f64;
    Duration::from_secs_f64(capped * jitter.clamp(0.75, 1.25) / 1000.0)
}

fn jitter() -> f64 {
    0.75 + 0.5 * rand::random::<f64>()
}

/// Polls a driver future, turning a panic into an error.
struct CatchUnwind<'a>(DriverFuture<'a>);

type Panic = Box<dyn Any + Send>;

impl Future for CatchUnwind<'_> {
    type Output = Result<Result<Outcome, DriverError>, Panic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let call = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: &Panic) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn failed(code: &str, message: impl Into<String>) -> Finish {
    Finish::Failed {
        error: OperationError::new(code, message, false),
    }
}

/// Executes one attempt and decides how it ends; `None` when the claim was
/// lost and nothing may be written. `writer` (absent for a detached run)
/// receives periodic log flushes.
pub(crate) async fn execute(
    op: &Operation,
    ctx: &Context,
    drivers: &Registry,
    config: &WorkerConfig,
    writer: Option<&Writer>,
) -> Option<Finish> {
    let action = match Action::parse(&op.kind, op.action_payload()) {
        Ok(action) => action,
        Err(e) => {
            return Some(failed(
                codes::INVALID_PAYLOAD,
                format!("the stored payload no longer parses: {e}"),
            ));
        }
    };
    if let Err(e) = action.check_config(ctx.config()) {
        return Some(failed(codes::INVALID_PAYLOAD, e.to_string()));
    }
    let Some(call) = drivers.execute(&action, ctx) else {
        return Some(failed(
            codes::NO_DRIVER,
            format!("this worker has no {} driver", action.family()),
        ));
    };
    let mut call = CatchUnwind(call);
    let deadline = sleep_until(ctx.deadline());
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut give_up: Option<Instant> = None;
    let mut next_flush = Instant::now() + FLUSH_EVERY;
    let ended = loop {
        tokio::select! {
            biased;
            result = &mut call => break Some(result),
            () = &mut deadline, if !timed_out => {
                timed_out = true;
                ctx.step(format!("ran past its timeout of {}s; stopping it", op.timeout_secs));
                ctx.stop_with(StopReason::Timeout);
            }
            () = ctx.cancelled(), if give_up.is_none() => {
                give_up = Some(Instant::now() + DEFAULT_KILL_GRACE + STOP_MARGIN);
            }
            () = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                ctx.step("the driver did not stop in time; abandoned it");
                break None;
            }
            () = sleep_until(next_flush), if writer.is_some() => {
                flush(ctx, writer);
                next_flush = Instant::now() + FLUSH_EVERY;
            }
        }
    };
    // Dropping the driver's future kills any process group it still holds.
    drop(call);

    let reason = ctx.stop_reason();
    if reason == Some(StopReason::Lost) {
        return None;
    }
    let error = match ended {
        Some(Ok(Ok(outcome))) => {
            return Some(Finish::Completed {
                result: outcome.into_result(),
            });
        }
        Some(Err(panic)) => {
            let message = panic_message(&panic);
            tracing::error!(operation = %op.id, kind = %op.kind, "driver panicked: {message}");
            return Some(failed(
                codes::PANIC,
                format!("the driver panicked: {message}"),
            ));
        }
        Some(Ok(Err(error))) => Some(error),
        None => None,
    };
    Some(match (reason, error) {
        (Some(StopReason::Timeout), _) => failed(
            codes::TIMEOUT,
            format!(
                "ran longer than its timeout of {}s and was stopped",
                op.timeout_secs
            ),
        ),
        (Some(StopReason::Cancelled), _) => {
            ctx.step("cancel requested; stopped");
            Finish::Cancelled {
                error: OperationError::new(codes::CANCELLED, "cancelled while running", false),
            }
        }
        (Some(StopReason::Shutdown), _) if op.rerun_safe => {
            ctx.step("the worker shut down before it finished; handed back for another run");
            Finish::Released
        }
        (Some(StopReason::Shutdown), _) => {
            let message =
                "the worker shut down before it finished, and it is not safe to run again";
            ctx.step(message);
            failed(codes::WORKER_SHUTDOWN, message)
        }
        (Some(StopReason::Lost), _) => unreachable!("handled above"),
        (None, Some(error)) => after_error(op, ctx, config, error),
        (None, None) => unreachable!("a driver is only abandoned after a stop"),
    })
}

fn after_error(op: &Operation, ctx: &Context, config: &WorkerConfig, error: DriverError) -> Finish {
    let attempt_line = format!(
        "attempt {} of {} failed ({}): {}",
        op.attempt, op.max_attempts, error.code, error.message
    );
    if error.retryable && op.attempt < op.max_attempts {
        let delay = backoff(
            op.attempt,
            config.backoff_base_ms,
            config.backoff_max_ms,
            jitter(),
        );
        ctx.step(format!(
            "{attempt_line}; retrying in {} ms",
            delay.as_millis()
        ));
        Finish::Retry {
            error: error.into_operation_error(),
            run_at: time::add_secs(time::now(), delay.as_secs_f64()),
        }
    } else {
        if error.retryable {
            ctx.step(format!("{attempt_line}; no attempts left"));
        }
        Finish::Failed {
            error: error.into_operation_error(),
        }
    }
}

fn flush(ctx: &Context, writer: Option<&Writer>) {
    let Some(writer) = writer else { return };
    let lines = ctx.take_log();
    if !lines.is_empty() {
        // Ordered before the finish; a refusal (lost claim) is found by the
        // next heartbeat.
        drop(writer.send_now(WorkerWrite::Log {
            fence: ctx.fence().clone(),
            lines,
        }));
    }
}

/// How one attempt went, for the slot that ran it.
pub(crate) struct Attempted {
    pub ran: Ran,
    /// When the operation is due again, if it was put back for a retry.
    pub retry_at: Option<Timestamp>,
    /// The slot's next operation, claimed with the finish.
    pub next: Option<Operation>,
}

/// Runs one claimed operation and writes its end (fenced, with its
/// remaining log lines and counter deltas); with `claim_next`, the same
/// transaction claims the slot's next operation (unless the worker is
/// shutting down).
pub(crate) async fn run_attempt(
    worker: &Shared,
    op: Operation,
    stop: Arc<Stop>,
    claim_next: bool,
) -> Attempted {
    let started = std::time::Instant::now();
    let fence = op.fence().expect("a claimed operation has a worker");
    let ctx = Context::new(
        &op,
        stop,
        Some(worker.writer.clone()),
        worker.config.clone(),
    );
    let finish = execute(
        &op,
        &ctx,
        &worker.drivers,
        &worker.config.worker,
        Some(&worker.writer),
    )
    .await;
    let attempted = |ended, retry_at, next| Attempted {
        ran: Ran {
            id: op.id,
            kind: op.kind.clone(),
            attempt: op.attempt,
            ended,
        },
        retry_at,
        next,
    };
    let Some(finish) = finish else {
        tracing::warn!(operation = %op.id, attempt = op.attempt, "the claim was lost: stopped without recording anything");
        return attempted(Ended::Lost, None, None);
    };
    let retry_at = match &finish {
        Finish::Retry { run_at, .. } => Some(*run_at),
        _ => None,
    };
    let effects = match finish {
        Finish::Completed { .. } => ctx.take_effects(),
        _ => Vec::new(),
    };
    let done = Arc::new(FinishWrite {
        fence,
        finish,
        logs: ctx.take_log(),
        effects,
        target: op.target.clone(),
        family: op.family().to_owned(),
        // A workflow step's end may release steps that wait for it.
        has_resource: op.resource.is_some() || op.parent_id.is_some(),
        duration_secs: started.elapsed().as_secs_f64(),
    });
    let (ended, next) = match record(worker, &done, claim_next).await {
        Ok((true, next)) => (Ended::Finished(done.finish.clone()), next),
        Ok((false, next)) => {
            tracing::warn!(operation = %op.id, attempt = op.attempt, "the claim was lost before the finish: not recorded");
            (Ended::Lost, next)
        }
        Err(e) => {
            tracing::error!(operation = %op.id, error = %e, "cannot record the end of an operation; the monitor will reap it when its lease expires");
            (Ended::Unrecorded(e.to_string()), None)
        }
    };
    tracing::debug!(operation = %op.id, kind = %op.kind, attempt = op.attempt, ?ended, "attempt ended");
    attempted(ended, retry_at, next)
}

/// Hands an operation claimed while the worker began to stop back
/// untouched: pending again at once, the attempt not counted (it never
/// started, so this is safe whatever the action).
pub(crate) async fn hand_back(worker: &Shared, op: Operation) {
    let Some(fence) = op.fence() else { return };
    let done = Arc::new(FinishWrite {
        fence,
        finish: Finish::Released,
        logs: Vec::new(),
        effects: Vec::new(),
        target: op.target.clone(),
        family: op.family().to_owned(),
        has_resource: op.resource.is_some(),
        duration_secs: 0.0,
    });
    match record(worker, &done, false).await {
        Ok(_) => {
            tracing::info!(operation = %op.id, "claimed while stopping: handed back untouched")
        }
        Err(e) => {
            tracing::warn!(operation = %op.id, error = %e, "cannot hand back an operation claimed while stopping; the monitor reaps it when its lease expires")
        }
    }
}

/// How long a remote worker keeps sending a finish the API did not answer
/// (its link may be down): only the API's answer says whether it counted.
const REMOTE_FINISH_PATIENCE: Duration = Duration::from_secs(15 * 60);
/// The longest pause between two tries.
const MAX_FINISH_PAUSE: Duration = Duration::from_secs(5);

/// Commits the finish; on a store error tries again, for about a third of
/// the lease beside the database (the operation is not heartbeated
/// meanwhile), or until the API answers (up to
/// [`REMOTE_FINISH_PATIENCE`]) on a remote worker.
async fn record(
    worker: &Shared,
    done: &Arc<FinishWrite>,
    claim_next: bool,
) -> Result<(bool, Option<Operation>), StoreError> {
    let patience = if worker.writer.claims_wait() {
        REMOTE_FINISH_PATIENCE
    } else {
        Duration::from_secs(worker.config.worker.lease_secs) / 3
    };
    let give_up = Instant::now() + patience;
    let mut pause = Duration::from_millis(50);
    loop {
        let write = WorkerWrite::Finish {
            done: done.clone(),
            claim_next,
        };
        match worker.writer.submit(write).await {
            Ok(WorkerWritten::Finished { applied, next }) => {
                return Ok((applied, next.map(|claimed| claimed.0)));
            }
            Ok(other) => {
                return Err(StoreError::Task(format!(
                    "unexpected answer {} to a finish",
                    other.name()
                )));
            }
            Err(e) if Instant::now() + pause >= give_up => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "recording a finish failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_FINISH_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap_within_the_jitter() {
        assert_eq!(backoff(1, 1000, 600_000, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1000, 600_000, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, 1000, 600_000, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(40, 1000, 600_000, 1.0), Duration::from_secs(600));
        assert_eq!(backoff(1, 1000, 600_000, 0.75), Duration::from_millis(750));
        assert_eq!(backoff(1, 1000, 600_000, 9.0), Duration::from_millis(1250));
        assert!(backoff(i64::MAX, u64::MAX, u64::MAX, 1.0) > Duration::from_secs(1 << 50));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.75..1.25).contains(&j));
        }
    }
}
