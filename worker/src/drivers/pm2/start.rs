//! `pm2.start`: look the app up first; an online app is left alone, a
//! launching one (a `wait_ready` app that has not signalled yet) is waited
//! for, a stopped one is restarted with its own spec, and an absent one is
//! created from the spec.
//!
//! Invariant: **a create that the operation's stop cuts short is undone.**
//! When the operation is cancelled, times out or is shut down while
//! creating the app (pm2 waiting for `ready`, or the look at the result),
//! the app it registered is deleted with [`Context::run_cleanup`], so no
//! app is left `launching` or running behind an operation that did not
//! complete. Not when the claim was lost: another attempt may own the app
//! by then. Only an app this attempt created is deleted; one that was there
//! before (launching, stopped) is never touched by the undo.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opsqueue_shared::families::pm2::{ProcessName, Start};
use opsqueue_shared::store::StateEffect;
use serde_json::{Value, json};

use super::view::{LAUNCHING, ONLINE};
use super::{KIND_PROCESS, LAUNCH_POLL, MIN_REDACTED_LEN, Pm2};
use crate::context::{Context, StopReason};
use crate::drivers::driver::{DriverError, Outcome};
use crate::runner::CommandSpec;

impl Pm2 {
    pub(super) async fn start(&self, start: &Start, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &start.name;
        let listed = self.list(ctx).await?;
        let Some(app) = listed.get(name.as_str()) else {
            return self.create(start, ctx).await;
        };
        if app.any(LAUNCHING) {
            ctx.step(format!("{name} is launching; waiting until it is online"));
            self.wait_launched(ctx, name).await?;
            return self.observe(ctx, name, Outcome::unchanged()).await;
        }
        if app.is(ONLINE) {
            ctx.step(format!("{name} is already online"));
            return self.observe(ctx, name, Outcome::unchanged()).await;
        }
        ctx.step(format!(
            "{name} is {}; starting it with its own spec",
            app.status()
        ));
        self.pm2(ctx, self.command(["restart", name.as_str()]))
            .await?;
        self.observe(ctx, name, Outcome::changed()).await
    }

    /// Creates the absent app from the spec (undone if the operation stops
    /// meanwhile: see the module header).
    async fn create(&self, start: &Start, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &start.name;
        let Some(script) = &start.script else {
            return Err(Self::not_found(name));
        };
        let script = self.resolve("script", script, false)?;
        let cwd = match &start.cwd {
            Some(cwd) => self.resolve("cwd", cwd, true)?,
            None => script
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        let created = async {
            self.pm2(ctx, self.start_command(start, &script, &cwd))
                .await?;
            ctx.record(StateEffect::Managed {
                family: "pm2".into(),
                kind: KIND_PROCESS.into(),
                name: name.to_string(),
                spec: managed_spec(start, &script, &cwd),
            });
            self.observe(ctx, name, Outcome::changed()).await
        }
        .await;
        if created.is_err() && ctx.is_cancelled() {
            self.undo_create(ctx, name).await;
        }
        created
    }

    /// `pm2 start <script> --name … -- <args>`, with the app's env.
    fn start_command(&self, start: &Start, script: &Path, cwd: &Path) -> CommandSpec {
        let mut options: Vec<OsString> = vec!["start".into(), script.into()];
        options.extend(["--name".into(), start.name.as_str().into(), "--cwd".into()]);
        options.push(cwd.into());
        if let Some(interpreter) = &start.interpreter {
            options.extend(["--interpreter".into(), interpreter.as_str().into()]);
        }
        if let Some(instances) = start.instances {
            options.extend(["-i".into(), instances.to_string().into()]);
        }
        if start.autorestart == Some(false) {
            options.push("--no-autorestart".into());
        }
        if let Some(size) = &start.max_memory_restart {
            options.extend(["--max-memory-restart".into(), size.as_str().into()]);
        }
        if let Some(format) = &start.log_date_format {
            options.extend(["--log-date-format".into(), format.as_str().into()]);
        }
        if start.wait_ready {
            options.push("--wait-ready".into());
            if let Some(ms) = start.listen_timeout_ms {
                options.extend(["--listen-timeout".into(), ms.to_string().into()]);
            }
        }
        // pm2 reads options before `--` only; the app's args come after.
        let mut spec = self.command(options);
        if start.wait_ready {
            // pm2 waits up to the listen timeout (its default: 3 s) for `ready`.
            let wait = Duration::from_millis(start.listen_timeout_ms.unwrap_or(3_000));
            spec = spec.timeout(self.command_timeout + wait);
        }
        if !start.args.is_empty() {
            spec = spec.arg("--").args(start.args.iter().map(|a| a.as_str()));
        }
        for (key, value) in &start.env {
            spec = spec.env(key.as_str(), value);
            if value.len() >= MIN_REDACTED_LEN {
                spec = spec.redact(value.clone());
            }
        }
        spec
    }

    /// Deletes the app a stopped create registered (see the module header);
    /// what happens is logged, and the operation's end stays the stop's.
    async fn undo_create(&self, ctx: &Context, name: &ProcessName) {
        if ctx.stop_reason() == Some(StopReason::Lost) {
            return;
        }
        ctx.step(format!(
            "stopped while creating {name}: deleting the app this start registered"
        ));
        let said = match ctx
            .run_cleanup(self.command(["delete", name.as_str()]))
            .await
        {
            Ok(output) if output.success() => format!("deleted {name}"),
            Ok(output) => format!(
                "could not delete {name} (it may never have been registered): {}",
                output.failure_message()
            ),
            Err(e) => format!("could not delete {name}: {e}"),
        };
        ctx.step(said);
    }

    /// Waits while the app is `launching` (a `wait_ready` app that has not
    /// signalled yet), until the operation stops.
    async fn wait_launched(&self, ctx: &Context, name: &ProcessName) -> Result<(), DriverError> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(LAUNCH_POLL) => {}
                () = ctx.cancelled() => return Err(DriverError::cancelled()),
            }
            match self.list(ctx).await?.get(name.as_str()) {
                Some(app) if app.any(LAUNCHING) => continue,
                Some(_) => return Ok(()),
                None => return Err(Self::not_found(name)),
            }
        }
    }
}

/// What opsqueue remembers of an app it created: the spec as applied, with
/// the env's names only.
fn managed_spec(start: &Start, script: &Path, cwd: &Path) -> Value {
    json!({
        "script": script,
        "cwd": cwd,
        "state_dir": start.state_dir,
        "interpreter": start.interpreter.as_ref().map(|i| i.as_str()),
        "args": start.args.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "env_names": start.env.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "instances": start.instances,
        "wait_ready": start.wait_ready,
        "autorestart": start.autorestart,
        "max_memory_restart": start.max_memory_restart.as_ref().map(|s| s.as_str()),
        "log_date_format": start.log_date_format.as_ref().map(|f| f.as_str()),
    })
}
