//! `[pm2]`: the pm2 driver (the PM2 controller).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::{FamilySection, check_program, check_timeout};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pm2Config {
    /// Registers the pm2 driver in the worker (and the monitor's refresh).
    pub enabled: bool,
    /// The pm2 command as an argument vector (`["pm2"]`,
    /// `["sudo", "-u", "web", "pm2"]`).
    pub bin: Vec<String>,
    /// `PM2_HOME` for every pm2 call; absent: pm2's own default (`~/.pm2`).
    pub home: Option<PathBuf>,
    /// Scripts and working directories of started apps must lie inside it.
    pub base_dir: PathBuf,
    /// When the monitor refreshes the observed process list (six fields).
    pub refresh_cron: String,
    /// Longest one pm2 command may take (a daemon that does not answer).
    pub command_timeout_secs: u64,
}

impl Default for Pm2Config {
    fn default() -> Self {
        Self {
            enabled: false,
            bin: vec!["pm2".into()],
            home: None,
            base_dir: PathBuf::from("/srv"),
            refresh_cron: "0 * * * * *".into(),
            command_timeout_secs: 60,
        }
    }
}

impl FamilySection for Pm2Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        if !self.base_dir.is_absolute() {
            return Err("base_dir must be an absolute path".into());
        }
        check_program("bin", &self.bin)?;
        check_timeout("command_timeout_secs", self.command_timeout_secs)
    }
}
