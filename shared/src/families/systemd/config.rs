//! `[systemd]`: the systemd driver (the Pockestrator's unit management).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::names::UnitPattern;
use crate::families::family::{FamilySection, check_program, check_timeout};

/// Which systemd manager the systemd driver talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemdScope {
    /// The system manager (PID 1): `systemctl`, `journalctl -u`.
    System,
    /// A user manager: `systemctl --user`, `journalctl --user-unit`.
    User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemdConfig {
    /// Registers the systemd driver in the worker (and the monitor's refresh).
    pub enabled: bool,
    /// `system` or `user` (adds `--user` to systemctl, reads the journal
    /// with `--user-unit`, installs units `WantedBy=default.target`).
    pub scope: SystemdScope,
    /// The systemctl command as an argument vector (`["systemctl"]`,
    /// `["nsenter", "-t", "42", "-m", "systemctl"]`).
    pub systemctl: Vec<String>,
    /// The journalctl command as an argument vector.
    pub journalctl: Vec<String>,
    /// The systemd-analyze command (it verifies rendered units).
    pub systemd_analyze: Vec<String>,
    /// Where `systemd.unit.install` writes unit files.
    pub unit_dir: PathBuf,
    /// Unit name patterns (`*` and `?` wildcards) the driver may act on,
    /// besides the units opsqueue installed itself.
    pub allow: Vec<String>,
    /// Unit name patterns never acted on, whatever `allow` says or who
    /// installed them (the default keeps ssh, D-Bus, systemd's own units
    /// and opsqueue's out of reach).
    pub deny: Vec<String>,
    /// When the monitor refreshes the observed units (six fields).
    pub refresh_cron: String,
    /// Longest one systemctl, journalctl or systemd-analyze call may take.
    pub command_timeout_secs: u64,
}

impl Default for SystemdConfig {
    fn default() -> Self {
        let deny = [
            "ssh.service",
            "sshd.service",
            "ssh.socket",
            "dbus.service",
            "dbus.socket",
            "dbus-broker.service",
            "systemd-*",
            "opsqueue*",
            "user@*",
            "getty@*",
            "serial-getty@*",
            "*.target",
            "*.slice",
            "*.scope",
            "*.mount",
            "*.swap",
            "*.device",
        ];
        Self {
            enabled: false,
            scope: SystemdScope::System,
            systemctl: vec!["systemctl".into()],
            journalctl: vec!["journalctl".into()],
            systemd_analyze: vec!["systemd-analyze".into()],
            unit_dir: PathBuf::from("/etc/systemd/system"),
            allow: Vec::new(),
            deny: deny.into_iter().map(String::from).collect(),
            refresh_cron: "0 * * * * *".into(),
            command_timeout_secs: 120,
        }
    }
}

impl FamilySection for SystemdConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        check_program("systemctl", &self.systemctl)?;
        check_program("journalctl", &self.journalctl)?;
        check_program("systemd_analyze", &self.systemd_analyze)?;
        check_timeout("command_timeout_secs", self.command_timeout_secs)?;
        if !self.unit_dir.is_absolute() {
            return Err("unit_dir must be an absolute path".into());
        }
        for pattern in self.allow.iter().chain(&self.deny) {
            UnitPattern::parse(pattern).map_err(|e| format!("allow/deny: {e}"))?;
        }
        Ok(())
    }
}
