//! Configuration: one TOML file (`--config PATH` or `OPSQUEUE_CONFIG`), every
//! key overridable by the environment, and defaults that run on a laptop with
//! no file at all. An environment key is `OPSQUEUE_` plus the section and key
//! joined by a double underscore: `[api] bind` is `OPSQUEUE_API__BIND`,
//! `[worker] targets` is `OPSQUEUE_WORKER__TARGETS='["local","web-2"]'`.
//! Unknown keys are refused, so a typo is an error and not a silent default.
//!
//! The engine's sections (`[database]`, `[api]`, `[worker]`, `[monitor]`,
//! `[log]`) are here; each family's section (`[pm2]`, `[systemd]`, …) lives
//! in its folder and joins [`Config`] through the one list of families.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::families::{self, Action, ActionError, Family, FamilyAction, FamilySection, Reach};

macro_rules! config {
    ($($module:ident: $variant:ident($action:ident, $section:ident) [$field:ident]),+ $(,)?) => {
        /// Every section: the engine's own, then one per family (from the one
        /// list of families).
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            pub database: DatabaseConfig,
            pub api: ApiConfig,
            pub worker: WorkerConfig,
            pub monitor: MonitorConfig,
            pub log: LogConfig,
            pub artifacts: ArtifactsConfig,
            $(pub $field: families::$module::$section,)+
        }

        impl Config {
            /// Every family with its section.
            pub fn families(&self) -> Vec<(&'static Family, &dyn FamilySection)> {
                vec![$((&families::$module::DECLARATION, &self.$field as &dyn FamilySection),)+]
            }
        }

        impl Action {
            /// Checks what only the configuration can refuse: the family is
            /// enabled, and whatever its section decides (see
            /// [`FamilyAction::check_config`]).
            pub fn check_config(&self, config: &Config) -> Result<(), ActionError> {
                match self {
                    $(Action::$variant(action) => checked(action, &config.$field, &families::$module::DECLARATION),)+
                }
            }

            /// Whether a typed route may act on what this action names on
            /// `target` (see [`FamilyAction::reach`]); a disabled family's
            /// actions are refused by [`Action::check_config`] instead.
            pub fn reach(&self, config: &Config, target: &str) -> Reach {
                match self {
                    $(Action::$variant(action) if config.$field.enabled() => action.reach(&config.$field, target),)+
                    _ => Reach::Open,
                }
            }
        }
    };
}

crate::families!(config);

fn checked<A: FamilyAction>(
    action: &A,
    section: &A::Section,
    family: &Family,
) -> Result<(), ActionError> {
    if !section.enabled() {
        return Err(family.disabled(action.kind()));
    }
    action.check_config(section)
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

/// `[artifacts]`: files that move between hosts through the API host (a
/// migration's state archive), kept beside the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Where they are kept; default `<database dir>/artifacts`.
    pub dir: Option<PathBuf>,
    /// The most bytes all stored artifacts may hold together; an upload
    /// that would pass it is refused (`413 artifact_too_large`).
    pub max_bytes: u64,
    /// How long an artifact is kept after its workflow ended.
    pub retention_secs: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 2 * 1024 * 1024 * 1024,
            retention_secs: 24 * 3600,
        }
    }
}

impl ArtifactsConfig {
    /// The directory, given the database's.
    pub fn dir(&self, database: &DatabaseConfig) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| database.dir().join("artifacts"))
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
    /// Serve HTTPS with this certificate chain (PEM, the server's own
    /// certificate first) and `tls_key`; without them, plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How long the event stream's rows are kept: a `Last-Event-ID` older
    /// than this gets a `gap` event (the monitor's pruner deletes them).
    pub events_retention_secs: u64,
    /// How long a dashboard sign-in lasts.
    pub session_secs: u64,
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
            tls_cert: None,
            tls_key: None,
            events_retention_secs: 6 * 3600,
            session_secs: 8 * 3600,
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
    /// Remote mode: the API to pull work from (`https://control:8443`),
    /// instead of the database beside the worker. Plain `http://` only to
    /// a loopback address.
    pub api_url: Option<String>,
    /// Remote mode: the file holding the agent key (`--scope agent`).
    pub token_file: Option<PathBuf>,
    /// Remote mode: trust only the certificates in this PEM file (a pinned
    /// self-signed control host, or a private root) instead of the web's.
    pub ca_cert: Option<PathBuf>,
    /// Where the worker's heartbeats report free disk space.
    pub data_paths: Vec<PathBuf>,
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
            api_url: None,
            token_file: None,
            ca_cert: None,
            data_paths: vec![PathBuf::from("/")],
        }
    }
}

impl WorkerConfig {
    /// Whether the worker pulls its work from the API (`api_url`) rather
    /// than the database beside it.
    pub fn is_remote(&self) -> bool {
        self.api_url.is_some()
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
    /// Defaults, then the file (if any), then `OPSQUEUE_SECTION__KEY`
    /// variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Every key is `section.key`, spelled `OPSQUEUE_SECTION__KEY`; a
        // variable without `__` (`OPSQUEUE_CONFIG`, the variables scripts
        // get, another tool's) is not configuration.
        let env = Env::prefixed("OPSQUEUE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
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
        if self.worker.api_url.is_some() && self.worker.token_file.is_none() {
            return fail("worker.api_url needs worker.token_file (an agent key)");
        }
        if self.worker.api_url.is_none()
            && (self.worker.token_file.is_some() || self.worker.ca_cert.is_some())
        {
            return fail(
                "worker.token_file and worker.ca_cert are for remote mode: set worker.api_url",
            );
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return fail("api.tls_cert and api.tls_key go together");
        }
        if self.api.events_retention_secs < 60 {
            return fail("api.events_retention_secs must be at least 60");
        }
        if self.api.session_secs == 0 {
            return fail("api.session_secs must be at least 1");
        }
        if self.database.pool_size < 2 {
            return fail("database.pool_size must be at least 2");
        }
        for (name, cron) in [
            ("monitor.reaper_cron", &self.monitor.reaper_cron),
            ("monitor.scheduler_cron", &self.monitor.scheduler_cron),
            ("monitor.pruner_cron", &self.monitor.pruner_cron),
        ] {
            if let Err(e) = crate::cron::parse_with_seconds(cron) {
                return Err(ConfigError::Value(format!("{name}: {e}")));
            }
        }
        for (family, section) in self.families() {
            let name = family.section;
            if let Some(cron) = section.refresh_cron()
                && let Err(e) = crate::cron::parse_with_seconds(cron)
            {
                return Err(ConfigError::Value(format!("{name}.refresh_cron: {e}")));
            }
            section
                .check()
                .map_err(|m| ConfigError::Value(format!("{name}.{m}")))?;
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
    use crate::families::systemd::SystemdScope;

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
    fn remote_mode_and_https_are_checked_for_the_settings_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opsqueue.toml");
        std::fs::write(
            &file,
            "[worker]\napi_url = \"https://control:8443\"\ntoken_file = \"/etc/opsqueue/agent.key\"\n\
             ca_cert = \"/etc/opsqueue/control.pem\"\ntargets = [\"web-2\"]\n\
             [api]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert!(config.worker.is_remote());
        assert_eq!(config.worker.data_paths, [PathBuf::from("/")]);
        assert!(!Config::load(None).unwrap().worker.is_remote());
        for bad in [
            "[worker]\napi_url = \"https://control:8443\"\n",
            "[worker]\ntoken_file = \"/etc/opsqueue/agent.key\"\n",
            "[api]\ntls_cert = \"/c.pem\"\n",
            "[api]\ntls_key = \"/k.pem\"\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(Config::load(Some(&file)).is_err(), "{bad:?} was accepted");
        }
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
