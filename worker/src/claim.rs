//! The claim loop: keeps up to `concurrency` operations running.
//!
//! Beside the database, it claims (up to the free slots, in one
//! transaction) when woken by a datagram (the API committed work or a
//! cancel request), when a task frees its slot, when a retry this worker
//! scheduled comes due, and on the slow poll (`poll_interval_ms`, the
//! safety net for lost wake-ups). Idle, it touches the database only for
//! that poll and the heartbeat. A remote worker has no datagrams: it keeps
//! one claim waiting at the API (a long poll that answers as soon as work
//! for its targets is committed, or a new cancel request for what it runs)
//! and sends the next as soon as one answers; after a failure, it tries
//! again at the slow poll. Either way the claim runs beside the loop, which
//! goes on with heartbeats and finished slots meanwhile, and a claim is
//! never abandoned: what one claims while the worker stops is handed back
//! untouched.
//!
//! Invariants:
//! - A slot is taken when a claim returns and freed once its task's finish
//!   committed. The loop claims up to the free slots; a finishing task also
//!   claims its own slot's next operation in its finish's transaction (one
//!   commit per round when busy). Neither claims once shutdown began.
//! - Every `lease_secs / 3` one heartbeat renews the worker row and, fenced,
//!   the lease of every running operation. A lease that no longer holds
//!   means the operation was reaped or ended elsewhere: its task is stopped
//!   as [`StopReason::Lost`] and writes nothing more.
//! - Cancel requests are read on wake-ups, polls and heartbeats; a requested
//!   operation's task is stopped as [`StopReason::Cancelled`].
//! - Shutdown: no new claims at once; running operations get
//!   `shutdown_grace_secs` (heartbeats go on); then the rest are stopped as
//!   [`StopReason::Shutdown`] (handed back or failed by the executor); the
//!   loop ends when every task has written its end, and the worker row is
//!   marked stopped.
//! - Under systemd: `READY=1` once registered and the wake socket is bound;
//!   `WATCHDOG=1` only after a claim, cancel read or heartbeat went through
//!   the store (idle or busy, that is every poll), so a wedged loop or store
//!   gets the process restarted; while draining, `EXTEND_TIMEOUT_USEC` keeps
//!   the stop timeout past the grace plus [`HANDBACK_MARGIN`], never longer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use opsqueue_shared::store::{WorkerWrite, WorkerWritten};
use opsqueue_shared::systemd;
use opsqueue_shared::time::{self, Timestamp};
use opsqueue_shared::wake::{Role, WakeListener};
use opsqueue_shared::{Fence, Operation, OperationId};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::{Stop, StopReason};
use crate::executor;
use crate::facts;
use crate::state::Shared;
use crate::writer::{Answer, Wait};

/// Past the shutdown grace, the time a draining worker may take to stop
/// what still runs and hand it back; systemd's stop timeout is extended to
/// the grace plus this.
const HANDBACK_MARGIN: Duration = Duration::from_secs(15);
/// How often a draining worker renews that extension (with a status line).
const EXTEND_EVERY: Duration = Duration::from_secs(5);
/// How long a remote worker's claim waits at the API for work.
const REMOTE_CLAIM_WAIT_SECS: f64 = 25.0;

/// A running task, as the loop knows it.
struct Running {
    fence: Fence,
    stop: Arc<Stop>,
}

/// What a slot's task tells the loop when an attempt ended.
enum SlotEvent {
    /// The slot is free (the finish committed, or nothing was written).
    Freed {
        id: OperationId,
        retry_at: Option<Timestamp>,
    },
    /// The finish also claimed the slot's next operation, now running.
    Replaced {
        id: OperationId,
        retry_at: Option<Timestamp>,
        next: Running,
    },
}

/// Reports a slot's end exactly once: when the task frees it, or when the
/// task is dropped without having done so (a bug that unwound), so a slot
/// is never leaked.
struct SlotGuard {
    id: OperationId,
    tx: Option<mpsc::UnboundedSender<SlotEvent>>,
}

impl SlotGuard {
    fn replaced(&mut self, retry_at: Option<Timestamp>, next: Running) {
        let id = std::mem::replace(&mut self.id, next.fence.id);
        if let Some(tx) = &self.tx {
            let _ = tx.send(SlotEvent::Replaced { id, retry_at, next });
        }
    }

    fn free(mut self, retry_at: Option<Timestamp>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(SlotEvent::Freed {
                id: self.id,
                retry_at,
            });
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(SlotEvent::Freed {
                id: self.id,
                retry_at: None,
            });
        }
    }
}

struct Loop {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    events: mpsc::UnboundedSender<SlotEvent>,
    running: HashMap<OperationId, Running>,
    retries: BinaryHeap<Reverse<Instant>>,
    /// Past the shutdown grace: whatever still starts is stopped at once.
    forced: bool,
}

impl Loop {
    fn free_slots(&self) -> usize {
        self.shared
            .config
            .worker
            .concurrency
            .saturating_sub(self.running.len())
    }

    /// Starts a slot: runs `op`, then whatever each finish claims next.
    fn spawn(&mut self, op: Operation) {
        let Some(fence) = op.fence() else {
            tracing::error!(operation = %op.id, "claimed without a worker id; skipped");
            return;
        };
        let stop = Arc::new(Stop::default());
        self.running.insert(
            op.id,
            Running {
                fence,
                stop: stop.clone(),
            },
        );
        let mut guard = SlotGuard {
            id: op.id,
            tx: Some(self.events.clone()),
        };
        let shared = self.shared.clone();
        self.tracker.spawn(async move {
            let (mut op, mut stop) = (op, stop);
            loop {
                let attempted = executor::run_attempt(&shared, op, stop, true).await;
                let Some(next) = attempted.next else {
                    guard.free(attempted.retry_at);
                    return;
                };
                let fence = next.fence().expect("a claimed operation has a worker");
                stop = Arc::new(Stop::default());
                let running = Running {
                    fence,
                    stop: stop.clone(),
                };
                guard.replaced(attempted.retry_at, running);
                op = next;
            }
        });
    }

    /// Applies a slot's news; returns whether a slot became free.
    fn on_event(&mut self, event: SlotEvent) -> bool {
        let (id, retry_at, next) = match event {
            SlotEvent::Freed { id, retry_at } => (id, retry_at, None),
            SlotEvent::Replaced { id, retry_at, next } => (id, retry_at, Some(next)),
        };
        self.running.remove(&id);
        if let Some(at) = retry_at {
            let wait = (at - time::now()).to_std().unwrap_or(Duration::ZERO);
            self.retries.push(Reverse(Instant::now() + wait));
        }
        let Some(next) = next else {
            return true;
        };
        if self.forced {
            next.stop.request(StopReason::Shutdown);
        }
        self.running.insert(next.fence.id, next);
        false
    }

    /// Stops the task of each fence that is still ours.
    fn stop_each(&self, fences: &[Fence], reason: StopReason) {
        for fence in fences {
            if let Some(task) = self.running.get(&fence.id)
                && task.fence == *fence
                && (task.stop.reason().is_none()
                    || (reason == StopReason::Lost && task.stop.reason() != Some(reason)))
            {
                match reason {
                    StopReason::Lost => {
                        tracing::warn!(operation = %fence.id, attempt = fence.attempt, "the claim no longer holds; stopping the operation without recording")
                    }
                    _ => tracing::info!(operation = %fence.id, ?reason, "stopping the operation"),
                }
                task.stop.request(reason);
            }
        }
    }

    /// Starts a claim of up to the free slots beside the loop; its answer
    /// arrives on `answers`.
    fn start_claim(&self, cancels: bool, answers: &mpsc::UnboundedSender<Answer>) {
        let writer = &self.shared.writer;
        let wait = writer.claims_wait().then(|| Wait {
            secs: REMOTE_CLAIM_WAIT_SECS,
            stopping: self
                .running
                .values()
                .filter(|task| task.stop.reason().is_some())
                .map(|task| task.fence.id)
                .collect(),
        });
        let claim = writer.claim(self.free_slots(), cancels && !self.running.is_empty(), wait);
        let answers = answers.clone();
        tokio::spawn(async move {
            let _ = answers.send(claim.await);
        });
    }

    /// Runs what a claim returned (or hands it back untouched when the
    /// worker began to stop meanwhile); returns whether it went through.
    fn claimed(&mut self, answer: Answer, draining: bool) -> bool {
        let ok = match answer {
            Ok(WorkerWritten::Claimed {
                operations,
                cancels,
            }) => {
                if !operations.is_empty() {
                    tracing::debug!(claimed = operations.len(), "claimed");
                }
                for claimed in operations {
                    if draining {
                        let shared = self.shared.clone();
                        self.tracker
                            .spawn(async move { executor::hand_back(&shared, claimed.0).await });
                    } else {
                        self.spawn(claimed.0);
                    }
                }
                self.stop_each(&cancels, StopReason::Cancelled);
                systemd::watchdog();
                true
            }
            Ok(other) => {
                tracing::error!(answer = other.name(), "unexpected answer to a claim");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "claim failed; trying again at the next poll");
                false
            }
        };
        self.shared.rounds.fetch_add(1, Ordering::SeqCst);
        ok
    }

    async fn read_cancels(&mut self) {
        if self.running.is_empty() {
            return;
        }
        match self.shared.writer.submit(WorkerWrite::CancelRequests).await {
            Ok(WorkerWritten::Cancels { cancels }) => {
                self.stop_each(&cancels, StopReason::Cancelled);
                systemd::watchdog();
            }
            Ok(other) => tracing::error!(
                answer = other.name(),
                "unexpected answer to a cancel-request read"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read cancel requests"),
        }
    }

    async fn heartbeat(&mut self) {
        let fences = self.running.values().map(|r| r.fence.clone()).collect();
        let facts = Some(facts::collect(&self.shared.config.worker.data_paths));
        match self
            .shared
            .writer
            .submit(WorkerWrite::Heartbeat { fences, facts })
            .await
        {
            Ok(WorkerWritten::Beat { lost, cancels }) => {
                self.stop_each(&lost, StopReason::Lost);
                self.stop_each(&cancels, StopReason::Cancelled);
                systemd::watchdog();
            }
            Ok(other) => tracing::error!(answer = other.name(), "unexpected answer to a heartbeat"),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the monitor reaps our claims if this lasts past the lease")
            }
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = shared.config.worker.clone();
    let remote = shared.writer.claims_wait();
    // A remote worker's claims wait at the API instead.
    let listener = if remote {
        None
    } else {
        let wake_dir = shared.config.database.wake_dir();
        Some(
            WakeListener::bind(&wake_dir, Role::Worker).with_context(|| {
                format!("cannot bind a wake-up socket in {}", wake_dir.display())
            })?,
        )
    };
    if shared.shutdown.set(shutdown.clone()).is_err() {
        anyhow::bail!("this worker's claim loop already ran");
    }
    let (events, mut slot_events) = mpsc::unbounded_channel();
    let (claim_answers, mut claim_answered) = mpsc::unbounded_channel();
    let mut state = Loop {
        shared: shared.clone(),
        tracker: TaskTracker::new(),
        events,
        running: HashMap::new(),
        retries: BinaryHeap::new(),
        forced: false,
    };
    let poll = Duration::from_millis(config.poll_interval_ms.max(1));
    let beat = Duration::from_secs(config.lease_secs) / 3;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let mut next_poll = Instant::now() + poll;
    let mut next_beat = Instant::now() + beat;
    let mut want_claim = !shutdown.is_cancelled();
    let mut want_cancels = false;
    let mut claiming = false;
    let mut draining: Option<Instant> = None;
    let mut next_extend: Option<Instant> = None;
    tracing::info!(
        worker = %shared.id,
        concurrency = config.concurrency,
        targets = ?config.targets,
        sources = ?config.sources,
        drivers = ?shared.drivers.families(),
        api = config.api_url.as_deref().unwrap_or("(the database beside it)"),
        "worker started"
    );
    systemd::check_watchdog_cadence("worker.poll_interval_ms", poll.min(beat));
    systemd::ready(&format!(
        "worker {} serving targets {:?}",
        shared.id, config.targets
    ));

    loop {
        // A remote worker keeps a claim waiting even with every slot taken:
        // it also brings cancel requests at once.
        if draining.is_none() && want_claim && !claiming && (remote || state.free_slots() > 0) {
            state.start_claim(want_cancels || remote, &claim_answers);
            claiming = true;
            want_claim = false;
            want_cancels = false;
            next_poll = Instant::now() + poll;
        }
        if want_cancels {
            state.read_cancels().await;
            want_cancels = false;
        }
        if draining.is_some() && state.running.is_empty() && !claiming {
            break;
        }
        let retry_due = state.retries.peek().map(|r| r.0);
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if draining.is_none() => {
                draining = Some(Instant::now() + grace);
                tracing::info!(running = state.running.len(), grace_secs = config.shutdown_grace_secs,
                    "shutting down: no new claims; running operations may finish");
                next_extend = Some(Instant::now());
                if claiming {
                    // The waiting claim answers at once; what it claimed
                    // meanwhile is handed back.
                    let writer = shared.writer.clone();
                    tokio::spawn(async move { writer.stopping().await });
                }
            }
            Some(answer) = claim_answered.recv() => {
                claiming = false;
                let went_through = state.claimed(answer, draining.is_some());
                // A remote worker waits again at once (after a failure, at
                // the next poll).
                want_claim |= remote && went_through;
            }
            Some(event) = slot_events.recv() => {
                want_claim |= state.on_event(event);
                while let Ok(event) = slot_events.try_recv() {
                    want_claim |= state.on_event(event);
                }
            }
            () = wake(listener.as_ref()), if listener.is_some() => {
                want_claim = true;
                want_cancels = true;
            }
            () = sleep_until(next_beat) => {
                state.heartbeat().await;
                next_beat = Instant::now() + beat;
            }
            () = sleep_until(retry_due.unwrap_or_else(Instant::now)), if retry_due.is_some() => {
                let now = Instant::now();
                while state.retries.peek().is_some_and(|r| r.0 <= now) {
                    state.retries.pop();
                }
                want_claim = true;
            }
            () = sleep_until(next_poll), if draining.is_none() => {
                want_claim = true;
                want_cancels = !remote;
                next_poll = Instant::now() + poll;
            }
            () = sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() && !state.forced => {
                state.forced = true;
                tracing::info!(running = state.running.len(), "grace period over: stopping what still runs");
                for task in state.running.values() {
                    task.stop.request(StopReason::Shutdown);
                }
            }
            () = sleep_until(next_extend.unwrap_or_else(Instant::now)), if next_extend.is_some() => {
                let until = draining.unwrap_or_else(Instant::now) + HANDBACK_MARGIN;
                let left = until.saturating_duration_since(Instant::now());
                next_extend = (!left.is_zero()).then(|| Instant::now() + EXTEND_EVERY);
                if next_extend.is_some() {
                    let running = state.running.len();
                    systemd::extend_timeout(left, &format!("draining: {running} operation(s) running"));
                }
            }
        }
    }

    state.tracker.close();
    state.tracker.wait().await;
    shared
        .writer
        .submit(WorkerWrite::Stop)
        .await
        .context("cannot mark the worker stopped")?;
    tracing::info!(worker = %shared.id, "worker stopped");
    Ok(())
}

/// The next wake-up datagram (a worker beside the database has a socket).
async fn wake(listener: Option<&WakeListener>) {
    match listener {
        Some(listener) => listener.wait().await,
        None => std::future::pending().await,
    }
}
