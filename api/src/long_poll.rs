//! Long-polling: `GET /api/v1/operations/{id}?wait=SECONDS` holds the request
//! until the operation is terminal or the wait ends, without polling the
//! database in a loop; a remote worker's claim (`POST /api/v1/agent/claim`)
//! waits the same way for work.
//!
//! A [`Notifier`] holds a `watch` counter. [`listen`] bumps it whenever a
//! wake-up datagram arrives and, as a safety net for lost datagrams (and
//! for work that comes due by the clock: a retry's `run_at`), once a second
//! while anybody waits. Each API process has two: one for `Role::Api`
//! datagrams (a worker, the monitor or another API process ended an
//! operation), one for `Role::Worker` datagrams (new work or a cancel
//! request: the API listens as the workers do, for the remote workers whose
//! claims wait here). A waiter subscribes *before* it reads, so a change
//! that lands between the read and the wait still bumps the counter it
//! watches; it re-reads on every bump and returns as soon as it has its
//! answer, when the wait ends, or when the server starts to stop.
//! [`StoppingAgents`] lets a stopping remote worker's waiting claim answer
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsqueue_shared::store::operation_get;
use opsqueue_shared::wake::WakeListener;
use opsqueue_shared::{Operation, OperationId, Store};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;

/// The safety-net re-check while somebody waits.
pub const FALLBACK_TICK: Duration = Duration::from_secs(1);

pub struct Notifier {
    changes: watch::Sender<u64>,
}

impl Notifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            changes: watch::Sender::new(0),
        })
    }

    /// Tells every waiter to look again.
    pub fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn has_waiters(&self) -> bool {
        self.changes.receiver_count() > 0
    }
}

/// Turns wake-ups into bumps until `stop` is cancelled.
pub async fn listen(listener: WakeListener, notifier: Arc<Notifier>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = listener.wait() => notifier.bump(),
            _ = tokio::time::sleep(FALLBACK_TICK) => {
                if notifier.has_waiters() {
                    notifier.bump();
                }
            }
        }
    }
}

/// The operation once it is terminal, or as it is when `wait` ends or
/// `stop` is cancelled; `None` if there is no such operation.
pub async fn wait_until_terminal(
    store: &Store,
    notifier: &Notifier,
    id: OperationId,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<Option<Operation>, ApiError> {
    let deadline = Instant::now() + wait;
    let mut changes = notifier.subscribe();
    loop {
        let operation = store
            .call(move |s| s.read(|c| operation_get(c, id)))
            .await?;
        let Some(operation) = operation else {
            return Ok(None);
        };
        if operation.status.is_terminal() || Instant::now() >= deadline || stop.is_cancelled() {
            return Ok(Some(operation));
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    // The notifier is gone (shutting down): wait out the rest.
                    tokio::time::sleep_until(deadline).await;
                }
            }
        }
    }
}

/// How long a stopping remote worker is remembered (its id is never used
/// again: it names one process).
const FORGET_STOPPING: Duration = Duration::from_secs(600);

/// Remote workers that said they are stopping: a claim of theirs that
/// waits answers at once, and a new one does not wait.
pub struct StoppingAgents {
    ids: Mutex<HashMap<String, Instant>>,
    changes: Arc<Notifier>,
}

impl Default for StoppingAgents {
    fn default() -> Self {
        Self {
            ids: Mutex::default(),
            changes: Notifier::new(),
        }
    }
}

impl StoppingAgents {
    pub fn mark(&self, worker_id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.retain(|_, at| at.elapsed() < FORGET_STOPPING);
        ids.insert(worker_id.to_owned(), Instant::now());
        drop(ids);
        self.changes.bump();
    }

    /// A worker registered (again, under an id it used before): it claims
    /// as usual.
    pub fn forget(&self, worker_id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(worker_id);
    }

    pub fn is_stopping(&self, worker_id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(worker_id)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
