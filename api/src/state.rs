//! What every request handler shares, built once per process and handed to
//! each actix worker thread as `web::Data<AppState>` (one `Arc`).

use std::sync::Arc;

use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Config, Store};
use tokio_util::sync::CancellationToken;

use crate::auth::KeyTouches;
use crate::enqueue::Enqueuer;
use crate::long_poll::Notifier;
use crate::rate_limit::RateLimits;

pub struct AppState {
    pub store: Store,
    /// Group-committing writer for new operations.
    pub enqueuer: Enqueuer,
    /// Wakes workers (new work, cancel requests) and other API processes
    /// (an operation ended).
    pub waker: Arc<Waker>,
    /// Bumped whenever an operation may have ended; long-polls watch it.
    pub notifier: Arc<Notifier>,
    pub limits: RateLimits,
    pub key_touches: KeyTouches,
    /// The configuration: `[api]`'s limits, the log cap of the notes the
    /// API appends, and the checks an action makes against it before it is
    /// stored (`Action::check_config`).
    pub config: Config,
    /// Cancelled when the server begins to stop: long-polls answer at once.
    pub stopping: CancellationToken,
}
