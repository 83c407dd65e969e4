//! The group-committing writer of new operations: one thread commits
//! whatever requests queued up meanwhile in one transaction (one fsync for
//! the batch), then wakes the workers (new work) and the API processes
//! (new events). The 202 is sent only after the
//! transaction holding the row committed with `synchronous = FULL`.

use std::sync::Arc;

use opsqueue_shared::store::{
    Counters, Inserted, WriteBatcher, counters_apply, family_label, names, operation_insert,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{NewOperation, OperationRequest, Store, StoreError};

/// How many requests one group commit takes at most.
const MAX_BATCH: usize = 512;

/// Commits new operations in groups; see the module header.
#[derive(Clone)]
pub struct Enqueuer {
    batcher: WriteBatcher<NewOperation, Inserted>,
}

impl Enqueuer {
    /// Starts the writer thread; each commit wakes the workers and the API
    /// processes.
    pub fn spawn(store: &Store, waker: Arc<Waker>) -> Result<Self, StoreError> {
        let batcher = WriteBatcher::spawn(
            store,
            "opsqueue-enqueue",
            MAX_BATCH,
            |tx, requests: &[NewOperation]| {
                let mut counters = Counters::default();
                let mut answers = Vec::with_capacity(requests.len());
                for request in requests {
                    let inserted = operation_insert(tx, request)?;
                    if let Inserted::Created(op) = &inserted {
                        counters.add(names::ENQUEUED, &family_label(op.family()), 1.0);
                    }
                    answers.push(inserted);
                }
                counters_apply(tx, &counters)?;
                Ok(answers)
            },
            move |_| {
                waker.wake(Role::Worker);
                waker.wake(Role::Api);
            },
        )?;
        Ok(Self { batcher })
    }

    /// Stores the request (or finds the operation its idempotency key
    /// names); returns once the row is committed.
    pub async fn enqueue(&self, request: &OperationRequest) -> Result<Inserted, StoreError> {
        let new = request.prepare(opsqueue_shared::time::now());
        self.batcher.submit(new).await
    }
}
