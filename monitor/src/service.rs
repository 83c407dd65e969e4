//! What a maintenance service is to the monitor's loop: a name, a
//! `run_once(now)` that tests call directly, and how its reports are told.

use opsqueue_shared::StoreError;
use opsqueue_shared::time::Timestamp;

/// One maintenance service.
pub trait Service: Send + Sync + 'static {
    const NAME: &'static str;
    type Report: std::fmt::Debug + Send + 'static;

    /// Does one round of work as of `now`; blocking (it runs SQL).
    fn run_once(&self, now: Timestamp) -> Result<Self::Report, StoreError>;

    /// Whether a report is worth an info line (an idle round is not).
    fn is_noteworthy(report: &Self::Report) -> bool;

    /// Whether a successful round proves the monitor alive to systemd's
    /// watchdog (the reaper's: it runs every second and is the backstop).
    const FEEDS_WATCHDOG: bool = false;
}
