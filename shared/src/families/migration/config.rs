//! `[migration]`: where a worker stages a migration's copy, and how long
//! the health check on the target waits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::{FamilySection, check_timeout};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// Registers the migration driver in the worker; the API accepts
    /// `POST /api/v1/migrations` only when it is on.
    pub enabled: bool,
    /// The worker's own directory for copies in flight: a staged copy of
    /// the state (source), the downloaded archive (target). One folder per
    /// migration, removed when its step is done with it.
    pub staging_dir: PathBuf,
    /// Size of one uploaded chunk.
    pub chunk_bytes: u64,
    /// Longest the health check waits for the app on the target.
    pub health_timeout_secs: u64,
    /// How long the app must stay up (same pid, no restart) to count as
    /// healthy.
    pub settle_secs: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            staging_dir: PathBuf::from("/var/lib/opsqueue/migration"),
            chunk_bytes: 4 * 1024 * 1024,
            health_timeout_secs: 60,
            settle_secs: 2,
        }
    }
}

/// The most bytes one chunk may hold (the API refuses more).
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

impl FamilySection for MigrationConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn check(&self) -> Result<(), String> {
        if !self.staging_dir.is_absolute() {
            return Err("staging_dir must be an absolute path".into());
        }
        if !(4096..=MAX_CHUNK_BYTES).contains(&self.chunk_bytes) {
            return Err(format!(
                "chunk_bytes must be between 4096 and {MAX_CHUNK_BYTES}"
            ));
        }
        check_timeout("health_timeout_secs", self.health_timeout_secs)
    }
}
