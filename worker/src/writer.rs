//! The worker's one writer: every write this process makes (claims,
//! heartbeats, finishes, logs, progress, its `workers` row) goes through
//! one [`Writer`], which sends whatever queued up meanwhile to its store as
//! one batch ([`WorkerWrite`]s, applied by `store::worker_batch_apply`):
//!
//! - local: one [`WriteBatcher`] thread with one connection commits the
//!   batch in one `BEGIN IMMEDIATE` transaction (one fsync), so the worker
//!   never contends with itself for SQLite's write lock; after a commit
//!   that claimed, ended or reported on an operation (progress, log lines),
//!   API processes are woken (their long-polls re-check and their event
//!   streams read the events the commit wrote), and after one that freed a
//!   resource or handed an operation back, workers are woken (the next on
//!   that resource may start);
//! - remote: one task sends the batch as one HTTPS request to the API,
//!   which applies it the same way, in one transaction, and wakes whom it
//!   must. One batch is in flight at a time, so order holds across
//!   requests too.
//!
//! Invariants (both backends):
//! - Requests are applied in the order they were queued (one FIFO queue):
//!   an operation's log lines sent before its finish are written before it,
//!   and a claim queued after a finish sees that operation's resource free.
//! - Every write about an operation is fenced by the store function that does
//!   it; a finish that was refused leaves nothing behind (no counters).
//! - A finishing attempt may claim its slot's next operation in the same
//!   transaction, so a busy worker commits once per round of operations.
//!
//! A remote claim that may wait for work (the long poll) is sent on its own,
//! beside the batches, so it never holds them up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use opsqueue_shared::agent::{AgentBatch, AgentClaim, AgentWorker};
use opsqueue_shared::store::{
    NewWorker, StoreError, Woken, WorkerSession, WorkerWrite, WorkerWritten, WriteBatcher,
    worker_batch_apply,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{OperationId, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::remote::Agent;

/// The most requests sent in one batch.
const MAX_BATCH: usize = 1024;

/// What the writer needs to know about its worker.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub registration: NewWorker,
    pub log_cap: u64,
    /// The shutdown token of the running claim loop: once it fired,
    /// finishes no longer claim a next operation.
    pub shutdown: Arc<OnceLock<CancellationToken>>,
}

impl Settings {
    fn stopping(&self) -> bool {
        self.shutdown.get().is_some_and(|t| t.is_cancelled())
    }
}

pub(crate) type Answer = Result<WorkerWritten, StoreError>;

/// A write's answer, to await (or drop).
pub(crate) type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A claim that may wait for work: when nothing is claimable, a remote
/// store holds the answer up to `secs` for work or a cancel request of an
/// operation not in `stopping`. A local store answers at once (the
/// worker's wake-up socket tells it when to claim).
#[derive(Debug, Clone)]
pub(crate) struct Wait {
    pub secs: f64,
    pub stopping: Vec<OperationId>,
}

const WAKE_API: u8 = 1;
const WAKE_WORKERS: u8 = 2;

#[derive(Clone)]
pub(crate) struct Writer {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(WriteBatcher<WorkerWrite, WorkerWritten>),
    Remote(Arc<Remote>),
}

type Job = (WorkerWrite, oneshot::Sender<Answer>);

struct Remote {
    agent: Arc<Agent>,
    worker: AgentWorker,
    settings: Settings,
    queue: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// The writer of a worker beside the database; `waker` wakes other
    /// processes after its commits.
    pub(crate) fn local(
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
            move |tx, requests: &[WorkerWrite]| {
                let session = WorkerSession {
                    worker: &settings.registration,
                    log_cap: settings.log_cap,
                    stopping: settings.stopping(),
                };
                let mut woken = Woken::default();
                let answers = worker_batch_apply(tx, &session, requests, &mut woken)?;
                let due = if woken.api { WAKE_API } else { 0 }
                    | if woken.workers { WAKE_WORKERS } else { 0 };
                flags.fetch_or(due, Ordering::SeqCst);
                Ok(answers)
            },
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
        Ok(Self {
            backend: Backend::Local(batcher),
        })
    }

    /// The writer of a remote worker: batches go to the API. Must be
    /// called inside a tokio runtime.
    pub(crate) fn remote(agent: Arc<Agent>, settings: Settings) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let remote = Arc::new(Remote {
            agent,
            worker: AgentWorker::from_registration(&settings.registration),
            settings,
            queue,
        });
        tokio::spawn(send_batches(remote.clone(), jobs));
        Self {
            backend: Backend::Remote(remote),
        }
    }

    /// Queues a write and waits for the commit that holds it.
    pub(crate) async fn submit(&self, write: WorkerWrite) -> Answer {
        self.send_now(write).await
    }

    /// Queues a write now (so it is ordered before anything queued later)
    /// and returns the future of its answer, which may be dropped.
    pub(crate) fn send_now(&self, write: WorkerWrite) -> Pending {
        match &self.backend {
            Backend::Local(batcher) => Box::pin(batcher.queue(write)),
            Backend::Remote(remote) => {
                let (reply, answer) = oneshot::channel();
                let sent = remote.queue.send((write, reply));
                Box::pin(async move {
                    if sent.is_err() {
                        return Err(StoreError::Remote("the writer task has stopped".into()));
                    }
                    answer.await.map_err(|_| {
                        StoreError::Remote("the writer task dropped a request".into())
                    })?
                })
            }
        }
    }

    /// Claims up to `limit` operations (with `cancels`, also reads cancel
    /// requests); with `wait`, a remote store may hold the answer until
    /// there is something to say (see [`Wait`]).
    pub(crate) fn claim(&self, limit: usize, cancels: bool, wait: Option<Wait>) -> Pending {
        match (&self.backend, wait) {
            (Backend::Remote(remote), Some(wait)) => {
                let remote = remote.clone();
                Box::pin(async move {
                    let claim = AgentClaim {
                        worker: remote.worker.clone(),
                        limit,
                        stopping: wait.stopping,
                        wait_secs: wait.secs,
                    };
                    remote.agent.claim(&claim).await
                })
            }
            _ => self.send_now(WorkerWrite::Claim { limit, cancels }),
        }
    }

    /// Whether claims wait for work at the store (remote) rather than on
    /// wake-up datagrams (local).
    pub(crate) fn claims_wait(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// Tells a remote store this worker is stopping, so that a waiting
    /// claim answers at once; nothing to do locally.
    pub(crate) async fn stopping(&self) {
        if let Backend::Remote(remote) = &self.backend {
            let batch = AgentBatch {
                worker: remote.worker.clone(),
                writes: Vec::new(),
                stopping: true,
            };
            if let Err(e) = remote.agent.writes(&batch).await {
                tracing::warn!(error = %e, "cannot tell the API this worker is stopping");
            }
        }
    }
}

/// The remote backend's loop: one batch in flight at a time, holding
/// whatever queued up while the previous one was on its way.
async fn send_batches(remote: Arc<Remote>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let batch = AgentBatch {
            worker: remote.worker.clone(),
            writes,
            stopping: remote.settings.stopping(),
        };
        match remote.agent.writes(&batch).await {
            Ok(answers) => {
                for ((reply, write), answer) in
                    replies.into_iter().zip(&batch.writes).zip(answers.answers)
                {
                    if let (Some(code), Some(fence)) = (&answer.code, write.fence()) {
                        tracing::warn!(
                            operation = %fence.id,
                            attempt = fence.attempt,
                            status = answer.status,
                            code,
                            "the API refused a write about the operation: its claim no longer holds"
                        );
                    }
                    let _ = reply.send(Ok(answer.answer));
                }
            }
            Err(e) => {
                let message = match e {
                    StoreError::Remote(message) => message,
                    other => other.to_string(),
                };
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Remote(message.clone())));
                }
            }
        }
    }
}
