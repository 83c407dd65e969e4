//! `[proxmox]`: the Proxmox VE driver. Nodes (addresses, API tokens) are
//! registered through the API and live in the database, not here.

use serde::{Deserialize, Serialize};

use crate::families::family::FamilySection;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxConfig {
    /// Whether workers register the driver, the API accepts proxmox
    /// operations and the monitor keeps the default refresh schedule.
    pub enabled: bool,
    /// Six-field cron of the default `refresh-proxmox` schedule, which
    /// observes every registered node's guests.
    pub refresh_cron: String,
    /// First pause between polls of a PVE task; it grows by half each poll
    /// up to twice this, always within the operation's timeout.
    pub poll_interval_ms: u64,
}

impl Default for ProxmoxConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            refresh_cron: "0 */5 * * * *".into(),
            poll_interval_ms: 1_000,
        }
    }
}

impl FamilySection for ProxmoxConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err("poll_interval_ms must be between 10 and 60000".into());
        }
        Ok(())
    }
}
