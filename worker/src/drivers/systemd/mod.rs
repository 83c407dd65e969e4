//! The `systemd` driver: unit management over `systemctl`, `journalctl`
//! and `systemd-analyze`, each an argument vector from `[systemd]` (so tests
//! and unusual hosts reach a manager through `nsenter`, `sudo`, …).
//!
//! Invariants:
//! - **Reach.** A unit matched by a `deny` pattern is never touched (the
//!   executor's `check_config` refuses it before the driver runs, and the
//!   driver checks again). Otherwise a unit must match an `allow` pattern or
//!   have been installed by opsqueue on this target (`managed_objects`);
//!   `unit.install` may also create a unit that does not exist yet, and
//!   `unit.install`/`unit.remove` recognise a file in `unit_dir` that starts
//!   with opsqueue's header (a crash between writing it and recording it).
//!   Anything else fails `unit_not_allowed`, never retried.
//! - **State first.** Every action reads `systemctl show` (parsed by key,
//!   never by position) before it acts: a start of an active unit, a stop
//!   of a stopped one, an enable of an enabled one complete with
//!   `changed: false`. After a change the unit is read again; the result and
//!   the observation carry that state.
//! - **Rendered units are verified before they go live**: the unit is
//!   written to a private temporary directory and `systemd-analyze verify`
//!   must exit 0 *and* print nothing on stderr (it exits 0 on unknown keys
//!   and bad values). Only then is it written to `unit_dir` atomically
//!   (temporary file, fsync, rename, fsync of the directory) and systemd
//!   reloaded.
//! - **Errors.** A manager that does not answer (no bus, connection
//!   refused) and a command's own timeout are retryable; a missing,
//!   disallowed, invalid or failing unit is not.
//! - **Cancellation.** A start or restart stopped mid-way (cancel, timeout)
//!   leaves no start job behind: `systemctl stop --no-block` cancels it.

mod parse;
mod unit_file;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::systemd::{
    self as actions, FAMILY, Logs, SystemdAction, UNIT_KIND, UnitName, UnitSpec, UnitVerb,
};
use opsqueue_shared::families::systemd::{SystemdConfig, SystemdScope};
use opsqueue_shared::store::StateEffect;

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome, Probe};
use crate::link::Link;
use crate::runner::{CommandOutput, CommandSpec, RunError};
use parse::{SHOW_PROPERTIES, UnitState};
pub use unit_file::{HEADER, render};

/// This driver's error codes.
pub mod codes {
    /// Denied, or neither allowed nor installed by opsqueue.
    pub const UNIT_NOT_ALLOWED: &str = "unit_not_allowed";
    /// systemd knows no such unit.
    pub const UNIT_NOT_FOUND: &str = "unit_not_found";
    /// A start, restart or reload job failed (the unit's process failed).
    pub const UNIT_FAILED: &str = "unit_failed";
    /// `reload` of a unit without `ExecReload=`.
    pub const RELOAD_UNSUPPORTED: &str = "reload_unsupported";
    /// `reload` of a unit that is not running.
    pub const UNIT_NOT_ACTIVE: &str = "unit_not_active";
    /// `enable` of a unit with no `[Install]` section (static, …).
    pub const UNIT_NOT_INSTALLABLE: &str = "unit_not_installable";
    /// `unit.remove` of a unit whose file is not in `unit_dir`.
    pub const UNIT_NOT_REMOVABLE: &str = "unit_not_removable";
    /// `systemd-analyze verify` refused the rendered unit.
    pub const UNIT_INVALID: &str = "unit_invalid";
    /// The unit file could not be written or removed.
    pub const UNIT_FILE: &str = "unit_file_error";
    /// The manager did not answer (bus down): retryable.
    pub const SYSTEMD_UNAVAILABLE: &str = "systemd_unavailable";
    /// Any other non-zero exit of systemctl or journalctl.
    pub const SYSTEMCTL_FAILED: &str = "systemctl_failed";
    /// The store could not be read for the reach check: retryable.
    pub const STORE: &str = "store_unavailable";
}

/// What stderr says when the manager cannot be reached at all.
const UNREACHABLE: &[&str] = &[
    "Failed to connect to bus",
    "Host is down",
    "Connection refused",
    "Transport endpoint is not connected",
    "Connection timed out",
    "has not been booted with systemd",
];

/// Units named per `systemctl show` call during a refresh.
const SHOW_CHUNK: usize = 64;

/// How long a cleanup `systemctl stop --no-block` may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Systemd {
    config: SystemdConfig,
    link: Link,
}

/// Why the driver may touch a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// An `allow` pattern names it.
    Allowed,
    /// opsqueue installed it (a `managed_objects` row on this target).
    Managed,
    /// Neither: only an install of a new unit, or a file with opsqueue's
    /// header, may proceed.
    None,
}

fn not_allowed(unit: &UnitName) -> DriverError {
    DriverError::permanent(
        codes::UNIT_NOT_ALLOWED,
        format!("{unit} is neither matched by a [systemd] allow pattern nor installed by opsqueue"),
    )
}

/// Classifies a non-zero exit of systemctl or journalctl.
fn failure(output: &CommandOutput, unit: Option<&UnitName>) -> DriverError {
    let stderr = output.stderr_text();
    let message = output.failure_message();
    if UNREACHABLE.iter().any(|m| stderr.contains(m)) {
        return DriverError::retryable(codes::SYSTEMD_UNAVAILABLE, message);
    }
    if output.status.code == Some(5)
        || stderr.contains("not found")
        || stderr.contains("not loaded")
    {
        let what = unit.map_or_else(|| "the unit".to_owned(), |u| u.to_string());
        return DriverError::permanent(
            codes::UNIT_NOT_FOUND,
            format!("systemd has no unit {what}: {}", output.stderr_tail()),
        );
    }
    if stderr.contains("Job for") || stderr.contains("Job type") {
        return DriverError::permanent(codes::UNIT_FAILED, message);
    }
    DriverError::permanent(codes::SYSTEMCTL_FAILED, message)
}

/// What `systemd-analyze verify` said of a rendered unit: it exits 0 on
/// unknown keys and unparsable values, so any stderr refuses it too.
fn verdict(output: &CommandOutput, unit: &UnitName) -> Result<(), DriverError> {
    if output.success() && output.stderr_text().trim().is_empty() {
        return Ok(());
    }
    let stderr: String = output.stderr_text().trim().chars().take(1000).collect();
    Err(DriverError::permanent(
        codes::UNIT_INVALID,
        format!(
            "systemd-analyze verify refused the rendered {unit} ({}): {stderr}",
            output.status
        ),
    ))
}

fn file_error(what: &str, path: &Path, e: std::io::Error) -> DriverError {
    DriverError::permanent(codes::UNIT_FILE, format!("{what} {}: {e}", path.display()))
}

/// The content of `path`, or `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<String>, DriverError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error("cannot read", path, e)),
    }
}

/// Writes `content` to `dir/name` so that a reader sees the old file or the
/// new one, never a part: a temporary file beside it, fsync, rename, fsync
/// of the directory. Mode 0644 (unit files are public; secrets belong in an
/// `EnvironmentFile=` the unit does not carry).
fn write_atomically(dir: &Path, name: &str, content: &str) -> Result<(), DriverError> {
    let temp = dir.join(format!(".{name}.opsqueue-tmp"));
    let target = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(content.as_bytes())?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        file_error("cannot write", &target, e)
    })
}

impl Systemd {
    pub fn new(config: &Config, link: &Link) -> Self {
        Self {
            config: config.systemd.clone(),
            link: link.clone(),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.command_timeout_secs)
    }

    fn argv(&self, argv: &[String]) -> CommandSpec {
        CommandSpec::from_argv(argv)
            .expect("the config check refuses an empty command")
            .timeout(self.timeout())
    }

    /// `systemctl [--user] --no-ask-password <args>`.
    fn systemctl<I, S>(&self, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut spec = self.argv(&self.config.systemctl);
        if self.config.scope == SystemdScope::User {
            spec = spec.arg("--user");
        }
        spec.arg("--no-ask-password").args(args)
    }

    /// Runs systemctl; a non-zero exit is classified.
    async fn call(
        &self,
        ctx: &Context,
        spec: CommandSpec,
        unit: Option<&UnitName>,
    ) -> Result<CommandOutput, DriverError> {
        let output = ctx.run(spec).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(failure(&output, unit))
        }
    }

    /// One `systemctl show` of `units` (`unit` when it names one, for the
    /// error), one state each, in the order named (systemctl prints one
    /// block per name, in that order).
    async fn show_units<S: AsRef<std::ffi::OsStr>>(
        &self,
        ctx: &Context,
        units: &[S],
        unit: Option<&UnitName>,
    ) -> Result<Vec<UnitState>, DriverError> {
        let spec = self
            .systemctl(["show", "--timestamp=unix", "-p", SHOW_PROPERTIES])
            .args(units)
            .quiet();
        let output = self.call(ctx, spec, unit).await?;
        let blocks = parse::show_blocks(&output.stdout_text());
        if blocks.len() != units.len() {
            return Err(DriverError::permanent(
                codes::SYSTEMCTL_FAILED,
                format!(
                    "systemctl show described {} units for the {} named",
                    blocks.len(),
                    units.len()
                ),
            ));
        }
        Ok(blocks)
    }

    /// [`Self::show_units`] of any number of units, [`SHOW_CHUNK`] per call.
    async fn show_many(
        &self,
        ctx: &Context,
        units: &[String],
    ) -> Result<Vec<UnitState>, DriverError> {
        let mut states = Vec::with_capacity(units.len());
        for chunk in units.chunks(SHOW_CHUNK) {
            states.extend(self.show_units(ctx, chunk, None).await?);
        }
        Ok(states)
    }

    async fn show(&self, ctx: &Context, unit: &UnitName) -> Result<UnitState, DriverError> {
        let mut states = self.show_units(ctx, &[unit.as_str()], Some(unit)).await?;
        Ok(states.remove(0))
    }

    /// Units opsqueue installed on this operation's target.
    async fn managed_units(
        &self,
        ctx: &Context,
        unit: Option<&UnitName>,
    ) -> Result<Vec<String>, DriverError> {
        let name = unit.map(UnitName::to_string);
        let rows = self
            .link
            .managed_list(ctx.target(), FAMILY, UNIT_KIND, name.as_deref())
            .await
            .map_err(|e| DriverError::retryable(codes::STORE, e.to_string()))?;
        Ok(rows.into_iter().map(|row| row.name).collect())
    }

    async fn reach(&self, ctx: &Context, unit: &UnitName) -> Result<Reach, DriverError> {
        if let Err(message) = actions::check_not_denied(&ctx.config().systemd, unit) {
            return Err(DriverError::permanent(codes::UNIT_NOT_ALLOWED, message));
        }
        if actions::first_match(&self.config.allow, unit).is_some() {
            return Ok(Reach::Allowed);
        }
        if !self.managed_units(ctx, Some(unit)).await?.is_empty() {
            return Ok(Reach::Managed);
        }
        Ok(Reach::None)
    }

    /// The reach check of every action but install and remove.
    async fn require_reach(&self, ctx: &Context, unit: &UnitName) -> Result<Reach, DriverError> {
        match self.reach(ctx, unit).await? {
            Reach::None => Err(not_allowed(unit)),
            reach => Ok(reach),
        }
    }

    fn observe(ctx: &Context, state: &UnitState, unit: &UnitName) {
        if state.exists() {
            ctx.record(StateEffect::Observed {
                family: FAMILY.into(),
                kind: UNIT_KIND.into(),
                name: unit.to_string(),
                data: state.to_json(),
            });
        } else {
            ctx.record(StateEffect::ObservedGone {
                family: FAMILY.into(),
                kind: UNIT_KIND.into(),
                name: unit.to_string(),
            });
        }
    }

    /// Runs a job verb (start, restart, reload); if the operation is stopped
    /// while systemctl waits for the job, the job is cancelled too.
    async fn job(&self, ctx: &Context, verb: &str, unit: &UnitName) -> Result<(), DriverError> {
        match ctx.run(self.systemctl([verb, unit.as_str()])).await {
            Ok(output) if output.success() => Ok(()),
            Ok(output) => Err(failure(&output, Some(unit))),
            Err(error @ RunError::Cancelled { .. }) => {
                if verb != "reload" {
                    ctx.step(format!(
                        "stopped mid-way: cancelling the {verb} job of {unit}"
                    ));
                    let stop = self
                        .systemctl(["stop", "--no-block", unit.as_str()])
                        .timeout(CLEANUP_TIMEOUT);
                    if let Err(e) = ctx.run_cleanup(stop).await {
                        ctx.step(format!("could not cancel the job: {e}"));
                    }
                }
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn unit_verb(
        &self,
        ctx: &Context,
        verb: UnitVerb,
        unit: &UnitName,
    ) -> Result<Outcome, DriverError> {
        self.require_reach(ctx, unit).await?;
        let before = self.show(ctx, unit).await?;
        if verb != UnitVerb::Status && !before.exists() {
            return Err(DriverError::permanent(
                codes::UNIT_NOT_FOUND,
                format!("systemd has no unit {unit}"),
            ));
        }
        let changed = match verb {
            UnitVerb::Status => false,
            UnitVerb::Start if before.is_active() => false,
            UnitVerb::Stop if before.is_inactive() => false,
            UnitVerb::Enable if before.is_enabled() => false,
            UnitVerb::Disable if !before.is_enabled() => false,
            UnitVerb::Start | UnitVerb::Restart => {
                self.job(ctx, verb.as_str(), unit).await?;
                true
            }
            UnitVerb::Reload => {
                if !before.can_reload() {
                    return Err(DriverError::permanent(
                        codes::RELOAD_UNSUPPORTED,
                        format!("{unit} cannot reload (it has no ExecReload=); restart it instead"),
                    ));
                }
                if !before.is_active() {
                    return Err(DriverError::permanent(
                        codes::UNIT_NOT_ACTIVE,
                        format!(
                            "{unit} is {}; only a running unit reloads",
                            before.active_state()
                        ),
                    ));
                }
                self.job(ctx, "reload", unit).await?;
                true
            }
            UnitVerb::Stop | UnitVerb::Disable => {
                self.call(
                    ctx,
                    self.systemctl([verb.as_str(), unit.as_str()]),
                    Some(unit),
                )
                .await?;
                true
            }
            UnitVerb::Enable => {
                if !matches!(
                    before.unit_file_state(),
                    "disabled" | "linked" | "linked-runtime"
                ) {
                    return Err(DriverError::permanent(
                        codes::UNIT_NOT_INSTALLABLE,
                        format!(
                            "{unit} cannot be enabled: its unit file state is {:?} (no [Install] section, masked or generated)",
                            before.unit_file_state()
                        ),
                    ));
                }
                self.call(ctx, self.systemctl(["enable", unit.as_str()]), Some(unit))
                    .await?;
                true
            }
        };
        let after = if changed {
            self.show(ctx, unit).await?
        } else {
            before
        };
        Self::observe(ctx, &after, unit);
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome.with("unit", unit).with("state", after.to_json()))
    }

    async fn logs(&self, ctx: &Context, logs: &Logs) -> Result<Outcome, DriverError> {
        self.require_reach(ctx, &logs.unit).await?;
        let unit_flag = match self.config.scope {
            SystemdScope::System => "--unit",
            SystemdScope::User => "--user-unit",
        };
        let mut spec = self
            .argv(&self.config.journalctl)
            .args([unit_flag, logs.unit.as_str()])
            .args(["--no-pager", "--output=json", "--lines"])
            .arg(logs.lines().to_string())
            .arg("--output-fields=MESSAGE,PRIORITY,_PID,SYSLOG_IDENTIFIER,_COMM")
            .quiet();
        if let Some(since) = logs.since {
            spec = spec.arg(format!("--since=@{}", since.timestamp()));
        }
        let output = self.call(ctx, spec, Some(&logs.unit)).await?;
        let lines = parse::journal_lines(&output.stdout_text());
        Ok(Outcome::unchanged()
            .with("unit", &logs.unit)
            .with("count", lines.len())
            .with("truncated", output.stdout_truncated)
            .with("lines", lines))
    }

    fn unit_path(&self, unit: &UnitName) -> PathBuf {
        self.config.unit_dir.join(unit.as_str())
    }

    /// `systemd-analyze verify` on a copy in a private temporary directory:
    /// a non-zero exit or any stderr refuses the unit.
    async fn verify(
        &self,
        ctx: &Context,
        unit: &UnitName,
        content: &str,
    ) -> Result<(), DriverError> {
        let dir =
            std::env::temp_dir().join(format!("opsqueue-verify-{}-{}", ctx.id(), ctx.attempt()));
        let path = dir.join(unit.as_str());
        let prepare = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, content)
        };
        prepare().map_err(|e| file_error("cannot prepare the verification copy", &path, e))?;
        let verified = ctx
            .run(
                self.argv(&self.config.systemd_analyze)
                    .arg("verify")
                    .arg(&path),
            )
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        verdict(&verified?, unit)
    }

    async fn daemon_reload(&self, ctx: &Context) -> Result<(), DriverError> {
        self.call(ctx, self.systemctl(["daemon-reload"]), None)
            .await
            .map(drop)
    }

    async fn install(&self, ctx: &Context, spec: &UnitSpec) -> Result<Outcome, DriverError> {
        let unit = &spec.unit;
        let path = self.unit_path(unit);
        let existing = read_file(&path)?;
        let ours = existing.as_deref().is_some_and(|t| t.starts_with(HEADER));
        if self.reach(ctx, unit).await? == Reach::None && !ours {
            let state = self.show(ctx, unit).await?;
            if existing.is_some() || state.exists() {
                return Err(DriverError::permanent(
                    codes::UNIT_NOT_ALLOWED,
                    format!(
                        "{unit} already exists and was not installed by opsqueue (nor does a [systemd] allow pattern name it)"
                    ),
                ));
            }
        }
        let content = render(spec, self.config.scope);
        let file_changed = existing.as_deref() != Some(content.as_str());
        if file_changed {
            self.verify(ctx, unit, &content).await?;
            if !self.config.unit_dir.is_dir() {
                return Err(DriverError::permanent(
                    codes::UNIT_FILE,
                    format!(
                        "the unit directory {} does not exist",
                        self.config.unit_dir.display()
                    ),
                ));
            }
            write_atomically(&self.config.unit_dir, unit.as_str(), &content)?;
            ctx.step(format!("wrote {}", path.display()));
        }
        let mut state = self.show(ctx, unit).await?;
        if file_changed || state.needs_daemon_reload() || !state.exists() {
            self.daemon_reload(ctx).await?;
            state = self.show(ctx, unit).await?;
        }
        let mut changed = file_changed;
        if spec.enable && !state.is_enabled() {
            self.call(ctx, self.systemctl(["enable", unit.as_str()]), Some(unit))
                .await?;
            changed = true;
        }
        if spec.start {
            if !state.is_active() {
                self.job(ctx, "start", unit).await?;
                changed = true;
            } else if file_changed {
                ctx.step(format!(
                    "{unit} runs an older version of its unit: restarting it"
                ));
                self.job(ctx, "restart", unit).await?;
                changed = true;
            }
        }
        if changed {
            state = self.show(ctx, unit).await?;
        }
        ctx.record(StateEffect::Managed {
            family: FAMILY.into(),
            kind: UNIT_KIND.into(),
            name: unit.to_string(),
            spec: serde_json::to_value(spec).expect("a spec serializes"),
        });
        Self::observe(ctx, &state, unit);
        let outcome = if changed {
            Outcome::changed()
        } else {
            Outcome::unchanged()
        };
        Ok(outcome
            .with("unit", unit)
            .with("path", path.display().to_string())
            .with("file_changed", file_changed)
            .with("state", state.to_json()))
    }

    async fn remove(&self, ctx: &Context, unit: &UnitName) -> Result<Outcome, DriverError> {
        let path = self.unit_path(unit);
        let existing = read_file(&path)?;
        let ours = existing.as_deref().is_some_and(|t| t.starts_with(HEADER));
        let reach = self.reach(ctx, unit).await?;
        let state = self.show(ctx, unit).await?;
        if existing.is_none() && !state.exists() {
            // Nothing is left to remove (a re-run, or it never was).
            Self::forget(ctx, unit);
            return Ok(Outcome::unchanged().with("unit", unit));
        }
        if reach == Reach::None && !ours {
            return Err(not_allowed(unit));
        }
        // Still loaded from our file, which a lost attempt already deleted?
        let loaded_from_here = Path::new(state.get("FragmentPath")) == path;
        if existing.is_none() && !loaded_from_here {
            return Err(DriverError::permanent(
                codes::UNIT_NOT_REMOVABLE,
                format!(
                    "{unit} is defined by {:?}, not by a file in {}; only units in the unit directory can be removed",
                    state.get("FragmentPath"),
                    self.config.unit_dir.display()
                ),
            ));
        }
        if !state.is_inactive() {
            self.call(ctx, self.systemctl(["stop", unit.as_str()]), Some(unit))
                .await?;
        }
        if state.is_enabled() {
            self.call(ctx, self.systemctl(["disable", unit.as_str()]), Some(unit))
                .await?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => ctx.step(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error("cannot remove", &path, e)),
        }
        self.daemon_reload(ctx).await?;
        // A failed unit stays listed until its failure is forgotten.
        let _ = ctx
            .run(self.systemctl(["reset-failed", unit.as_str()]).quiet())
            .await;
        Self::forget(ctx, unit);
        Ok(Outcome::changed().with("unit", unit))
    }

    fn forget(ctx: &Context, unit: &UnitName) {
        ctx.record(StateEffect::Unmanaged {
            family: FAMILY.into(),
            kind: UNIT_KIND.into(),
            name: unit.to_string(),
        });
        ctx.record(StateEffect::ObservedGone {
            family: FAMILY.into(),
            kind: UNIT_KIND.into(),
            name: unit.to_string(),
        });
    }

    /// Unit names systemd lists (loaded units and unit files) that an
    /// `allow` pattern names.
    async fn allowed_units(&self, ctx: &Context) -> Result<BTreeSet<String>, DriverError> {
        let mut found = BTreeSet::new();
        if self.config.allow.is_empty() {
            return Ok(found);
        }
        for list in [&["list-units", "--all"][..], &["list-unit-files"][..]] {
            let spec = self
                .systemctl(list)
                .args(["--no-legend", "--no-pager", "--output=json"])
                .quiet();
            let output = self.call(ctx, spec, None).await?;
            let names = parse::listed_units(&output.stdout_text()).map_err(|e| {
                DriverError::permanent(
                    codes::SYSTEMCTL_FAILED,
                    format!("systemctl {}: {e}", list.join(" ")),
                )
            })?;
            for name in names {
                if let Ok(unit) = UnitName::parse(&name)
                    && unit.as_str() == name
                    && !unit.is_template()
                    && actions::allowed_by_config(&ctx.config().systemd, &unit)
                {
                    found.insert(name);
                }
            }
        }
        Ok(found)
    }

    async fn refresh(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let managed: BTreeSet<String> = self
            .managed_units(ctx, None)
            .await?
            .into_iter()
            .filter(|name| {
                UnitName::parse(name).is_ok_and(|unit| {
                    actions::check_not_denied(&ctx.config().systemd, &unit).is_ok()
                })
            })
            .collect();
        let mut names = self.allowed_units(ctx).await?;
        names.extend(managed.iter().cloned());
        let names: Vec<String> = names.into_iter().collect();
        let states = self.show_many(ctx, &names).await?;
        let items: Vec<(String, serde_json::Value)> = names
            .iter()
            .zip(&states)
            .filter(|(name, state)| state.exists() || managed.contains(*name))
            .map(|(name, state)| (name.clone(), state.to_json()))
            .collect();
        let count = items.len();
        ctx.record(StateEffect::ObservedAll {
            family: FAMILY.into(),
            kind: UNIT_KIND.into(),
            items,
        });
        Ok(Outcome::unchanged().with("units", count))
    }
}

/// The family's driver, as the registry builds it when `[systemd]` is enabled.
pub fn driver(config: &Config, link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::probed(Systemd::new(config, link)))
}

impl Driver for Systemd {
    type Action = SystemdAction;

    async fn execute(&self, action: &SystemdAction, ctx: &Context) -> Result<Outcome, DriverError> {
        match action {
            SystemdAction::Unit(verb, target) => self.unit_verb(ctx, *verb, &target.unit).await,
            SystemdAction::Logs(logs) => self.logs(ctx, logs).await,
            SystemdAction::Install(spec) => self.install(ctx, spec).await,
            SystemdAction::Remove(target) => self.remove(ctx, &target.unit).await,
            SystemdAction::Refresh(_) => self.refresh(ctx).await,
        }
    }
}

impl Probe for Systemd {
    /// `systemctl is-system-running`: the manager's state (`running`,
    /// `degraded`, …), or an error when it does not answer.
    async fn probe(&self, ctx: &Context) -> Result<String, DriverError> {
        let output = ctx
            .run(self.systemctl(["is-system-running"]).quiet())
            .await?;
        let state = output.stdout_text().trim().to_owned();
        if state.is_empty() || state == "offline" {
            return Err(failure(&output, None));
        }
        Ok(format!("manager {state}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::ExitInfo;

    fn output(code: i32, stderr: &str) -> CommandOutput {
        CommandOutput {
            command: "systemctl start web.service".into(),
            pid: 1,
            status: ExitInfo {
                code: Some(code),
                signal: None,
            },
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn a_manager_that_does_not_answer_is_retryable_and_a_missing_unit_is_not() {
        let unit = UnitName::parse("web").unwrap();
        let down = failure(
            &output(1, "Failed to connect to bus: No such file or directory\n"),
            Some(&unit),
        );
        assert!(down.retryable);
        assert_eq!(down.code, codes::SYSTEMD_UNAVAILABLE);
        let offline = failure(
            &output(
                1,
                "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n",
            ),
            Some(&unit),
        );
        assert!(offline.retryable);
        let missing = failure(
            &output(
                5,
                "Failed to start web.service: Unit web.service not found.\n",
            ),
            Some(&unit),
        );
        assert!(!missing.retryable);
        assert_eq!(missing.code, codes::UNIT_NOT_FOUND);
        let failed = failure(
            &output(
                1,
                "Job for web.service failed because the control process exited with error code.\n",
            ),
            Some(&unit),
        );
        assert_eq!(failed.code, codes::UNIT_FAILED);
        assert!(!failed.retryable);
        let other = failure(&output(1, "Access denied\n"), Some(&unit));
        assert_eq!(other.code, codes::SYSTEMCTL_FAILED);
        assert!(!other.retryable);
    }

    #[test]
    fn verify_refuses_on_any_stderr_even_with_exit_code_0() {
        let unit = UnitName::parse("web").unwrap();
        assert!(verdict(&output(0, ""), &unit).is_ok());
        let warned = verdict(
            &output(
                0,
                "/tmp/x/web.service:7: Unknown key 'Frobnicate' in section [Service], ignoring.\n",
            ),
            &unit,
        )
        .unwrap_err();
        assert_eq!(warned.code, codes::UNIT_INVALID);
        assert!(warned.message.contains("Frobnicate"));
        let failed = verdict(&output(1, ""), &unit).unwrap_err();
        assert_eq!(failed.code, codes::UNIT_INVALID);
        assert!(!failed.retryable);
    }

    #[test]
    fn a_unit_file_is_replaced_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "web.service", "one\n").unwrap();
        write_atomically(dir.path(), "web.service", "two\n").unwrap();
        let path = dir.path().join("web.service");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["web.service"]);
        assert_eq!(read_file(&dir.path().join("missing")).unwrap(), None);
    }
}
