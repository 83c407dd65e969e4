//! The reaper: the backstop that keeps a lost claim from holding an
//! operation forever. Each round, in one write transaction:
//!
//! 1. workers beside the database on this host whose process is gone (pid
//!    no longer there with the same start time, or a different boot id)
//!    have their claims reaped at once, without waiting for the lease, and
//!    are marked stopped. A remote worker (registered through the API with
//!    an agent key) is never judged by its process: its pid and boot id
//!    are another host's, even when its host name matches, so only its
//!    lease can tell (step 2), with the same re-run rules;
//! 2. running operations whose lease expired are reaped;
//! 3. running operations past their timeout plus a grace are failed
//!    `timeout` (their worker should have done it);
//! 4. targets that no live worker serves any more are marked offline;
//! 5. every workflow not ended is moved on as far as it can go (a backstop:
//!    each step's change already moved its workflow in its transaction).
//!
//! "Reaped" means: cancelled if a cancel was requested; back to pending if
//! the action is safe to re-run and attempts remain; otherwise failed with
//! `worker_lost`, `lease_expired` or `timeout`. A lost claim that is not
//! requeued keeps its code, and its message says why it was not re-run:
//! its type is not safe to re-run after a lost worker (the row's
//! `rerun_safe`, fixed at enqueue), or no attempts are left. Every update
//! re-checks `status = 'running'`, so a round is idempotent and two
//! monitors are safe; fencing keeps the reaped worker (if it still lives)
//! from overwriting.

use std::sync::Arc;

use opsqueue_shared::Config;
use opsqueue_shared::process::{Liveness, liveness};
use opsqueue_shared::status::Status;
use opsqueue_shared::store::{self, Counters, Reaped, names};
use opsqueue_shared::time::Timestamp;
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{Store, StoreError};

pub struct Reaper {
    store: Store,
    waker: Arc<Waker>,
    timeout_grace_secs: u64,
    log_cap_bytes: u64,
}

#[derive(Debug, Default, PartialEq)]
pub struct ReapReport {
    pub dead_workers: Vec<String>,
    pub reaped: Vec<Reaped>,
    /// Targets marked offline (their last worker's lease lapsed).
    pub offline: Vec<String>,
}

impl Reaper {
    pub fn new(store: Store, waker: Arc<Waker>, config: &Config) -> Self {
        Self {
            store,
            waker,
            timeout_grace_secs: config.monitor.timeout_grace_secs,
            log_cap_bytes: config.database.log_cap_bytes,
        }
    }
}

impl crate::service::Service for Reaper {
    const NAME: &'static str = "reaper";
    const FEEDS_WATCHDOG: bool = true;
    type Report = ReapReport;

    fn run_once(&self, now: Timestamp) -> Result<ReapReport, StoreError> {
        let report = self.store.write(|tx| {
            let mut report = ReapReport::default();
            for worker in store::worker_list_running(tx)? {
                if !worker.remote && liveness(&worker.identity()) == Liveness::Dead {
                    report
                        .reaped
                        .extend(store::operation_reap_worker(tx, &worker.id, now)?);
                    store::worker_stop(tx, &worker.id, now)?;
                    report.dead_workers.push(worker.id);
                }
            }
            report
                .reaped
                .extend(store::operation_reap_expired(tx, now)?);
            report.reaped.extend(store::operation_reap_timed_out(
                tx,
                now,
                self.timeout_grace_secs,
            )?);
            report.offline = store::target_mark_offline(tx, now)?;

            let mut counters = Counters::default();
            for reaped in &report.reaped {
                let outcome = reaped.status.as_str();
                counters.add(
                    names::REAPED,
                    &format!("code=\"{}\",outcome=\"{outcome}\"", reaped.code),
                    1.0,
                );
                let note = format!("reaped by the monitor: {} ({outcome})", reaped.code);
                let id = reaped
                    .id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(reaped.id.clone()))?;
                store::operation_log_note(tx, id, &note, now, self.log_cap_bytes)?;
            }
            store::counters_apply(tx, &counters)?;
            store::workflow_reconcile(tx, now)?;
            Ok(report)
        })?;
        for worker in &report.dead_workers {
            tracing::warn!(worker, "worker process is gone; its claims were reaped");
        }
        for reaped in &report.reaped {
            tracing::warn!(id = reaped.id, kind = reaped.kind, code = reaped.code, status = %reaped.status, "reaped");
        }
        for target in &report.offline {
            tracing::warn!(target, "target offline: no worker serving it heartbeats");
        }
        if report.reaped.iter().any(|r| r.status == Status::Pending) {
            self.waker.wake(Role::Worker);
        }
        if report.reaped.iter().any(|r| r.status.is_terminal()) {
            // A reaped step may have released others, or ended its workflow.
            self.waker.wake(Role::Worker);
            self.waker.wake(Role::Api);
        }
        Ok(report)
    }

    fn is_noteworthy(report: &ReapReport) -> bool {
        !report.reaped.is_empty() || !report.dead_workers.is_empty() || !report.offline.is_empty()
    }
}
