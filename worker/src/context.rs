//! What a driver gets for one attempt of one operation: who it is (id,
//! attempt, fence), when it must stop (the deadline, a cancellation token),
//! where its words go (`step`, `progress`, the command runner's output) and
//! the configuration.
//!
//! Invariants:
//! - Log lines are buffered in memory and written by the executor, fenced,
//!   every [`crate::executor::FLUSH_EVERY`] and in the same transaction as the
//!   finish; an attempt that logs nothing costs no log write. The buffer
//!   keeps at most `log_cap_bytes` per attempt (then one marker line), so a
//!   chatty program cannot exhaust memory before a flush.
//! - Cancellation has one reason, fixed by the first request; only a lost
//!   fence overrides it (that one means "write nothing at all").
//! - `progress` is fenced; a write refused by the fence stops the operation
//!   as lost.
//! - A workflow step's inputs (the results of the steps it depends on) come
//!   with its claim and are read-only ([`Context::inputs`]).
//! - State effects ([`Context::record`]: observations of host objects, and
//!   objects opsqueue manages) are kept in memory and written only with a
//!   completion, in its transaction.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsqueue_shared::operation::Progress;
use opsqueue_shared::store::{LogLine, StateEffect, Stream, WorkerWrite, WorkerWritten};
use opsqueue_shared::workflow::Inputs;
use opsqueue_shared::{Config, Fence, Operation, OperationId, time};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::runner::{self, CommandOutput, CommandSpec, LineSink, RunError};
use crate::writer::Writer;

/// Why an operation was asked to stop before its driver finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// A caller cancelled it: it ends `cancelled`.
    Cancelled = 1,
    /// Its `timeout_secs` passed: it ends `failed`, code `timeout`.
    Timeout = 2,
    /// The worker is shutting down and the grace period ran out: released
    /// (or failed `worker_shutdown` when not safe to re-run).
    Shutdown = 3,
    /// The claim no longer holds (reaped, or ended elsewhere): nothing more
    /// is written about this attempt.
    Lost = 4,
}

impl StopReason {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Cancelled),
            2 => Some(Self::Timeout),
            3 => Some(Self::Shutdown),
            4 => Some(Self::Lost),
            _ => None,
        }
    }
}

/// The stop switch of one running operation, shared by its task and the
/// claim loop.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: AtomicU8,
}

impl Stop {
    pub(crate) fn request(&self, reason: StopReason) {
        if reason == StopReason::Lost {
            self.reason.store(reason as u8, Ordering::SeqCst);
        } else {
            let _ =
                self.reason
                    .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
        }
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        StopReason::from_u8(self.reason.load(Ordering::SeqCst))
    }
}

/// How long [`Context::run_cleanup`] gives a command without its own timeout.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

const LOG_CAP_MARKER: &str =
    "[opsqueue: this attempt's log reached the cap; further lines dropped]";

/// Log lines waiting to be written.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    state: Mutex<LogState>,
    cap: u64,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<LogLine>,
    bytes: u64,
    full: bool,
}

impl LogBuffer {
    fn new(cap: u64) -> Self {
        Self {
            state: Mutex::new(LogState::default()),
            cap,
        }
    }

    /// Takes what is buffered (the lines are then the caller's to write).
    pub(crate) fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).lines)
    }

    fn snapshot(&self) -> Vec<LogLine> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .clone()
    }
}

impl LineSink for LogBuffer {
    fn line(&self, stream: Stream, line: String) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.full {
            return;
        }
        let size = line.len() as u64 + 1;
        let (stream, line) = if state.bytes + size > self.cap {
            state.full = true;
            (Stream::Step, LOG_CAP_MARKER.to_owned())
        } else {
            state.bytes += size;
            (stream, line)
        };
        state.lines.push(LogLine {
            at: time::now(),
            stream,
            line,
        });
    }
}

struct Scope {
    fence: Fence,
    kind: String,
    source: String,
    target: String,
    deadline: Instant,
    stop: Arc<Stop>,
    log: LogBuffer,
    effects: Mutex<Vec<StateEffect>>,
    writer: Option<Writer>,
    config: Arc<Config>,
    inputs: Inputs,
}

/// One attempt's view of the worker; cheap to clone.
#[derive(Clone)]
pub struct Context {
    scope: Arc<Scope>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("fence", &self.scope.fence)
            .field("kind", &self.scope.kind)
            .finish()
    }
}

impl Context {
    /// The context of one attempt of `op` (claimed: it has a fence).
    pub(crate) fn new(
        op: &Operation,
        stop: Arc<Stop>,
        writer: Option<Writer>,
        config: Arc<Config>,
    ) -> Self {
        let scope = Scope {
            fence: op.fence().expect("a claimed operation has a worker"),
            kind: op.kind.clone(),
            source: op.source.clone(),
            target: op.target.clone(),
            deadline: Instant::now() + Duration::from_secs(op.timeout_secs.max(1) as u64),
            stop,
            log: LogBuffer::new(config.database.log_cap_bytes),
            effects: Mutex::new(Vec::new()),
            writer,
            config,
            inputs: op.inputs.clone(),
        };
        Self {
            scope: Arc::new(scope),
        }
    }

    /// A context attached to no store: lines stay in memory
    /// ([`Context::log_lines`]) and `progress` always holds. For testing a
    /// driver on its own, and for probes.
    pub fn detached(config: Arc<Config>, kind: &str) -> Self {
        let scope = Scope {
            fence: Fence {
                id: OperationId::new(),
                worker_id: "detached".into(),
                attempt: 1,
            },
            kind: kind.to_owned(),
            source: "api".to_owned(),
            target: "local".to_owned(),
            deadline: Instant::now() + Duration::from_secs(24 * 3600),
            stop: Arc::default(),
            log: LogBuffer::new(config.database.log_cap_bytes),
            effects: Mutex::new(Vec::new()),
            writer: None,
            config,
            inputs: Inputs::new(),
        };
        Self {
            scope: Arc::new(scope),
        }
    }

    pub fn id(&self) -> OperationId {
        self.scope.fence.id
    }

    /// 1 on the first run.
    pub fn attempt(&self) -> i64 {
        self.scope.fence.attempt
    }

    pub fn worker_id(&self) -> &str {
        &self.scope.fence.worker_id
    }

    pub fn fence(&self) -> &Fence {
        &self.scope.fence
    }

    /// `family.verb`.
    pub fn kind(&self) -> &str {
        &self.scope.kind
    }

    /// Who asked for the operation (`api`, `ui`, `cli`, …; a workflow's
    /// steps carry the workflow's).
    pub fn source(&self) -> &str {
        &self.scope.source
    }

    /// The host the operation runs on (its `target`, `local` on a detached
    /// context): the key of what it observes and manages.
    pub fn target(&self) -> &str {
        &self.scope.target
    }

    pub fn config(&self) -> &Config {
        &self.scope.config
    }

    /// A workflow step's inputs: the results of the steps it depends on, by
    /// step name (empty for an operation outside a workflow).
    pub fn inputs(&self) -> &Inputs {
        &self.scope.inputs
    }

    /// When the operation's `timeout_secs` runs out.
    pub fn deadline(&self) -> Instant {
        self.scope.deadline
    }

    pub fn remaining(&self) -> Duration {
        self.scope
            .deadline
            .saturating_duration_since(Instant::now())
    }

    /// Resolves when the operation must stop (cancel, timeout, shutdown,
    /// lost claim); a driver's own waits select on it.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.scope.stop.token.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.scope.stop.token.is_cancelled()
    }

    /// The token itself, for tasks a driver spawns (take a `child_token`).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.scope.stop.token
    }

    /// Why it was asked to stop, once it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.scope.stop.reason()
    }

    /// Asks the operation to stop as a caller's cancel request would (for
    /// tests of drivers on a detached context).
    pub fn cancel(&self) {
        self.scope.stop.request(StopReason::Cancelled);
    }

    pub(crate) fn stop_with(&self, reason: StopReason) {
        self.scope.stop.request(reason);
    }

    /// Appends a step line to the operation's log.
    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(operation = %self.scope.fence.id, "{message}");
        self.scope.log.line(Stream::Step, message);
    }

    /// Records progress on the operation (fenced). Returns false, and stops
    /// the operation, if the claim no longer holds.
    pub async fn progress(&self, percent: Option<f64>, step: Option<&str>) -> bool {
        let Some(writer) = &self.scope.writer else {
            return true;
        };
        let progress = Progress {
            percent: percent.map(|p| p.clamp(0.0, 100.0)),
            step: step.map(str::to_owned),
        };
        let write = WorkerWrite::Progress {
            fence: self.scope.fence.clone(),
            progress,
        };
        match writer.submit(write).await {
            Ok(WorkerWritten::Applied { applied: true }) => true,
            Ok(_) => {
                self.stop_with(StopReason::Lost);
                false
            }
            Err(e) => {
                // The next heartbeat will tell whether the claim still holds.
                tracing::warn!(operation = %self.scope.fence.id, error = %e, "cannot record progress");
                true
            }
        }
    }

    /// Runs a program through the command runner, with this operation's
    /// log and cancellation (timeout, cancel and shutdown kill its group).
    pub async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, RunError> {
        runner::run(
            &spec,
            &self.scope.stop.token,
            &self.scope.log,
            self.scope.config.worker.output_cap_bytes,
        )
        .await
    }

    /// Runs a program that undoes what a stopped operation left half done
    /// (a start job still queued in systemd, …) after the operation was
    /// cancelled or timed out: same log and runner, but not stopped by the
    /// operation's cancellation; bounded by the spec's own timeout
    /// ([`CLEANUP_TIMEOUT`] when it has none).
    pub async fn run_cleanup(&self, mut spec: CommandSpec) -> Result<CommandOutput, RunError> {
        spec.timeout.get_or_insert(CLEANUP_TIMEOUT);
        runner::run(
            &spec,
            &CancellationToken::new(),
            &self.scope.log,
            self.scope.config.worker.output_cap_bytes,
        )
        .await
    }

    /// Lines logged and not yet written (on a detached context: all of them).
    pub fn log_lines(&self) -> Vec<LogLine> {
        self.scope.log.snapshot()
    }

    pub(crate) fn take_log(&self) -> Vec<LogLine> {
        self.scope.log.take()
    }

    /// Records what the driver observed of the host, or created on it. The
    /// effects are written with the operation's completion (fenced), and
    /// dropped if it does not complete.
    pub fn record(&self, effect: StateEffect) {
        self.scope
            .effects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(effect);
    }

    /// Effects recorded so far (on a detached context: all of them).
    pub fn effects(&self) -> Vec<StateEffect> {
        self.scope
            .effects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn take_effects(&self) -> Vec<StateEffect> {
        std::mem::take(&mut *self.scope.effects.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins_unless_the_claim_is_lost() {
        let stop = Stop::default();
        assert_eq!(stop.reason(), None);
        stop.request(StopReason::Timeout);
        stop.request(StopReason::Cancelled);
        assert_eq!(stop.reason(), Some(StopReason::Timeout));
        assert!(stop.token.is_cancelled());
        stop.request(StopReason::Lost);
        assert_eq!(stop.reason(), Some(StopReason::Lost));
    }

    #[test]
    fn the_log_buffer_stops_at_its_cap_with_one_marker() {
        let buffer = LogBuffer::new(10);
        buffer.line(Stream::Stdout, "12345".into());
        buffer.line(Stream::Stdout, "67890".into());
        buffer.line(Stream::Stdout, "more".into());
        let lines = buffer.take();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].line, LOG_CAP_MARKER);
        assert!(buffer.take().is_empty());
    }
}
