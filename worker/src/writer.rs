//! The worker's one writer: every write this process makes (claims,
//! heartbeats, finishes, logs, progress, its `workers` row) goes through one
//! [`WriteBatcher`] thread with one connection, so whatever queued up
//! meanwhile is committed in one `BEGIN IMMEDIATE` transaction (one fsync)
//! and the worker never contends with itself for SQLite's write lock.
//!
//! Invariants:
//! - Requests are applied in the order they were queued (one FIFO channel):
//!   an operation's log lines sent before its finish are written before it,
//!   and a claim queued after a finish sees that operation's resource free.
//! - Every write about an operation is fenced by the store function that does
//!   it; a finish that was refused leaves nothing behind (no counters).
//! - A finishing attempt may claim its slot's next operation in the same
//!   transaction, so a busy worker commits once per round of operations
//!   rather than once for the finishes and once more for the claims.
//! - Counter deltas of a batch (claims, outcomes, durations) are merged and
//!   applied once, in the batch's transaction.
//! - After a commit that claimed, ended or reported on an operation
//!   (progress, log lines), API processes are woken: their long-polls
//!   re-check and their event streams read the events the commit wrote;
//!   after one that freed a resource or handed an operation back, workers
//!   are woken (the next on that resource may start).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opsqueue_shared::operation::Progress;
use opsqueue_shared::store::{
    ClaimRequest, Counters, Finish, LogLine, NewWorker, StateEffect, StoreError, WriteBatcher,
    counters_apply, family_label, label_value, names, operation_cancel_requests, operation_claim,
    operation_finish, operation_heartbeat, operation_log_append, operation_progress,
    rusqlite::Transaction, state_apply, worker_heartbeat, worker_register, worker_stop,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{Fence, Operation, Store, time};
use tokio_util::sync::CancellationToken;

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 1024;

/// What the writer needs to know about its worker.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub registration: NewWorker,
    pub lease: Duration,
    pub log_cap: u64,
    /// The shutdown token of the running claim loop: once it fired,
    /// finishes no longer claim a next operation.
    pub shutdown: Arc<OnceLock<CancellationToken>>,
}

pub(crate) enum Write {
    /// Registers (or re-registers) the worker row.
    Register,
    /// Marks the worker stopped.
    Stop,
    /// Claims up to `limit` operations; with `cancels`, also reads this
    /// worker's cancel requests.
    Claim {
        limit: usize,
        cancels: bool,
    },
    /// Renews the worker row and the leases of `fences`; reads cancel
    /// requests.
    Heartbeat {
        fences: Vec<Fence>,
    },
    CancelRequests,
    /// Records the end of an attempt; with `claim_next`, also claims one
    /// operation for the slot it frees, in the same transaction.
    Finish {
        done: Arc<FinishWrite>,
        claim_next: bool,
    },
    Log {
        fence: Fence,
        lines: Vec<LogLine>,
    },
    Progress {
        fence: Fence,
        progress: Progress,
    },
}

/// The end of one attempt, with what it still had to log.
pub(crate) struct FinishWrite {
    pub fence: Fence,
    pub finish: Finish,
    pub logs: Vec<LogLine>,
    /// Applied with a completion only.
    pub effects: Vec<StateEffect>,
    pub target: String,
    pub family: String,
    pub duration_secs: f64,
    pub has_resource: bool,
}

#[derive(Debug)]
pub(crate) enum Written {
    Done,
    Claimed {
        ops: Vec<Operation>,
        cancels: Vec<Fence>,
    },
    Beat {
        lost: Vec<Fence>,
        cancels: Vec<Fence>,
    },
    Cancels(Vec<Fence>),
    /// Whether the fenced finish applied, and the slot's next operation.
    Finished {
        applied: bool,
        next: Option<Box<Operation>>,
    },
    /// Whether a fenced write applied.
    Applied(bool),
}

const WAKE_API: u8 = 1;
const WAKE_WORKERS: u8 = 2;

#[derive(Clone)]
pub(crate) struct Writer {
    batcher: WriteBatcher<Write, Written>,
}

impl Writer {
    pub(crate) fn spawn(
        store: &Store,
        settings: Settings,
        waker: Arc<Waker>,
    ) -> Result<Self, StoreError> {
        let wake = Arc::new(AtomicU8::new(0));
        let flags = wake.clone();
        let batcher = WriteBatcher::spawn(
            store,
            "opsqueue-worker-writer",
            MAX_BATCH,
            move |tx, requests: &[Write]| apply(tx, &settings, requests, &flags),
            move |_| {
                let due = wake.swap(0, Ordering::SeqCst);
                if due & WAKE_API != 0 {
                    waker.wake(Role::Api);
                }
                if due & WAKE_WORKERS != 0 {
                    waker.wake(Role::Worker);
                }
            },
        )?;
        Ok(Self { batcher })
    }

    /// Queues a write and waits for the commit that holds it.
    pub(crate) async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        self.batcher.submit(write).await
    }

    /// Queues a write now (so it is ordered before anything queued later)
    /// and returns a future of its answer, which may be dropped.
    pub(crate) fn send_now(&self, write: Write) -> Submitted {
        let batcher = self.batcher.clone();
        let mut answer: Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { batcher.submit(write).await });
        // The batcher sends on the first poll, before it waits.
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        match answer.as_mut().poll(&mut cx) {
            Poll::Ready(result) => Submitted(Err(Some(result))),
            Poll::Pending => Submitted(Ok(answer)),
        }
    }
}

type Answer = Result<Written, StoreError>;

/// A write already queued; await it for the answer.
pub(crate) struct Submitted(Result<Pin<Box<dyn Future<Output = Answer> + Send>>, Option<Answer>>);

impl Future for Submitted {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Answer> {
        match &mut self.0 {
            Ok(answer) => answer.as_mut().poll(cx),
            Err(ready) => Poll::Ready(
                ready
                    .take()
                    .unwrap_or_else(|| Err(StoreError::Task("answer taken twice".into()))),
            ),
        }
    }
}

fn tally(counters: &mut Counters, done: &FinishWrite) {
    let family = family_label(&done.family);
    match &done.finish {
        Finish::Completed { .. } => counters.add(names::COMPLETED, &family, 1.0),
        Finish::Failed { error } => counters.add(
            names::FAILED,
            &format!("{family},code=\"{}\"", label_value(&error.code)),
            1.0,
        ),
        Finish::Cancelled { .. } => counters.add(names::CANCELLED, &family, 1.0),
        Finish::Retry { .. } => counters.add(names::RETRIED, &family, 1.0),
        Finish::Released => return,
    }
    counters.observe_duration(&done.family, done.duration_secs);
}

fn claim(
    tx: &Transaction,
    worker: &NewWorker,
    limit: usize,
    now: time::Timestamp,
    lease_until: time::Timestamp,
    counters: &mut Counters,
) -> Result<Vec<Operation>, StoreError> {
    let ops = operation_claim(
        tx,
        &ClaimRequest {
            worker_id: &worker.id,
            targets: &worker.targets,
            sources: worker.sources.as_deref(),
            limit,
            now,
            lease_until,
        },
    )?;
    for op in &ops {
        counters.add(names::CLAIMED, &family_label(op.family()), 1.0);
    }
    Ok(ops)
}

fn apply(
    tx: &Transaction,
    settings: &Settings,
    requests: &[Write],
    wake: &AtomicU8,
) -> Result<Vec<Written>, StoreError> {
    let now = time::now();
    let lease_until = time::add_secs(now, settings.lease.as_secs_f64());
    let worker = &settings.registration;
    let mut counters = Counters::default();
    let mut answers = Vec::with_capacity(requests.len());
    // Finishes that want their slot's next operation: one claim for all of
    // them, after every finish of the batch (so freed resources count).
    let mut wanting = Vec::new();
    for request in requests {
        let answer = match request {
            Write::Register => {
                worker_register(tx, worker, now)?;
                Written::Done
            }
            Write::Stop => {
                worker_stop(tx, &worker.id, now)?;
                Written::Done
            }
            Write::Claim { limit, cancels } => {
                let ops = claim(tx, worker, *limit, now, lease_until, &mut counters)?;
                if !ops.is_empty() {
                    wake.fetch_or(WAKE_API, Ordering::SeqCst);
                }
                let cancels = if *cancels {
                    operation_cancel_requests(tx, &worker.id)?
                } else {
                    Vec::new()
                };
                Written::Claimed { ops, cancels }
            }
            Write::Heartbeat { fences } => {
                if !worker_heartbeat(tx, &worker.id, now)? {
                    tracing::warn!(worker = %worker.id, "the worker row was gone or marked stopped; registering again");
                    worker_register(tx, worker, now)?;
                }
                let lost = operation_heartbeat(tx, fences, lease_until, now)?;
                let cancels = operation_cancel_requests(tx, &worker.id)?;
                Written::Beat { lost, cancels }
            }
            Write::CancelRequests => Written::Cancels(operation_cancel_requests(tx, &worker.id)?),
            Write::Finish { done, claim_next } => {
                if !done.logs.is_empty() {
                    operation_log_append(tx, &done.fence, &done.logs, settings.log_cap)?;
                }
                let applied = operation_finish(tx, &done.fence, &done.finish, now)?;
                if applied {
                    if !done.effects.is_empty() {
                        state_apply(tx, &done.target, done.fence.id, &done.effects, now)?;
                    }
                    tally(&mut counters, done);
                    let mut due = WAKE_API;
                    if done.has_resource || done.finish == Finish::Released {
                        due |= WAKE_WORKERS;
                    }
                    wake.fetch_or(due, Ordering::SeqCst);
                }
                let stopping = settings.shutdown.get().is_some_and(|t| t.is_cancelled());
                if *claim_next && !stopping {
                    wanting.push(answers.len());
                }
                Written::Finished {
                    applied,
                    next: None,
                }
            }
            Write::Log { fence, lines } => {
                let applied = operation_log_append(tx, fence, lines, settings.log_cap)?;
                if applied {
                    wake.fetch_or(WAKE_API, Ordering::SeqCst);
                }
                Written::Applied(applied)
            }
            Write::Progress { fence, progress } => {
                let applied = operation_progress(tx, fence, progress, now)?;
                if applied {
                    wake.fetch_or(WAKE_API, Ordering::SeqCst);
                }
                Written::Applied(applied)
            }
        };
        answers.push(answer);
    }
    if !wanting.is_empty() {
        let ops = claim(tx, worker, wanting.len(), now, lease_until, &mut counters)?;
        if !ops.is_empty() {
            wake.fetch_or(WAKE_API, Ordering::SeqCst);
        }
        for (index, op) in wanting.into_iter().zip(ops) {
            if let Written::Finished { next, .. } = &mut answers[index] {
                *next = Some(Box::new(op));
            }
        }
    }
    if !counters.is_empty() {
        counters_apply(tx, &counters)?;
    }
    Ok(answers)
}
