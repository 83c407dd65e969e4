//! The group-committing writer of remote workers' batches. One thread
//! applies whatever batches queued up meanwhile, from every agent, in one
//! transaction (one fsync). Each batch is first checked in that
//! transaction (`store::worker_batch_check`: the agent key may make each
//! write) and then applied with `store::worker_batch_apply`, the function
//! a local worker's writer uses, so claims, fences, finishes, counters and
//! state effects mean the same for a remote worker. A refused batch writes
//! nothing; its neighbours are applied. After each commit the writer wakes
//! whom the batches say (API long-polls when an operation ended, workers
//! and waiting agents when a resource was freed or work handed back).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use opsqueue_shared::store::{
    NewWorker, Refusal, Woken, WorkerSession, WorkerWrite, WorkerWritten, WriteBatcher,
    worker_batch_apply, worker_batch_check,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{Store, StoreError};

/// How many agent batches one transaction takes at most.
const MAX_BATCH: usize = 64;

/// One agent request's writes, parsed at the edge.
#[derive(Debug)]
pub struct AgentJob {
    pub key_id: String,
    pub key_targets: Vec<String>,
    pub worker: NewWorker,
    pub writes: Vec<WorkerWrite>,
    pub stopping: bool,
}

/// What became of a job.
#[derive(Debug)]
pub enum AgentReply {
    /// Applied: one answer per write.
    Applied(Vec<WorkerWritten>),
    /// Refused as a whole: nothing of it was written.
    Refused(Refusal),
}

const WAKE_API: u8 = 1;
const WAKE_WORKERS: u8 = 2;

#[derive(Clone)]
pub struct AgentWriter {
    batcher: WriteBatcher<AgentJob, AgentReply>,
}

impl AgentWriter {
    pub fn spawn(store: &Store, waker: Arc<Waker>, log_cap: u64) -> Result<Self, StoreError> {
        let wake = Arc::new(AtomicU8::new(0));
        let flags = wake.clone();
        let batcher = WriteBatcher::spawn(
            store,
            "opsqueue-agents",
            MAX_BATCH,
            move |tx, jobs: &[AgentJob]| {
                let mut replies = Vec::with_capacity(jobs.len());
                let mut woken = Woken::default();
                for job in jobs {
                    if let Err(refusal) = worker_batch_check(
                        tx,
                        &job.key_id,
                        &job.key_targets,
                        &job.worker,
                        &job.writes,
                    )? {
                        replies.push(AgentReply::Refused(refusal));
                        continue;
                    }
                    let session = WorkerSession {
                        worker: &job.worker,
                        log_cap,
                        stopping: job.stopping,
                    };
                    let answers = worker_batch_apply(tx, &session, &job.writes, &mut woken)?;
                    replies.push(AgentReply::Applied(answers));
                }
                let due = if woken.api { WAKE_API } else { 0 }
                    | if woken.workers { WAKE_WORKERS } else { 0 };
                flags.fetch_or(due, Ordering::SeqCst);
                Ok(replies)
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
        Ok(Self { batcher })
    }

    /// Checks and applies one agent request; returns once it committed.
    pub async fn apply(&self, job: AgentJob) -> Result<AgentReply, StoreError> {
        self.batcher.submit(job).await
    }
}
