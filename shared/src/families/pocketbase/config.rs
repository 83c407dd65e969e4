//! `[pocketbase]`: where services live, where versions are cached, how
//! service users are made, and how long a new service may take to answer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::{FamilySection, check_program, check_timeout};
use crate::families::systemd::Hardening;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PocketbaseConfig {
    /// Registers the pocketbase driver in the worker (it needs `[systemd]`
    /// enabled, and `[caddy]` for services with a domain), the API's
    /// routes and the monitor's refresh.
    pub enabled: bool,
    /// Each service lives in `{base_dir}/{name}`; deleted data goes to
    /// `{base_dir}/.trash/{name}-{timestamp}`.
    pub base_dir: PathBuf,
    /// The version cache: `{versions_dir}/{version}/pocketbase`, filled by
    /// `pocketbase.version.install`.
    pub versions_dir: PathBuf,
    /// Create (and remove) a system user `pb-{name}` per service, with
    /// `useradd`/`userdel`; it owns `pb_data`.
    pub create_users: bool,
    /// Run each service as its user (`User=`/`Group=` in its unit). A
    /// systemd user manager cannot switch users: turn it off there.
    pub run_as_user: bool,
    /// The sandboxing preset of each service's unit (the systemd family's:
    /// `strict`, the default, makes the whole file system read-only but
    /// pb_data; `basic` where the manager cannot apply strict's
    /// `ProtectKernelTunables`, as in some containers).
    pub hardening: Hardening,
    /// The useradd and userdel commands, argument vectors.
    pub useradd: Vec<String>,
    pub userdel: Vec<String>,
    /// Where the service users are looked up (the file useradd writes).
    pub passwd_file: PathBuf,
    /// Where Caddy serves plain HTTP on this host: a service's domain is
    /// verified by a request here with that `Host`.
    pub proxy_url: String,
    /// How long a started service has to answer `GET /api/health`.
    pub health_timeout_secs: u64,
    /// Longest one command (useradd, pocketbase superuser upsert) or one
    /// download may take.
    pub command_timeout_secs: u64,
    /// When the monitor observes every service (`pocketbase.refresh`, six
    /// fields).
    pub refresh_cron: String,
}

impl Default for PocketbaseConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_dir: PathBuf::from("/opt/pocketbase"),
            versions_dir: PathBuf::from("/opt/pocketbase/.versions"),
            create_users: true,
            run_as_user: true,
            hardening: Hardening::Strict,
            useradd: vec!["useradd".into()],
            userdel: vec!["userdel".into()],
            passwd_file: PathBuf::from("/etc/passwd"),
            proxy_url: "http://127.0.0.1:80".into(),
            health_timeout_secs: 30,
            command_timeout_secs: 300,
            refresh_cron: "30 * * * * *".into(),
        }
    }
}

impl FamilySection for PocketbaseConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        for (key, path) in [
            ("base_dir", &self.base_dir),
            ("versions_dir", &self.versions_dir),
            ("passwd_file", &self.passwd_file),
        ] {
            if !path.is_absolute() {
                return Err(format!("{key} must be an absolute path"));
            }
        }
        if self.base_dir.parent().is_none() {
            return Err("base_dir must not be /".into());
        }
        check_program("useradd", &self.useradd)?;
        check_program("userdel", &self.userdel)?;
        if !self.proxy_url.starts_with("http://") {
            return Err("proxy_url must be an http:// URL (Caddy's plain listener)".into());
        }
        check_timeout("health_timeout_secs", self.health_timeout_secs)?;
        check_timeout("command_timeout_secs", self.command_timeout_secs)
    }
}
