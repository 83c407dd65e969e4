//! systemd's service protocol (sd_notify(3)) for the three binaries, in one
//! place. Each binary runs as a `Type=notify` unit (see `systemd/`) and says:
//!
//! - `READY=1` once it can do its job (API: store migrated and listener
//!   bound; worker: registered and its claim loop starting; monitor: store
//!   open and the scheduler started), with a `STATUS=` line for
//!   `systemctl status`;
//! - `STOPPING=1` when SIGTERM or SIGINT arrives ([`crate::shutdown`]);
//! - `WATCHDOG=1` from a loop right after a round that went through the
//!   store succeeded (the worker's claim loop, the monitor's reaper);
//! - `EXTEND_TIMEOUT_USEC=` while the worker drains running operations.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset: a laptop, the tests) every call
//! does nothing. A failed send is logged at debug level and otherwise
//! ignored: the manager's own timeouts are the fallback, and a process must
//! never stop working because its supervisor cannot be told.
//!
//! Invariants:
//! - [`watchdog`] is only ever called by a loop after it proved itself and
//!   the store healthy, never from a timer task of its own: a wedged loop or
//!   store must let systemd's watchdog fire and restart the process.
//! - The variables in [`SERVICE_ENV`] describe this process only; whatever
//!   it spawns must not inherit them (the worker's command runner removes
//!   them), or a child could speak for the service.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Variables the service manager sets for this process alone.
pub const SERVICE_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, ?states, "cannot notify the service manager");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `EXTEND_TIMEOUT_USEC=`: the current start or stop may take `by` longer
/// from now (systemd times out only once both this and the unit's own
/// timeout have passed).
pub fn extend_timeout(by: Duration, status: &str) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

/// The unit's `WatchdogSec=`, when it set one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();
    *INTERVAL.get_or_init(sd_notify::watchdog_enabled)
}

/// `WATCHDOG=1`, at most every quarter of the interval (a busy loop calls
/// this after every round). Call it only right after a round that proved
/// the caller's loop and the store healthy.
pub fn watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(Instant::now);
    // +1 so that the first call (at 0 ms) differs from "never sent".
    let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
    let last = LAST_MS.load(Ordering::Relaxed);
    let every = u64::try_from((interval / 4).as_millis()).unwrap_or(u64::MAX);
    if last != 0 && now_ms.saturating_sub(last) < every {
        return;
    }
    if LAST_MS
        .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        send(&[NotifyState::Watchdog]);
    }
}

/// Warns when a loop that feeds the watchdog is configured to run less
/// often than half the watchdog interval: systemd would restart a healthy
/// but idle process.
pub fn check_watchdog_cadence(what: &str, every: Duration) {
    if let Some(interval) = watchdog_interval()
        && every * 2 > interval
    {
        tracing::warn!(
            what,
            every_ms = every.as_millis() as u64,
            watchdog_ms = interval.as_millis() as u64,
            "runs less often than half of WatchdogSec=; raise WatchdogSec= or run it more often"
        );
    }
}
