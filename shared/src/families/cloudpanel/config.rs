//! `[cloudpanel]`: the CloudPanel family over `clpctl`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::{FamilySection, check_program, check_timeout};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudpanelConfig {
    pub enabled: bool,
    /// The clpctl command as an argument vector (`["clpctl"]`).
    pub clpctl: Vec<String>,
    /// Where CloudPanel puts site users' homes: a site exists when
    /// `<home_dir>/<site user>/htdocs/<domain>` does.
    pub home_dir: PathBuf,
    /// Longest one clpctl command may take.
    pub command_timeout_secs: u64,
    /// The six-field cron of the default `refresh-cloudpanel` schedule
    /// (`cloudpanel.list`).
    pub refresh_cron: String,
}

impl Default for CloudpanelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            clpctl: vec!["clpctl".into()],
            home_dir: PathBuf::from("/home"),
            command_timeout_secs: 600,
            refresh_cron: "0 */5 * * * *".into(),
        }
    }
}

impl FamilySection for CloudpanelConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        check_program("clpctl", &self.clpctl)?;
        check_timeout("command_timeout_secs", self.command_timeout_secs)
    }
}
