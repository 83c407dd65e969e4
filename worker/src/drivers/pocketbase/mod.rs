//! The `pocketbase` driver: the steps of a PocketBase deploy that only this
//! family can do (the unit and the Caddy site are `systemd.*` and `caddy.*`
//! steps of the same workflow), and the single operations on a service.
//!
//! Invariants:
//! - **Composition, not copies.** Control, status and logs run the
//!   `systemd` driver's own actions on the service's unit (reach, no-op
//!   detection, job cancellation included); Caddy is read through the
//!   `caddy` driver's admin client. Nothing here talks to systemctl or
//!   builds a Caddy route by itself.
//! - **Each step undoes its own half-done work.** A step that fails after
//!   creating something (a user, a directory) removes it before it returns
//!   the error; a completed step is undone by its compensation.
//! - **Safe to re-run.** The service directory carries a marker naming the
//!   operation that created it: a re-run of that operation continues, any
//!   other refuses (`home_exists`). Binary, backup, restore, version
//!   install and removal look before they change anything.
//! - **Secrets.** The superuser's password reaches `pocketbase superuser
//!   upsert` only through the runner, which redacts it from the logged
//!   argument vector and the output; that process lives a second. A
//!   service's environment goes to a root-only file, never to the unit,
//!   a result, a log line or an observation.
//! - **The record** of a service (a managed object, kind `service`) is
//!   written by `home.create`, its version by `binary.install` and
//!   `restore`, and forgotten by `home.remove`; its runtime state (an
//!   observation of the same name) by `status`, the control actions and
//!   the refresh.

mod checks;
mod files;
mod observe;
mod versions;

use std::path::{Path, PathBuf};
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::pocketbase::{
    BinaryInstall, FAMILY, HomeRemove, LOGS_KIND, Logs, PocketbaseAction, PocketbaseConfig,
    SERVICE_KIND, ServiceName, ServicePaths, ServiceSpec, ServiceVerb, Superuser,
};
use opsqueue_shared::families::systemd::{
    self as systemd_family, SystemdAction, UnitRef, UnitVerb,
};
use opsqueue_shared::store::{ManagedObject, StateEffect};
use serde_json::{Value, json};

use crate::context::Context;
use crate::drivers::caddy::admin::Admin;
use crate::drivers::driver::{AnyDriver, Checked, Driver, DriverError, Outcome};
use crate::drivers::systemd::Systemd;
use crate::link::Link;
use crate::runner::CommandSpec;
use files::Marker;

/// This driver's error codes.
pub mod codes {
    /// Create's check found what the service cannot be created with.
    pub const SERVICE_INVALID: &str = "service_invalid";
    /// opsqueue manages no such service on this target.
    pub const SERVICE_NOT_FOUND: &str = "service_not_found";
    /// `{base_dir}/{name}` exists and another operation made it (or none).
    pub const HOME_EXISTS: &str = "home_exists";
    /// `{base_dir}/{name}` is missing where a step needs it.
    pub const HOME_MISSING: &str = "home_missing";
    /// A file or directory could not be created, moved or removed.
    pub const FILE: &str = "file_error";
    /// useradd or userdel failed.
    pub const USER: &str = "user_error";
    /// The version is not in the version cache.
    pub const VERSION_NOT_CACHED: &str = "version_not_cached";
    /// A download's (or file's) sha256 is not the one given.
    pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
    /// A download failed (retryable) or its archive holds no binary.
    pub const DOWNLOAD: &str = "download_failed";
    /// The service did not answer its health check in time.
    pub const HEALTH: &str = "health_check_failed";
    /// Caddy did not serve the service's health through its domain.
    pub const VERIFY: &str = "verify_failed";
    /// `pocketbase superuser upsert` failed.
    pub const SUPERUSER: &str = "superuser_failed";
    /// The store could not be read: retryable.
    pub const STORE: &str = "store_unavailable";
}

pub struct Pocketbase {
    config: PocketbaseConfig,
    /// The store, beside the worker or through the API.
    link: Link,
    systemd: Systemd,
    /// Caddy's admin API, when the caddy family is enabled.
    caddy: Option<Admin>,
    http: reqwest::Client,
}

fn file_error(what: &str, path: &Path, e: std::io::Error) -> DriverError {
    DriverError::permanent(codes::FILE, format!("{what} {}: {e}", path.display()))
}

/// What one attempt of `pocketbase.home.create` made so far, to undo if
/// it fails.
#[derive(Default)]
struct Created {
    /// Directories above the service's (`base_dir` and missing parents).
    dirs: Vec<PathBuf>,
    home: bool,
    user: bool,
}

impl Pocketbase {
    pub fn new(config: &Config, link: &Link) -> Self {
        let caddy = config.caddy.enabled.then(|| {
            Admin::new(
                &config.caddy.admin_url,
                Duration::from_secs(config.caddy.request_timeout_secs),
            )
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            config: config.pocketbase.clone(),
            link: link.clone(),
            systemd: Systemd::new(config, link),
            caddy,
            http,
        }
    }

    fn paths(&self, name: &ServiceName) -> ServicePaths {
        ServicePaths::new(&self.config.base_dir, name)
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.config.command_timeout_secs)
    }

    /// Service records (managed objects) on this operation's target; one
    /// when `name` is given.
    async fn records(
        &self,
        ctx: &Context,
        kind: &'static str,
        name: Option<&str>,
    ) -> Result<Vec<ManagedObject>, DriverError> {
        self.link
            .managed_list(ctx.target(), FAMILY, kind, name)
            .await
            .map_err(|e| DriverError::retryable(codes::STORE, e.to_string()))
    }

    async fn record(
        &self,
        ctx: &Context,
        name: &ServiceName,
    ) -> Result<Option<Value>, DriverError> {
        Ok(self
            .records(ctx, SERVICE_KIND, Some(name.as_str()))
            .await?
            .into_iter()
            .next()
            .map(|row| row.spec))
    }

    async fn require_record(
        &self,
        ctx: &Context,
        name: &ServiceName,
    ) -> Result<Value, DriverError> {
        self.record(ctx, name).await?.ok_or_else(|| {
            DriverError::permanent(
                codes::SERVICE_NOT_FOUND,
                format!(
                    "opsqueue manages no PocketBase service {name:?} on {}",
                    ctx.target()
                ),
            )
        })
    }

    fn remember(ctx: &Context, name: &ServiceName, record: Value) {
        ctx.record(StateEffect::Managed {
            family: FAMILY.into(),
            kind: SERVICE_KIND.into(),
            name: name.to_string(),
            spec: record,
        });
    }

    /// The service user's uid and gid, when it exists.
    fn service_user(&self, name: &ServiceName) -> Result<Option<(u32, u32)>, DriverError> {
        files::lookup_user(&self.config.passwd_file, &name.user())
            .map_err(|e| file_error("cannot read", &self.config.passwd_file, e))
    }

    /// Who owns pb_data: the service user when the unit runs as it
    /// (`run_as_user`), else nobody is given it (it stays the manager's).
    fn data_owner(&self, name: &ServiceName) -> Result<Option<(u32, u32)>, DriverError> {
        if !self.config.run_as_user {
            return Ok(None);
        }
        self.service_user(name)
    }

    async fn useradd(
        &self,
        ctx: &Context,
        name: &ServiceName,
        home: &Path,
    ) -> Result<(), DriverError> {
        let spec = CommandSpec::from_argv(&self.config.useradd)
            .expect("the config check refuses an empty command")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(home)
            .arg(name.user())
            .timeout(self.command_timeout());
        let output = ctx.run(spec).await?;
        if !output.success() {
            return Err(DriverError::permanent(
                codes::USER,
                output.failure_message(),
            ));
        }
        Ok(())
    }

    async fn userdel(&self, ctx: &Context, name: &ServiceName) -> Result<(), DriverError> {
        let spec = CommandSpec::from_argv(&self.config.userdel)
            .expect("the config check refuses an empty command")
            .arg(name.user())
            .timeout(self.command_timeout());
        let output = ctx.run(spec).await?;
        if !output.success() {
            return Err(DriverError::permanent(
                codes::USER,
                output.failure_message(),
            ));
        }
        Ok(())
    }

    /// `pocketbase.home.create`: the user, the directory, pb_data, the
    /// environment file and the record. What this attempt created is
    /// removed again if it fails.
    async fn home_create(&self, ctx: &Context, spec: &ServiceSpec) -> Result<Outcome, DriverError> {
        self.refuse_taken(ctx, spec).await?;
        let name = &spec.name;
        let paths = self.paths(name);
        let ours =
            files::read_marker(&paths.home).is_some_and(|m| m.operation == ctx.id().to_string());
        if paths.home.exists() && !ours {
            return Err(DriverError::permanent(
                codes::HOME_EXISTS,
                format!(
                    "{} already exists and was not created by this operation; delete it or choose another name",
                    paths.home.display()
                ),
            ));
        }
        let mut created = Created::default();
        let result = self
            .home_create_steps(ctx, spec, &paths, ours, &mut created)
            .await;
        if let Err(error) = &result {
            ctx.step(format!("undoing what this attempt created ({error})"));
            if created.user
                && let Err(e) = self.userdel(ctx, name).await
            {
                ctx.step(format!("could not remove the user {}: {e}", name.user()));
            }
            if created.home
                && let Err(e) = files::remove_any(&paths.home)
            {
                ctx.step(format!("could not remove {}: {e}", paths.home.display()));
            }
            files::remove_empty_dirs(&created.dirs);
        }
        result
    }

    async fn home_create_steps(
        &self,
        ctx: &Context,
        spec: &ServiceSpec,
        paths: &ServicePaths,
        ours: bool,
        created: &mut Created,
    ) -> Result<Outcome, DriverError> {
        let name = &spec.name;
        let mut marker = files::read_marker(&paths.home).unwrap_or(Marker {
            operation: ctx.id().to_string(),
            user_created: false,
            dirs_created: Vec::new(),
        });
        if !ours {
            marker.dirs_created = files::create_dirs(&self.config.base_dir)
                .map_err(|e| file_error("cannot create", &self.config.base_dir, e))?;
            created.dirs = marker.dirs_created.clone();
            std::fs::create_dir(&paths.home)
                .map_err(|e| file_error("cannot create", &paths.home, e))?;
            created.home = true;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&paths.home, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| file_error("cannot set the mode of", &paths.home, e))?;
            files::write_marker(&paths.home, &marker)
                .map_err(|e| file_error("cannot write", &paths.home, e))?;
            ctx.step(format!("created {}", paths.home.display()));
        }
        if self.config.create_users && self.service_user(name)?.is_none() {
            self.useradd(ctx, name, &paths.home).await?;
            created.user = true;
            marker.user_created = true;
            files::write_marker(&paths.home, &marker)
                .map_err(|e| file_error("cannot write", &paths.home, e))?;
            ctx.step(format!("created the system user {}", name.user()));
        }
        match std::fs::create_dir(&paths.data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(file_error("cannot create", &paths.data, e)),
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&paths.data, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| file_error("cannot set the mode of", &paths.data, e))?;
        let user = self.service_user(name)?;
        if let Some((uid, gid)) = self.data_owner(name)? {
            std::os::unix::fs::chown(&paths.data, Some(uid), Some(gid))
                .map_err(|e| file_error("cannot give away", &paths.data, e))?;
        }
        files::write_atomically(
            &paths.env_file,
            files::environment_file(&spec.env).as_bytes(),
            0o600,
        )
        .map_err(|e| file_error("cannot write", &paths.env_file, e))?;
        let mut record = spec.record();
        record["created_at"] = json!(opsqueue_shared::time::now());
        record["created_by"] = json!(ctx.source());
        record["user"] = json!(user.map(|_| name.user()));
        record["user_created"] = json!(marker.user_created);
        record["home"] = json!(paths.home);
        Self::remember(ctx, name, record);
        ctx.record(StateEffect::Observed {
            family: FAMILY.into(),
            kind: SERVICE_KIND.into(),
            name: name.to_string(),
            data: json!({"status": "deploying"}),
        });
        Ok(Outcome::changed()
            .with("name", name)
            .with("home", paths.home.display().to_string())
            .with("user", user.map(|_| name.user())))
    }

    /// `pocketbase.home.remove`.
    async fn home_remove(
        &self,
        ctx: &Context,
        remove: &HomeRemove,
    ) -> Result<Outcome, DriverError> {
        let name = &remove.name;
        let paths = self.paths(name);
        let record = self.record(ctx, name).await?;
        let marker = files::read_marker(&paths.home);
        let user_created = record
            .as_ref()
            .and_then(|r| r["user_created"].as_bool())
            .or(marker.as_ref().map(|m| m.user_created))
            .unwrap_or(false);
        let mut changed = false;
        let mut trashed = None;
        if paths.home.exists() {
            if record.is_none() && marker.is_none() {
                return Err(DriverError::permanent(
                    codes::HOME_EXISTS,
                    format!(
                        "{} was not created by opsqueue: left alone",
                        paths.home.display()
                    ),
                ));
            }
            if remove.keep_data && paths.data.exists() && !files::is_empty_dir(&paths.data) {
                let trash = self.config.base_dir.join(".trash");
                std::fs::create_dir_all(&trash)
                    .map_err(|e| file_error("cannot create", &trash, e))?;
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
                let kept = trash.join(format!("{name}-{stamp}"));
                std::fs::rename(&paths.data, &kept)
                    .map_err(|e| file_error("cannot move", &paths.data, e))?;
                ctx.step(format!("kept pb_data as {}", kept.display()));
                trashed = Some(kept.display().to_string());
            }
            files::remove_any(&paths.home)
                .map_err(|e| file_error("cannot remove", &paths.home, e))?;
            ctx.step(format!("removed {}", paths.home.display()));
            if let Some(marker) = &marker {
                files::remove_empty_dirs(&marker.dirs_created);
            }
            changed = true;
        }
        if self.config.create_users && user_created && self.service_user(name)?.is_some() {
            self.userdel(ctx, name).await?;
            ctx.step(format!("removed the system user {}", name.user()));
            changed = true;
        }
        for (kind, effect_kind) in [(SERVICE_KIND, true), (LOGS_KIND, false)] {
            if effect_kind {
                ctx.record(StateEffect::Unmanaged {
                    family: FAMILY.into(),
                    kind: kind.into(),
                    name: name.to_string(),
                });
            }
            ctx.record(StateEffect::ObservedGone {
                family: FAMILY.into(),
                kind: kind.into(),
                name: name.to_string(),
            });
        }
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome.with("name", name).with("kept_data", trashed))
    }

    /// `pocketbase.binary.install`: the cached version's binary into the
    /// service's directory; the record's version follows.
    async fn binary_install(
        &self,
        ctx: &Context,
        install: &BinaryInstall,
    ) -> Result<Outcome, DriverError> {
        let paths = self.paths(&install.name);
        let source = install.version.binary(&self.config.versions_dir);
        if !source.is_file() {
            return Err(DriverError::permanent(
                codes::VERSION_NOT_CACHED,
                format!(
                    "version {} is not in the version cache ({} is missing); install it with POST /api/v1/pocketbase/versions",
                    install.version,
                    source.display()
                ),
            ));
        }
        if !paths.home.is_dir() {
            return Err(DriverError::permanent(
                codes::HOME_MISSING,
                format!("{} does not exist", paths.home.display()),
            ));
        }
        let changed = !files::same_content(&source, &paths.binary);
        if changed {
            files::install_binary(&source, &paths.binary)
                .map_err(|e| file_error("cannot install the binary as", &paths.binary, e))?;
            ctx.step(format!(
                "installed {} as {}",
                source.display(),
                paths.binary.display()
            ));
        }
        if let Some(mut record) = self.record(ctx, &install.name).await? {
            record["version"] = json!(install.version);
            Self::remember(ctx, &install.name, record);
        }
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome
            .with("name", &install.name)
            .with("version", &install.version))
    }

    /// `pocketbase.superuser.upsert`: a short-lived process whose password
    /// argument the runner redacts; then pb_data is the service user's again.
    async fn superuser(
        &self,
        ctx: &Context,
        superuser: &Superuser,
    ) -> Result<Outcome, DriverError> {
        let paths = self.paths(&superuser.name);
        // `--` ends the options: a password such as `--dir=/etc` is the
        // password, never an option of PocketBase's command line.
        let spec = CommandSpec::new(&paths.binary)
            .args(["superuser", "upsert"])
            .arg(format!("--dir={}", paths.data.display()))
            .args(["--", superuser.email.as_str(), superuser.password.expose()])
            .redact(superuser.password.expose())
            .timeout(self.command_timeout());
        let output = ctx.run(spec).await?;
        output
            .check()
            .map_err(|e| DriverError::permanent(codes::SUPERUSER, e.message))?;
        if let Some((uid, gid)) = self.data_owner(&superuser.name)? {
            files::chown_tree(&paths.data, uid, gid)
                .map_err(|e| file_error("cannot give away", &paths.data, e))?;
        }
        Ok(Outcome::changed()
            .with("name", &superuser.name)
            .with("email", &superuser.email))
    }

    /// `pocketbase.backup`: pb_data and the binary of a stopped service,
    /// copied to `.backup` with the version they belong to.
    async fn backup(&self, ctx: &Context, name: &ServiceName) -> Result<Outcome, DriverError> {
        let record = self.require_record(ctx, name).await?;
        let paths = self.paths(name);
        let marker = paths.backup.join(files::MARKER);
        let done = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|m| m["operation"] == ctx.id().to_string());
        if done {
            return Ok(Outcome::unchanged().with("backup", paths.backup.display().to_string()));
        }
        files::remove_any(&paths.backup)
            .map_err(|e| file_error("cannot replace", &paths.backup, e))?;
        std::fs::create_dir(&paths.backup)
            .map_err(|e| file_error("cannot create", &paths.backup, e))?;
        let copy = || -> std::io::Result<()> {
            if paths.data.exists() {
                files::copy_tree(&paths.data, &paths.backup.join("pb_data"))?;
            }
            if paths.binary.exists() {
                files::copy_tree(&paths.binary, &paths.backup.join("pocketbase"))?;
            }
            let meta = json!({"operation": ctx.id().to_string(), "version": record["version"]});
            files::write_atomically(&marker, meta.to_string().as_bytes(), 0o600)
        };
        copy().map_err(|e| {
            let _ = files::remove_any(&paths.backup);
            file_error("cannot back up into", &paths.backup, e)
        })?;
        ctx.step(format!(
            "backed up pb_data and the binary of version {} to {}",
            record["version"],
            paths.backup.display()
        ));
        Ok(Outcome::changed()
            .with("backup", paths.backup.display().to_string())
            .with("version", &record["version"]))
    }

    /// `pocketbase.restore`: the backup back in place (data, binary, the
    /// record's version); nothing to do without one.
    async fn restore(&self, ctx: &Context, name: &ServiceName) -> Result<Outcome, DriverError> {
        let paths = self.paths(name);
        let marker = paths.backup.join(files::MARKER);
        let Some(meta) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            return Ok(Outcome::unchanged().with("name", name));
        };
        for (saved, live) in [
            (paths.backup.join("pb_data"), &paths.data),
            (paths.backup.join("pocketbase"), &paths.binary),
        ] {
            if saved.exists() {
                files::remove_any(live).map_err(|e| file_error("cannot replace", live, e))?;
                std::fs::rename(&saved, live).map_err(|e| file_error("cannot restore", live, e))?;
            }
        }
        if let Some(mut record) = self.record(ctx, name).await? {
            record["version"] = meta["version"].clone();
            Self::remember(ctx, name, record);
        }
        files::remove_any(&paths.backup)
            .map_err(|e| file_error("cannot remove", &paths.backup, e))?;
        ctx.step(format!(
            "restored pb_data and the binary of version {}",
            meta["version"]
        ));
        Ok(Outcome::changed()
            .with("name", name)
            .with("version", &meta["version"]))
    }

    /// `pocketbase.start|stop|restart|status`: the systemd driver's own
    /// action on the unit, then an observation of the service.
    async fn control(
        &self,
        ctx: &Context,
        verb: ServiceVerb,
        name: &ServiceName,
    ) -> Result<Outcome, DriverError> {
        let record = self.require_record(ctx, name).await?;
        let unit_verb = match verb {
            ServiceVerb::Start => UnitVerb::Start,
            ServiceVerb::Stop => UnitVerb::Stop,
            ServiceVerb::Restart => UnitVerb::Restart,
            ServiceVerb::Status => UnitVerb::Status,
        };
        let changed = if verb == ServiceVerb::Status {
            false
        } else {
            let action = SystemdAction::Unit(unit_verb, UnitRef { unit: name.unit() });
            self.systemd.execute(&action, ctx).await?.changed
        };
        let observed = self.observe(ctx, name, &record).await;
        ctx.record(StateEffect::Observed {
            family: FAMILY.into(),
            kind: SERVICE_KIND.into(),
            name: name.to_string(),
            data: observed.clone(),
        });
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome.with("name", name).with("service", observed))
    }

    /// `pocketbase.logs`: the systemd driver's journal read, kept as the
    /// service's last logs.
    async fn logs(&self, ctx: &Context, logs: &Logs) -> Result<Outcome, DriverError> {
        self.require_record(ctx, &logs.name).await?;
        let action = SystemdAction::Logs(systemd_family::Logs {
            unit: logs.name.unit(),
            lines: Some(logs.lines()),
            since: logs.since,
        });
        let read = self.systemd.execute(&action, ctx).await?;
        let mut data = read.result.clone();
        data.remove("unit");
        ctx.record(StateEffect::Observed {
            family: FAMILY.into(),
            kind: LOGS_KIND.into(),
            name: logs.name.to_string(),
            data: Value::Object(data),
        });
        let mut outcome = Outcome::unchanged();
        outcome.result = read.result;
        Ok(outcome.with("name", &logs.name))
    }

    /// `pocketbase.refresh`: every service observed, the list replaced.
    async fn refresh(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let records = self.records(ctx, SERVICE_KIND, None).await?;
        let mut items = Vec::with_capacity(records.len());
        for row in records {
            let Ok(name) = ServiceName::parse(&row.name) else {
                continue;
            };
            let observed = self.observe(ctx, &name, &row.spec).await;
            items.push((row.name, observed));
        }
        let count = items.len();
        ctx.record(StateEffect::ObservedAll {
            family: FAMILY.into(),
            kind: SERVICE_KIND.into(),
            items,
        });
        Ok(Outcome::unchanged().with("services", count))
    }
}

/// The family's driver, as the registry builds it when `[pocketbase]` is
/// enabled: it runs the systemd driver's actions, so it needs `[systemd]`.
pub fn driver(config: &Config, link: &Link) -> std::io::Result<AnyDriver> {
    if !config.systemd.enabled {
        return Err(std::io::Error::other(
            "the pocketbase family needs the systemd family: set [systemd] enabled = true",
        ));
    }
    Ok(AnyDriver::probed(Pocketbase::new(config, link)))
}

impl Driver for Pocketbase {
    type Action = PocketbaseAction;

    async fn execute(
        &self,
        action: &PocketbaseAction,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        match action {
            PocketbaseAction::Check(spec) => self.check(ctx, spec).await,
            PocketbaseAction::Validate(spec) => self.validate(ctx, spec).await,
            PocketbaseAction::SystemValidate(_) => self.system_validate(ctx).await,
            PocketbaseAction::HomeCreate(spec) => self.home_create(ctx, spec).await,
            PocketbaseAction::HomeRemove(remove) => self.home_remove(ctx, remove).await,
            PocketbaseAction::BinaryInstall(install) => self.binary_install(ctx, install).await,
            PocketbaseAction::SuperuserUpsert(superuser) => self.superuser(ctx, superuser).await,
            PocketbaseAction::Health(health) => self.health(ctx, health).await,
            PocketbaseAction::Verify(verify) => self.verify(ctx, verify).await,
            PocketbaseAction::Service(verb, service) => {
                self.control(ctx, *verb, &service.name).await
            }
            PocketbaseAction::Logs(logs) => self.logs(ctx, logs).await,
            PocketbaseAction::Backup(service) => self.backup(ctx, &service.name).await,
            PocketbaseAction::Restore(service) => self.restore(ctx, &service.name).await,
            PocketbaseAction::VersionInstall(source) => self.version_install(ctx, source).await,
            PocketbaseAction::Refresh(_) => self.refresh(ctx).await,
        }
    }
}
