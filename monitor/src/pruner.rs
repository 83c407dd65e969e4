//! The pruner: deletes terminal operations (and, by cascade, their logs) that
//! finished more than `retention_days` ago, in batches of `prune_batch` so
//! no transaction holds the write lock for long; then the rows of workers
//! stopped that long ago; then the event stream's rows older than
//! `api.events_retention_secs` (a client resuming from before them gets a
//! `gap` event) and the dashboard sessions that expired; artifacts (rows and
//! files) `[artifacts] retention_secs` after their workflow ended, and the
//! system log's lines as old as the history; then a passive WAL
//! checkpoint, so the database file itself holds the pruned state (the
//! report counts the WAL frames checkpointed).

use opsqueue_shared::store;
use opsqueue_shared::time::Timestamp;
use opsqueue_shared::{Config, Store, StoreError};

pub struct Pruner {
    store: Store,
    artifacts: store::Artifacts,
    artifacts_retention: chrono::Duration,
    retention: chrono::Duration,
    events_retention: chrono::Duration,
    batch: usize,
}

#[derive(Debug, Default, PartialEq)]
pub struct PruneReport {
    pub operations: usize,
    pub workers: usize,
    pub events: usize,
    pub sessions: usize,
    pub artifacts: usize,
    pub system_logs: usize,
    /// Frames of the WAL that are in the database file after the checkpoint.
    pub wal_frames_checkpointed: i64,
}

impl Pruner {
    pub fn new(store: Store, config: &Config) -> Self {
        Self {
            artifacts: store::Artifacts::new(store.clone(), config),
            artifacts_retention: chrono::Duration::seconds(config.artifacts.retention_secs as i64),
            store,
            retention: chrono::Duration::days(config.monitor.retention_days as i64),
            events_retention: chrono::Duration::seconds(config.api.events_retention_secs as i64),
            batch: config.monitor.prune_batch.max(1),
        }
    }
}

impl crate::service::Service for Pruner {
    const NAME: &'static str = "pruner";
    type Report = PruneReport;

    fn run_once(&self, now: Timestamp) -> Result<PruneReport, StoreError> {
        let before = now - self.retention;
        let mut report = PruneReport {
            artifacts: self
                .artifacts
                .prune(now - self.artifacts_retention)
                .map_err(|e| match e {
                    store::ArtifactError::Store(e) => e,
                    other => StoreError::Task(format!("pruning artifacts: {other}")),
                })?,
            system_logs: self.store.write(|tx| store::system_log_prune(tx, before))?,
            ..PruneReport::default()
        };
        loop {
            let deleted = self
                .store
                .write(|tx| store::operation_prune(tx, before, self.batch))?;
            report.operations += deleted;
            if deleted < self.batch {
                break;
            }
        }
        report.workers = self.store.write(|tx| store::worker_prune(tx, before))?;
        let events_before = now - self.events_retention;
        loop {
            let deleted = self
                .store
                .write(|tx| store::event_prune(tx, events_before, self.batch))?;
            report.events += deleted;
            if deleted < self.batch {
                break;
            }
        }
        report.sessions = self.store.write(|tx| store::session_prune(tx, now))?;
        (_, report.wal_frames_checkpointed) = self.store.checkpoint()?;
        Ok(report)
    }

    fn is_noteworthy(report: &PruneReport) -> bool {
        report.operations > 0
            || report.workers > 0
            || report.events > 0
            || report.sessions > 0
            || report.artifacts > 0
            || report.system_logs > 0
    }
}
