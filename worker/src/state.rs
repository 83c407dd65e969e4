//! What every task of one worker shares: its id, configuration, drivers,
//! writer and shutdown token, behind one `Arc` (see [`crate::Worker`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use opsqueue_shared::Config;
use tokio_util::sync::CancellationToken;

use crate::drivers::Registry;
use crate::writer::Writer;

/// What every task of this worker shares.
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) config: Arc<Config>,
    pub(crate) drivers: Registry,
    pub(crate) writer: Writer,
    pub(crate) rounds: AtomicU64,
    /// The claim loop's shutdown token (the writer reads it: finishes claim
    /// no next operation once it fired).
    pub(crate) shutdown: Arc<OnceLock<CancellationToken>>,
}
