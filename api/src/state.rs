//! What every request handler shares, built once per process and handed to
//! each actix worker thread as `web::Data<AppState>` (one `Arc`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsqueue_shared::store::api_key_touch;
use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Config, Store};
use tokio_util::sync::CancellationToken;

use crate::agent_writer::AgentWriter;
use crate::enqueuer::Enqueuer;
use crate::events::Hub;
use crate::long_poll::{Notifier, StoppingAgents};
use crate::rate_limit::RateLimits;

pub struct AppState {
    pub store: Store,
    /// Group-committing writer for new operations.
    pub enqueuer: Enqueuer,
    /// Wakes workers (new work, cancel requests) and other API processes
    /// (an operation ended).
    pub waker: Arc<Waker>,
    /// Bumped after every wake-up (something was committed); long-polls
    /// and the event hub watch it.
    pub notifier: Arc<Notifier>,
    /// Group-committing writer of remote workers' batches.
    pub agents: AgentWriter,
    /// Bumped whenever work may be claimable or a cancel was requested;
    /// remote workers' waiting claims watch it.
    pub work: Arc<Notifier>,
    pub stopping_agents: StoppingAgents,
    /// Reads new events once and hands them to every event stream.
    pub events: Arc<Hub>,
    pub limits: RateLimits,
    pub key_touches: KeyTouches,
    /// The configuration: `[api]`'s limits, the log cap of the notes the
    /// API appends, and the checks an action makes against it before it is
    /// stored (`Action::check_config`).
    pub config: Config,
    /// Cancelled when the server begins to stop: long-polls answer at once.
    pub stopping: CancellationToken,
}

/// How often `last_used_at` is written per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Remembers when each key's `last_used_at` was last written.
#[derive(Default)]
pub struct KeyTouches {
    last: Mutex<HashMap<String, Instant>>,
}

impl KeyTouches {
    /// Writes `last_used_at` in the background unless done within the
    /// last minute.
    pub fn touch(&self, store: &Store, key_id: &str) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last
                .get(key_id)
                .is_some_and(|at| now.duration_since(*at) < TOUCH_EVERY)
            {
                return;
            }
            last.insert(key_id.to_owned(), now);
        }
        let (store, id) = (store.clone(), key_id.to_owned());
        tokio::spawn(async move {
            let now = opsqueue_shared::time::now();
            if let Err(e) = store
                .call(move |s| s.write(|tx| api_key_touch(tx, &id, now)))
                .await
            {
                tracing::warn!(error = %e, "could not record an API key's last use");
            }
        });
    }
}
