//! The `pm2` driver (the PM2 controller): every action runs the configured
//! pm2 command (`[pm2] bin`, with `PM2_HOME` from `[pm2] home`) through the
//! command runner, each call bounded by `[pm2] command_timeout_secs` (a
//! daemon that does not answer is a retryable `command_timeout`).
//!
//! Invariants:
//! - **Look first.** Every action starts with `pm2 jlist`, so a target
//!   already in the desired state completes `changed: false` without
//!   touching it (start of an online app, stop of a stopped one, delete of
//!   an absent one, flush of empty logs), and an unknown app is a permanent
//!   `process_not_found`.
//! - **No environment leaves pm2.** `jlist` runs quietly (its output, which
//!   holds every app's environment, is never logged) and only the
//!   whitelisted fields of [`view`] reach results and observations. pm2 runs
//!   with a cleared environment (`PATH`, `HOME`, `LANG`, `TZ`, `PM2_HOME`
//!   and the app's own `env`), so the worker's own environment never
//!   reaches an app, and the spec's env values are redacted from pm2's
//!   output.
//! - **pm2's banner is skipped.** On a fresh `PM2_HOME` pm2 prints a
//!   banner to stdout before `jlist`'s list (HOST-PROGRAMS §1).
//!   `PM2_DISCRETE_MODE` keeps it out, and [`view::Listed::parse`] finds
//!   the list after it anyway. `-s` is not passed: it silences every
//!   message, errors included (`pm2 stop nosuch -s` exits 1 saying
//!   nothing), and failures are classified by those messages.
//! - **Paths stay inside `[pm2] base_dir`** after symlinks are resolved;
//!   pm2 is given the resolved paths.
//! - **Observations** follow each action: the app as seen after it
//!   (`process`, or gone), its log lines after `pm2.logs` (`logs`), the
//!   whole list after `pm2.list`; apps opsqueue created are recorded as
//!   managed, with their spec minus the env values.
//! - **`pm2.update`** (in `update`) changes settings through pm2's reload
//!   path and puts the previous ones back when the app does not come up.
//! - **`pm2.start`** (in `start`) waits for an app still `launching` (its
//!   `ready` signal) until it is online or the operation stops, and deletes
//!   an app it created when the operation is stopped before it completes.

mod start;
mod update;
mod view;

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::pm2::{Logs, Named, Pm2Action, ProcessName};
use opsqueue_shared::names::AbsolutePath;
use opsqueue_shared::store::StateEffect;
use serde_json::{Value, json};

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome};
use crate::link::Link;
use crate::runner::{CommandOutput, CommandSpec};
use view::{Listed, STOPPED};

/// Error codes of this driver.
pub mod codes {
    /// No app of that name in pm2's list.
    pub const PROCESS_NOT_FOUND: &str = "process_not_found";
    /// A script or working directory is missing, or resolves outside
    /// `[pm2] base_dir`.
    pub const BAD_PATH: &str = "pm2_bad_path";
    /// pm2 refused the command (its message is in `message`).
    pub const PM2_FAILED: &str = "pm2_failed";
    /// pm2 could not reach its daemon: retryable.
    pub const PM2_UNAVAILABLE: &str = "pm2_unavailable";
    /// `jlist` printed something that is not a list.
    pub const PM2_BAD_OUTPUT: &str = "pm2_bad_output";
    /// A log file could not be read.
    pub const LOGS_UNREADABLE: &str = "pm2_logs_unreadable";
    /// The app did not come up with its new settings (`pm2.update`); the
    /// message says whether the previous ones were put back.
    pub const UPDATE_FAILED: &str = "pm2_update_failed";
}

const KIND_PROCESS: &str = "process";
const KIND_LOGS: &str = "logs";
/// How often a launching app is looked at again.
const LAUNCH_POLL: Duration = Duration::from_millis(500);
/// The most bytes read from the end of one log file.
const LOG_TAIL_BYTES: u64 = 256 * 1024;
/// Env values shorter than this are not redacted from pm2's output (they
/// would blank out ordinary words and cannot be secrets worth the name).
const MIN_REDACTED_LEN: usize = 4;
/// pm2's words for a daemon it cannot reach.
const UNAVAILABLE_SIGNS: &[&str] = &[
    "ECONNREFUSED",
    "ECONNRESET",
    "EPIPE",
    "Daemon not launched",
    "daemon not running",
];

pub struct Pm2 {
    bin: Vec<String>,
    home: Option<PathBuf>,
    base_dir: PathBuf,
    command_timeout: Duration,
}

impl Pm2 {
    pub fn new(config: &Config) -> Self {
        Self {
            bin: config.pm2.bin.clone(),
            home: config.pm2.home.clone(),
            base_dir: config.pm2.base_dir.clone(),
            command_timeout: Duration::from_secs(config.pm2.command_timeout_secs),
        }
    }

    /// `pm2 <args> --no-color` with the driver's environment.
    fn command<I, S>(&self, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut spec = CommandSpec::from_argv(&self.bin)
            .expect("the configuration refuses an empty pm2.bin")
            .args(args)
            .arg("--no-color")
            .clear_env()
            .timeout(self.command_timeout);
        let path = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        spec = spec.env("PATH", path);
        for key in ["HOME", "LANG", "TZ"] {
            if let Some(value) = std::env::var_os(key) {
                spec = spec.env(key, value);
            }
        }
        if let Some(home) = &self.home {
            spec = spec.env("PM2_HOME", home);
        }
        spec.env("PM2_DISCRETE_MODE", "true")
    }

    /// Runs a pm2 command and classifies a failure.
    async fn pm2(&self, ctx: &Context, spec: CommandSpec) -> Result<CommandOutput, DriverError> {
        Self::classify(ctx.run(spec).await?)
    }

    /// A pm2 command's output, or its failure classified.
    fn classify(output: CommandOutput) -> Result<CommandOutput, DriverError> {
        if output.success() {
            return Ok(output);
        }
        let message = output.failure_message();
        Err(
            if UNAVAILABLE_SIGNS.iter().any(|sign| output.mentions(sign)) {
                DriverError::retryable(codes::PM2_UNAVAILABLE, message)
            } else if output.mentions("Process or Namespace") && output.mentions("not found") {
                DriverError::permanent(codes::PROCESS_NOT_FOUND, message)
            } else {
                DriverError::permanent(codes::PM2_FAILED, message)
            },
        )
    }

    /// pm2's list (quiet: it holds every app's environment).
    async fn list(&self, ctx: &Context) -> Result<Listed, DriverError> {
        let output = self.pm2(ctx, self.command(["jlist"]).quiet()).await?;
        Self::listed(&output)
    }

    /// `jlist`'s output as pm2's list.
    fn listed(output: &CommandOutput) -> Result<Listed, DriverError> {
        Listed::parse(&output.stdout)
            .map_err(|e| DriverError::permanent(codes::PM2_BAD_OUTPUT, e.to_string()))
    }

    fn not_found(name: &ProcessName) -> DriverError {
        DriverError::permanent(
            codes::PROCESS_NOT_FOUND,
            format!("pm2 has no app named {name}"),
        )
    }

    /// Records the app as seen now and answers with it.
    async fn observe(
        &self,
        ctx: &Context,
        name: &ProcessName,
        outcome: Outcome,
    ) -> Result<Outcome, DriverError> {
        let listed = self.list(ctx).await?;
        Ok(match listed.get(name.as_str()) {
            Some(app) => {
                let view = app.view();
                ctx.record(StateEffect::Observed {
                    family: "pm2".into(),
                    kind: KIND_PROCESS.into(),
                    name: name.to_string(),
                    data: view.clone(),
                });
                outcome
                    .with("name", name)
                    .with("status", app.status())
                    .with("process", view)
            }
            None => {
                ctx.record(gone(KIND_PROCESS, name));
                outcome.with("name", name).with("status", "absent")
            }
        })
    }

    /// A path of the spec, resolved (symlinks too) and checked to lie
    /// inside the base directory.
    fn resolve(&self, field: &str, path: &AbsolutePath, dir: bool) -> Result<PathBuf, DriverError> {
        let bad = |message: String| DriverError::permanent(codes::BAD_PATH, message);
        let base = std::fs::canonicalize(&self.base_dir).map_err(|e| {
            bad(format!(
                "the base directory {} ([pm2] base_dir): {e}",
                self.base_dir.display()
            ))
        })?;
        let real = std::fs::canonicalize(path).map_err(|e| bad(format!("{field} {path}: {e}")))?;
        if !real.starts_with(&base) {
            return Err(bad(format!(
                "{field} {path} resolves to {}, outside the base directory {}",
                real.display(),
                base.display()
            )));
        }
        let kind_ok = if dir { real.is_dir() } else { real.is_file() };
        if !kind_ok {
            let want = if dir { "a directory" } else { "a file" };
            return Err(bad(format!("{field} {path} is not {want}")));
        }
        Ok(real)
    }

    /// stop, restart, reload: the app must exist; `skip_if` is the status
    /// in which there is nothing to do.
    async fn operate(
        &self,
        ctx: &Context,
        verb: &str,
        named: &Named,
        skip_if: Option<&str>,
    ) -> Result<Outcome, DriverError> {
        let name = &named.name;
        let listed = self.list(ctx).await?;
        let app = listed
            .get(name.as_str())
            .ok_or_else(|| Self::not_found(name))?;
        if let Some(status) = skip_if
            && app.is(status)
        {
            ctx.step(format!("{name} is already {status}"));
            return self.observe(ctx, name, Outcome::unchanged()).await;
        }
        self.pm2(ctx, self.command([verb, name.as_str()])).await?;
        self.observe(ctx, name, Outcome::changed()).await
    }

    async fn delete(&self, named: &Named, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &named.name;
        let present = self.list(ctx).await?.get(name.as_str()).is_some();
        let outcome = if present {
            match self.pm2(ctx, self.command(["delete", name.as_str()])).await {
                Ok(_) => Outcome::changed(),
                Err(e) if e.code == codes::PROCESS_NOT_FOUND => Outcome::unchanged(),
                Err(e) => return Err(e),
            }
        } else {
            ctx.step(format!("{name} is already absent"));
            Outcome::unchanged()
        };
        ctx.record(gone(KIND_PROCESS, name));
        ctx.record(gone(KIND_LOGS, name));
        ctx.record(StateEffect::Unmanaged {
            family: "pm2".into(),
            kind: KIND_PROCESS.into(),
            name: name.to_string(),
        });
        Ok(outcome.with("name", name).with("status", "absent"))
    }

    async fn list_all(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let listed = self.list(ctx).await?;
        let items: Vec<(String, Value)> = listed
            .apps()
            .map(|(name, app)| (name.to_owned(), app.view()))
            .collect();
        let processes: Vec<&Value> = items.iter().map(|(_, view)| view).collect();
        let outcome = Outcome::unchanged().with("processes", &processes);
        ctx.record(StateEffect::ObservedAll {
            family: "pm2".into(),
            kind: KIND_PROCESS.into(),
            items,
        });
        Ok(outcome)
    }

    async fn describe(&self, named: &Named, ctx: &Context) -> Result<Outcome, DriverError> {
        let outcome = self.observe(ctx, &named.name, Outcome::unchanged()).await?;
        let found = outcome.result.get("status") != Some(&json!("absent"));
        Ok(outcome.with("found", found))
    }

    async fn logs(&self, logs: &Logs, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &logs.name;
        let listed = self.list(ctx).await?;
        let app = listed
            .get(name.as_str())
            .ok_or_else(|| Self::not_found(name))?;
        let (out_paths, err_paths) = app.log_paths();
        let lines = logs.lines() as usize;
        let read = |paths: &[PathBuf]| -> Result<Vec<String>, DriverError> {
            let mut all = Vec::new();
            for path in paths {
                all.extend(tail_lines(path, lines).map_err(|e| {
                    DriverError::permanent(
                        codes::LOGS_UNREADABLE,
                        format!("{}: {e}", path.display()),
                    )
                })?);
            }
            let mut kept = all.split_off(all.len().saturating_sub(lines));
            // Several instances' files together stay within one file's cap.
            let mut bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
            while bytes > LOG_TAIL_BYTES as usize && !kept.is_empty() {
                bytes -= kept.remove(0).len() + 1;
            }
            Ok(kept)
        };
        let data = json!({
            "lines": lines,
            "out": read(&out_paths)?,
            "err": read(&err_paths)?,
        });
        ctx.record(StateEffect::Observed {
            family: "pm2".into(),
            kind: KIND_LOGS.into(),
            name: name.to_string(),
            data: data.clone(),
        });
        Ok(Outcome::unchanged()
            .with("name", name)
            .with("out", &data["out"])
            .with("err", &data["err"]))
    }

    async fn flush(&self, named: &Named, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &named.name;
        let listed = self.list(ctx).await?;
        let app = listed
            .get(name.as_str())
            .ok_or_else(|| Self::not_found(name))?;
        let (out, err) = app.log_paths();
        let empty = out
            .iter()
            .chain(&err)
            .all(|path| std::fs::metadata(path).map_or(true, |m| m.len() == 0));
        let outcome = if empty {
            ctx.step(format!("{name}'s logs are already empty"));
            Outcome::unchanged()
        } else {
            self.pm2(ctx, self.command(["flush", name.as_str()]))
                .await?;
            Outcome::changed()
        };
        ctx.record(StateEffect::Observed {
            family: "pm2".into(),
            kind: KIND_LOGS.into(),
            name: name.to_string(),
            data: json!({"lines": 0, "out": [], "err": []}),
        });
        Ok(outcome.with("name", name))
    }
}

fn gone(kind: &str, name: &ProcessName) -> StateEffect {
    StateEffect::ObservedGone {
        family: "pm2".into(),
        kind: kind.into(),
        name: name.to_string(),
    }
}

/// The last `lines` lines of a file, reading at most [`LOG_TAIL_BYTES`] from
/// its end; a missing file has none.
fn tail_lines(path: &Path, lines: usize) -> std::io::Result<Vec<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // cut mid-line
    }
    Ok(all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect())
}

/// The family's driver, as the registry builds it when `[pm2]` is enabled.
pub fn driver(config: &Config, _link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::plain(Pm2::new(config)))
}

impl Driver for Pm2 {
    type Action = Pm2Action;

    async fn execute(&self, action: &Pm2Action, ctx: &Context) -> Result<Outcome, DriverError> {
        match action {
            Pm2Action::Start(start) => self.start(start, ctx).await,
            Pm2Action::Update(update) => self.update(update, ctx).await,
            Pm2Action::Stop(named) => self.operate(ctx, "stop", named, Some(STOPPED)).await,
            Pm2Action::Restart(named) => self.operate(ctx, "restart", named, None).await,
            Pm2Action::Reload(named) => self.operate(ctx, "reload", named, None).await,
            Pm2Action::Delete(named) => self.delete(named, ctx).await,
            Pm2Action::List(_) => self.list_all(ctx).await,
            Pm2Action::Describe(named) => self.describe(named, ctx).await,
            Pm2Action::Logs(logs) => self.logs(logs, ctx).await,
            Pm2Action::Flush(named) => self.flush(named, ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_keeps_the_last_lines_and_a_missing_file_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), ["line 49", "line 50"]);
        assert_eq!(tail_lines(&path, 500).unwrap().len(), 50);
        assert!(
            tail_lines(&dir.path().join("none.log"), 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_huge_log_is_read_from_its_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let line = "x".repeat(99) + "\n";
        std::fs::write(&path, line.repeat(10_000) + "last\n").unwrap();
        let tail = tail_lines(&path, 1_000).unwrap();
        assert!(tail.len() < 2_700, "read more than the cap: {}", tail.len());
        assert_eq!(tail.last().unwrap(), "last");
        assert!(tail.iter().all(|l| l == "last" || l.len() == 99));
    }
}
