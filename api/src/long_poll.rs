//! Long-polling: `GET /api/v1/operations/{id}?wait=SECONDS` holds the request
//! until the operation is terminal or the wait ends, without polling the
//! database in a loop.
//!
//! One [`Notifier`] per process holds a `watch` counter. [`listen`] bumps it
//! whenever a wake-up datagram for `Role::Api` arrives (a worker, the
//! monitor or another API process ended an operation) and, as a safety net
//! for lost datagrams, once a second while anybody waits. A waiter
//! subscribes *before* it reads the row, so an end that lands between the
//! read and the wait still bumps the counter it watches; it re-reads on
//! every bump and returns as soon as the row is terminal, when the wait
//! ends, or when the server starts to stop.

use std::sync::Arc;
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
