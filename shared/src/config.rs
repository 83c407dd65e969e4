//! Configuration: one TOML file (`--config PATH` or `OPSQUEUE_CONFIG`), every
//! key overridable by the environment, and defaults that run on a laptop with
//! no file at all. An environment key is `OPSQUEUE_` plus the section and key
//! joined by a double underscore: `[api] bind` is `OPSQUEUE_API__BIND`,
//! `[worker] targets` is `OPSQUEUE_WORKER__TARGETS='["local","web-2"]'`.
//! Unknown keys are refused, so a typo is an error and not a silent default.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub worker: WorkerConfig,
    pub monitor: MonitorConfig,
    pub diag: DiagConfig,
    pub proxmox: ProxmoxConfig,
    pub log: LogConfig,
    pub pm2: Pm2Config,
    pub scripts: ScriptsConfig,
    pub cloudpanel: CloudpanelConfig,
    pub systemd: SystemdConfig,
    pub caddy: CaddyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The SQLite file; its directory is created if missing.
    pub path: PathBuf,
    /// How long a connection waits for another process's write lock.
    pub busy_timeout_ms: u64,
    /// Connections per process.
    pub pool_size: u32,
    /// Where processes leave their wake-up sockets; default `<database dir>/wake`.
    pub wake_dir: Option<PathBuf>,
    /// Per-operation cap on stored log bytes (all attempts together).
    pub log_cap_bytes: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/opsqueue.db"),
            busy_timeout_ms: 10_000,
            pool_size: 8,
            wake_dir: None,
            log_cap_bytes: 1024 * 1024,
        }
    }
}

impl DatabaseConfig {
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn wake_dir(&self) -> PathBuf {
        self.wake_dir
            .clone()
            .unwrap_or_else(|| self.dir().join("wake"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on; port 0 picks a free port (it is printed).
    pub bind: String,
    /// HTTP worker threads; default: one per core.
    pub http_workers: Option<usize>,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Longest `?wait=` a long-poll may hold a request.
    pub max_wait_secs: u64,
    /// A worker heartbeat older than this makes `/ready` fail.
    pub ready_heartbeat_secs: u64,
    /// Where the first admin key is written on a first start with no keys;
    /// default `<database dir>/admin.key`.
    pub admin_key_file: Option<PathBuf>,
    pub rate_limit: RateLimitConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            http_workers: None,
            body_limit_bytes: 256 * 1024,
            max_wait_secs: 60,
            ready_heartbeat_secs: 60,
            admin_key_file: None,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Token buckets: `per_second` refills, `burst` is the bucket size. 0 turns
/// a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_key_per_second: u32,
    pub per_key_burst: u32,
    pub per_address_per_second: u32,
    pub per_address_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_key_per_second: 100,
            per_key_burst: 200,
            per_address_per_second: 200,
            per_address_burst: 400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Stable id for this worker; default `<hostname>-<pid>-<random>`.
    pub id: Option<String>,
    /// Operations run at the same time.
    pub concurrency: usize,
    /// Targets served (an operation's `target` must be one of them).
    pub targets: Vec<String>,
    /// Sources served; absent means every source.
    pub sources: Option<Vec<String>>,
    /// A claim is valid this long without a heartbeat.
    pub lease_secs: u64,
    /// Safety-net poll when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// On SIGTERM, how long running operations may take to finish.
    pub shutdown_grace_secs: u64,
    /// Retry backoff: base * 2^(attempt-1), capped, with ±25% jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Largest output kept in memory per command run.
    pub output_cap_bytes: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            concurrency: 8,
            targets: vec!["local".into()],
            sources: None,
            lease_secs: 30,
            poll_interval_ms: 1_000,
            shutdown_grace_secs: 30,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            output_cap_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Six-field cron expressions (seconds first) that trigger each service.
    pub reaper_cron: String,
    pub scheduler_cron: String,
    pub pruner_cron: String,
    /// Terminal operations older than this are deleted with their logs.
    pub retention_days: u64,
    pub prune_batch: usize,
    /// The reaper fails a running operation this long past its timeout, in
    /// case its worker could not.
    pub timeout_grace_secs: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            reaper_cron: "*/1 * * * * *".into(),
            scheduler_cron: "*/1 * * * * *".into(),
            pruner_cron: "0 17 * * * *".into(),
            retention_days: 30,
            prune_batch: 1_000,
            timeout_grace_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagConfig {
    /// When set, every diag execution appends `<id> <attempt> <worker>` to
    /// this file (tests use it to prove exactly-once execution).
    pub record_path: Option<PathBuf>,
}

/// `[proxmox]`: the Proxmox VE driver. Nodes (addresses, API tokens) are
/// registered through the API and live in the database, not here.
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

/// `[pm2]`: the pm2 driver (the PM2 controller).
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

/// `[scripts]`: `script.run` runs executables from `dir` only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptsConfig {
    pub enabled: bool,
    /// The allow-list: a script is a regular executable file directly in it.
    pub dir: PathBuf,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/etc/opsqueue/scripts"),
        }
    }
}

/// `[cloudpanel]`: the CloudPanel family over `clpctl`.
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
}

impl Default for CloudpanelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            clpctl: vec!["clpctl".into()],
            home_dir: PathBuf::from("/home"),
            command_timeout_secs: 600,
        }
    }
}

/// Which systemd manager the systemd driver talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemdScope {
    /// The system manager (PID 1): `systemctl`, `journalctl -u`.
    System,
    /// A user manager: `systemctl --user`, `journalctl --user-unit`.
    User,
}

/// `[systemd]`: the systemd driver (the Pockestrator's unit management).
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

/// `[caddy]`: the Caddy driver, over Caddy's admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaddyConfig {
    /// Registers the caddy driver in the worker (and the monitor's
    /// reconcile schedule).
    pub enabled: bool,
    /// Caddy's admin endpoint (keep it on loopback).
    pub admin_url: String,
    /// The server (under `apps.http.servers`) that gets the sites; absent:
    /// the one listening on `:443`, else on `:80`, else the only one.
    pub server: Option<String>,
    /// When the monitor re-applies the managed sites and observes them
    /// (`caddy.reload`, six fields).
    pub refresh_cron: String,
    /// Longest one admin API request may take.
    pub request_timeout_secs: u64,
}

impl Default for CaddyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_url: "http://127.0.0.1:2019".into(),
            server: None,
            refresh_cron: "0 * * * * *".into(),
            request_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (to stderr), or `journald` (fields as journal fields).
    pub format: String,
    /// A tracing filter; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid config: {0}")]
    Value(String),
}

impl Config {
    /// Defaults, then the file (if any), then `OPSQUEUE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("OPSQUEUE_").split("__").ignore(&["config"]);
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Value(m.to_owned()));
        if self.worker.concurrency == 0 {
            return fail("worker.concurrency must be at least 1");
        }
        if self.worker.targets.is_empty() {
            return fail("worker.targets must name at least one target");
        }
        if self.worker.lease_secs < 3 {
            return fail("worker.lease_secs must be at least 3");
        }
        if self.database.pool_size < 2 {
            return fail("database.pool_size must be at least 2");
        }
        for (name, cron) in [
            ("monitor.reaper_cron", &self.monitor.reaper_cron),
            ("monitor.scheduler_cron", &self.monitor.scheduler_cron),
            ("monitor.pruner_cron", &self.monitor.pruner_cron),
            ("proxmox.refresh_cron", &self.proxmox.refresh_cron),
            ("pm2.refresh_cron", &self.pm2.refresh_cron),
            ("systemd.refresh_cron", &self.systemd.refresh_cron),
            ("caddy.refresh_cron", &self.caddy.refresh_cron),
        ] {
            if let Err(e) = crate::cron::parse_with_seconds(cron) {
                return Err(ConfigError::Value(format!("{name}: {e}")));
            }
        }
        if !(10..=60_000).contains(&self.proxmox.poll_interval_ms) {
            return fail("proxmox.poll_interval_ms must be between 10 and 60000");
        }
        if !self.pm2.base_dir.is_absolute() {
            return fail("pm2.base_dir must be an absolute path");
        }
        for (name, argv) in [
            ("pm2.bin", &self.pm2.bin),
            ("cloudpanel.clpctl", &self.cloudpanel.clpctl),
            ("systemd.systemctl", &self.systemd.systemctl),
            ("systemd.journalctl", &self.systemd.journalctl),
            ("systemd.systemd_analyze", &self.systemd.systemd_analyze),
        ] {
            if argv.is_empty() {
                return Err(ConfigError::Value(format!("{name} must name a program")));
            }
        }
        for (name, secs) in [
            ("pm2.command_timeout_secs", self.pm2.command_timeout_secs),
            (
                "cloudpanel.command_timeout_secs",
                self.cloudpanel.command_timeout_secs,
            ),
            (
                "systemd.command_timeout_secs",
                self.systemd.command_timeout_secs,
            ),
            (
                "caddy.request_timeout_secs",
                self.caddy.request_timeout_secs,
            ),
        ] {
            if secs == 0 {
                return Err(ConfigError::Value(format!("{name} must be at least 1")));
            }
        }
        self.check_systemd()?;
        self.check_caddy()
    }

    fn check_systemd(&self) -> Result<(), ConfigError> {
        let systemd = &self.systemd;
        let fail = |m: String| Err(ConfigError::Value(format!("systemd.{m}")));
        if !systemd.unit_dir.is_absolute() {
            return fail("unit_dir must be an absolute path".into());
        }
        for pattern in systemd.allow.iter().chain(&systemd.deny) {
            if let Err(e) = crate::actions::systemd::UnitPattern::parse(pattern) {
                return fail(format!("allow/deny: {e}"));
            }
        }
        Ok(())
    }

    fn check_caddy(&self) -> Result<(), ConfigError> {
        let caddy = &self.caddy;
        let fail = |m: String| Err(ConfigError::Value(format!("caddy.{m}")));
        if !(caddy.admin_url.starts_with("http://") || caddy.admin_url.starts_with("https://")) {
            return fail("admin_url must be an http:// or https:// URL".into());
        }
        if let Some(server) = &caddy.server
            && server.is_empty()
        {
            return fail("server must not be empty (leave it out to find the server)".into());
        }
        Ok(())
    }

    pub fn admin_key_file(&self) -> PathBuf {
        self.api
            .admin_key_file
            .clone()
            .unwrap_or_else(|| self.database.dir().join("admin.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_the_laptop_defaults() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.database.path, PathBuf::from("./data/opsqueue.db"));
        assert_eq!(config.api.bind, "127.0.0.1:8080");
        assert_eq!(config.database.wake_dir(), PathBuf::from("./data/wake"));
    }

    #[test]
    fn a_file_sets_keys_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opsqueue.toml");
        std::fs::write(
            &file,
            "[api]\nbind = \"127.0.0.1:9000\"\n[worker]\nconcurrency = 2\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.api.bind, "127.0.0.1:9000");
        assert_eq!(config.worker.concurrency, 2);

        std::fs::write(&file, "[api]\nbnd = \"x\"\n").unwrap();
        assert!(Config::load(Some(&file)).is_err());
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn host_families_are_off_by_default_and_refuse_bad_settings() {
        let config = Config::load(None).unwrap();
        assert!(!config.pm2.enabled && !config.scripts.enabled && !config.cloudpanel.enabled);
        assert_eq!(config.pm2.bin, ["pm2"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opsqueue.toml");
        for bad in [
            "[pm2]\nbin = []\n",
            "[pm2]\nbase_dir = \"srv\"\n",
            "[pm2]\nrefresh_cron = \"every minute\"\n",
            "[cloudpanel]\nclpctl = []\n",
            "[scripts]\ndirectory = \"/x\"\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(Config::load(Some(&file)).is_err(), "{bad:?} was accepted");
        }
        std::fs::write(
            &file,
            "[pm2]\nenabled = true\nbin = [\"sudo\", \"pm2\"]\nhome = \"/var/lib/pm2\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert!(config.pm2.enabled);
        assert_eq!(config.pm2.bin, ["sudo", "pm2"]);
    }

    #[test]
    fn the_systemd_and_caddy_sections_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opsqueue.toml");
        std::fs::write(
            &file,
            "[systemd]\nenabled = true\nscope = \"user\"\nallow = [\"pb-*.service\"]\n\
             systemctl = [\"sudo\", \"systemctl\"]\n[caddy]\nenabled = true\nserver = \"srv0\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.systemd.scope, SystemdScope::User);
        assert_eq!(config.systemd.systemctl, ["sudo", "systemctl"]);
        assert!(config.systemd.deny.contains(&"sshd.service".to_owned()));
        assert_eq!(config.caddy.server.as_deref(), Some("srv0"));
        assert_eq!(config.caddy.admin_url, "http://127.0.0.1:2019");
        for bad in [
            "[systemd]\nallow = [\"a b\"]\n",
            "[systemd]\nsystemctl = []\n",
            "[systemd]\nscope = \"session\"\n",
            "[systemd]\nunit_dir = \"relative\"\n",
            "[caddy]\nadmin_url = \"127.0.0.1:2019\"\n",
            "[caddy]\nserver = \"\"\n",
            "[caddy]\nbogus = 1\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(Config::load(Some(&file)).is_err(), "{bad:?} was accepted");
        }
    }
}
