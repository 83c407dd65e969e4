//! The monitor: three small services that keep the queue healthy, each a
//! struct with a `run_once(now)` that tests call directly, triggered on cron
//! expressions by tokio-cron-scheduler through one loop wrapper
//! ([`trigger`]):
//!
//! - [`Reaper`]: running operations whose lease expired, whose worker died or
//!   that ran past their timeout are requeued or failed;
//! - [`Scheduler`]: due schedules enqueue their operation, once per fire time;
//! - [`Pruner`]: terminal operations past the retention are deleted.
//!
//! Every service is safe with two monitors running: each of its writes is
//! conditional on the state it read, inside one `BEGIN IMMEDIATE`.
//!
//! Under systemd the monitor says `READY=1` once the store is open and the
//! scheduler started, and each successful reaper round (every second by
//! default) feeds the watchdog: no reaper rounds, no pings, and systemd
//! restarts a wedged monitor.

mod defaults;
mod pruner;
mod reaper;
mod scheduler;
mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use opsqueue_shared::systemd;
use opsqueue_shared::time;
use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Config, Store};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

pub use defaults::{DefaultSchedule, DefaultsReport, defaults, ensure_defaults};
pub use pruner::{PruneReport, Pruner};
pub use reaper::{ReapReport, Reaper};
pub use scheduler::{FireReport, Scheduler};
pub use service::Service;

/// Runs `service` on `cron` (six fields, seconds first). A round still
/// running when the next is due is not doubled: the new one is skipped.
pub async fn trigger<S: Service>(
    scheduler: &JobScheduler,
    cron: &str,
    service: Arc<S>,
) -> anyhow::Result<()> {
    let busy = Arc::new(AtomicBool::new(false));
    let job = Job::new_async(cron, move |_, _| {
        let service = service.clone();
        let busy = busy.clone();
        Box::pin(async move {
            if busy.swap(true, Ordering::AcqRel) {
                tracing::debug!(service = S::NAME, "previous round still running; skipped");
                return;
            }
            let outcome = tokio::task::spawn_blocking(move || service.run_once(time::now())).await;
            busy.store(false, Ordering::Release);
            match outcome {
                Ok(Ok(report)) => {
                    if S::FEEDS_WATCHDOG {
                        systemd::watchdog();
                    }
                    if S::is_noteworthy(&report) {
                        tracing::info!(service = S::NAME, ?report, "round done")
                    }
                }
                Ok(Err(e)) => tracing::error!(service = S::NAME, error = %e, "round failed"),
                Err(e) => tracing::error!(service = S::NAME, error = %e, "round panicked"),
            }
        })
    })
    .with_context(|| format!("{}: bad cron expression {cron:?}", S::NAME))?;
    scheduler.add(job).await?;
    Ok(())
}

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::open(&config.database)
        .with_context(|| format!("opening the database {}", config.database.path.display()))?;
    let waker =
        Arc::new(Waker::new(&config.database.wake_dir()).context("creating the wake directory")?);
    let made = ensure_defaults(&store, &config, time::now()).context("the default schedules")?;
    if made != DefaultsReport::default() {
        tracing::info!(?made, "default schedules");
    }
    let reaper = Arc::new(Reaper::new(store.clone(), waker.clone(), &config));
    let scheduler = Arc::new(Scheduler::new(store.clone(), waker.clone()));
    let pruner = Arc::new(Pruner::new(store.clone(), &config));

    let mut jobs = JobScheduler::new().await?;
    trigger(&jobs, &config.monitor.reaper_cron, reaper).await?;
    trigger(&jobs, &config.monitor.scheduler_cron, scheduler).await?;
    trigger(&jobs, &config.monitor.pruner_cron, pruner).await?;
    jobs.start().await?;
    if let Some(gap) = longest_gap(&config.monitor.reaper_cron) {
        systemd::check_watchdog_cadence("monitor.reaper_cron", gap);
    }
    tracing::info!(database = %config.database.path.display(), "monitor running");
    systemd::ready("monitor: reaper, scheduler and pruner running");
    shutdown.cancelled().await;
    jobs.shutdown().await?;
    tracing::info!("monitor stopped");
    Ok(())
}

/// The longest wait between the next few fire times of a six-field cron.
fn longest_gap(cron: &str) -> Option<std::time::Duration> {
    let cron = opsqueue_shared::cron::parse_with_seconds(cron).ok()?;
    let mut at = cron.find_next_occurrence(&time::now(), false).ok()?;
    let mut longest = std::time::Duration::ZERO;
    for _ in 0..16 {
        let next = cron.find_next_occurrence(&at, false).ok()?;
        longest = longest.max((next - at).to_std().ok()?);
        at = next;
    }
    Some(longest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_longest_gap_of_a_cron_is_its_slowest_interval() {
        assert_eq!(
            super::longest_gap("*/1 * * * * *"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            super::longest_gap("0,10 * * * * *"),
            Some(Duration::from_secs(50))
        );
        assert_eq!(super::longest_gap("not cron"), None);
    }
}
