//! `pm2.update`: change an existing app's settings through pm2's own reload
//! path, and put the previous ones back when the app does not come up.
//!
//! pm2 changes a registered app's settings only when it restarts it with a
//! configuration: `pm2 reload <ecosystem file>` (cluster mode: no downtime;
//! in fork mode pm2's reload is a restart, so `pm2 restart` is used) takes
//! the app's new `args`, `env`, `autorestart`, `max_memory_restart` and
//! `log_date_format` from the file, and `pm2 scale` sets the number of
//! instances. The file is the app's whole configuration as pm2 holds it
//! (from `jlist`) with the change applied; it holds the environment, so it
//! is a 0600 temporary file, removed as soon as pm2 has read it, and never
//! logged.
//!
//! Invariants:
//! - **Look first.** The app must be in pm2's list (else
//!   `process_not_found`); settings equal to the app's are `changed: false`
//!   and nothing restarts.
//! - **All or the previous settings.** After the change, every instance
//!   must be online and stay up (no restart) for [`SETTLE`], within
//!   [`SETTLE_DEADLINE`]. If pm2 refuses the change, or an instance errors,
//!   stops or restarts, the previous settings are given back the same way
//!   (and the instance count scaled back), also when the operation is
//!   cancelled or times out meanwhile (the restore runs as cleanup, not
//!   stopped by the cancellation); the operation fails
//!   `pm2_update_failed`, saying whether the restore worked.
//! - **What pm2 cannot take back.** pm2 merges a configuration into an app
//!   and has no way to unset a value: a variable, a `max_memory_restart` or
//!   a `log_date_format` the app did not have before a failed change keeps
//!   the new value after the restore. The failure message names them.

use std::io::Write;
use std::time::Duration;

use opsqueue_shared::families::pm2::{ProcessName, Update};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::view::Settings;
use super::{LAUNCH_POLL, MIN_REDACTED_LEN, Pm2, codes};
use crate::context::Context;
use crate::drivers::driver::{DriverError, Outcome};
use crate::runner::CommandOutput;

/// How long every instance must stay online, without a restart, for the
/// change to count as applied (pm2's own `min_uptime` is 1 s).
pub const SETTLE: Duration = Duration::from_secs(2);
/// The longest wait for the instances to settle.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// Whether a command belongs to the change (stopped by the operation's
/// cancellation) or to the restore (run as cleanup, to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Change,
    Restore,
}

impl Pm2 {
    pub(super) async fn update(
        &self,
        update: &Update,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        let name = &update.name;
        let listed = self.list(ctx).await?;
        let app = listed
            .get(name.as_str())
            .ok_or_else(|| Self::not_found(name))?;
        let before = app.settings();
        let after = changed_settings(&before, update);
        let touched = differences(&before, &after);
        if touched.is_empty() {
            ctx.step(format!("{name} already has these settings"));
            return self
                .observe(ctx, name, Outcome::unchanged())
                .await
                .map(|o| o.with("settings", Vec::<&str>::new()));
        }
        ctx.step(format!("changing {name}'s {}", touched.join(", ")));
        let changed = async {
            self.apply(ctx, name, &before, &after, Stage::Change)
                .await?;
            self.settle(ctx, name, after.instances, Stage::Change).await
        }
        .await;
        match changed {
            Ok(()) => Ok(self
                .observe(ctx, name, Outcome::changed())
                .await?
                .with("settings", &touched)),
            Err(failure) => Err(self.restore(ctx, name, &before, &after, failure).await),
        }
    }

    /// Gives the app its previous settings back after a failed change; the
    /// error says what failed and how the restore went.
    async fn restore(
        &self,
        ctx: &Context,
        name: &ProcessName,
        before: &Settings,
        after: &Settings,
        failure: DriverError,
    ) -> DriverError {
        ctx.step(format!(
            "{name} did not take the new settings ({}); putting the previous ones back",
            failure.message
        ));
        let restored = async {
            self.apply(ctx, name, after, before, Stage::Restore).await?;
            self.settle(ctx, name, before.instances, Stage::Restore)
                .await
        }
        .await;
        let kept = residues(before, after);
        let said = match restored {
            Ok(()) if kept.is_empty() => {
                "the previous settings were put back and the app is online".to_owned()
            }
            Ok(()) => format!(
                "the previous settings were put back and the app is online, except that pm2 \
                 cannot unset what the app did not have before: {} kept the new value",
                kept.join(", ")
            ),
            Err(e) => format!("putting the previous settings back failed too: {e}"),
        };
        ctx.step(said.clone());
        if ctx.is_cancelled() {
            return DriverError::cancelled();
        }
        DriverError::permanent(codes::UPDATE_FAILED, format!("{}; {said}", failure.message))
    }

    /// Gives pm2 the settings `to` (the app has `from`): a reload or
    /// restart with an ecosystem file, then a scale.
    async fn apply(
        &self,
        ctx: &Context,
        name: &ProcessName,
        from: &Settings,
        to: &Settings,
        stage: Stage,
    ) -> Result<(), DriverError> {
        let file = ecosystem_file(name, to)?;
        let verb = if from.cluster { "reload" } else { "restart" };
        let mut spec = self.command([
            verb.as_ref(),
            file.path().as_os_str(),
            "--update-env".as_ref(),
        ]);
        for value in [from, to]
            .iter()
            .flat_map(|s| s.env.values())
            .filter_map(Value::as_str)
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
        {
            spec = spec.redact(value);
        }
        self.run_stage(ctx, spec, stage).await?;
        drop(file);
        let now = self.list_stage(ctx, stage).await?;
        let count = now
            .get(name.as_str())
            .ok_or_else(|| Self::not_found(name))?
            .statuses()
            .len();
        if count != to.instances {
            let instances = to.instances.to_string();
            self.run_stage(
                ctx,
                self.command(["scale", name.as_str(), &instances]),
                stage,
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until every instance is online and has stayed up, without a
    /// restart, for [`SETTLE`]; fails at once when one errors or stops, or
    /// after [`SETTLE_DEADLINE`].
    async fn settle(
        &self,
        ctx: &Context,
        name: &ProcessName,
        instances: usize,
        stage: Stage,
    ) -> Result<(), DriverError> {
        let failed = |message: String| DriverError::permanent(codes::UPDATE_FAILED, message);
        let deadline = Instant::now() + SETTLE_DEADLINE;
        let mut steady: Option<(Instant, Vec<u64>)> = None;
        loop {
            let listed = self.list_stage(ctx, stage).await?;
            let app = listed
                .get(name.as_str())
                .ok_or_else(|| failed(format!("{name} left pm2's list")))?;
            let statuses = app.statuses();
            if let Some(bad) = statuses
                .iter()
                .find(|s| ["errored", "stopped", "stopping"].contains(s))
            {
                return Err(failed(format!("an instance of {name} is {bad}")));
            }
            let restarts = app.restarts();
            let online = statuses.len() == instances && statuses.iter().all(|s| *s == "online");
            match &steady {
                Some((_, seen)) if online && *seen != restarts => {
                    return Err(failed(format!("{name} restarted while settling")));
                }
                Some((since, _)) if online && since.elapsed() >= SETTLE => return Ok(()),
                Some(_) if online => {}
                _ if online => steady = Some((Instant::now(), restarts)),
                _ => steady = None,
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "{name} was not online with {instances} instance(s) after {} s: {}",
                    SETTLE_DEADLINE.as_secs(),
                    statuses.join(", ")
                )));
            }
            match stage {
                Stage::Change => tokio::select! {
                    () = tokio::time::sleep(LAUNCH_POLL) => {}
                    () = ctx.cancelled() => return Err(DriverError::cancelled()),
                },
                Stage::Restore => tokio::time::sleep(LAUNCH_POLL).await,
            }
        }
    }

    /// Runs a pm2 command as part of `stage`.
    async fn run_stage(
        &self,
        ctx: &Context,
        spec: crate::runner::CommandSpec,
        stage: Stage,
    ) -> Result<CommandOutput, DriverError> {
        match stage {
            Stage::Change => self.pm2(ctx, spec).await,
            Stage::Restore => Self::classify(ctx.run_cleanup(spec).await?),
        }
    }

    async fn list_stage(
        &self,
        ctx: &Context,
        stage: Stage,
    ) -> Result<super::view::Listed, DriverError> {
        match stage {
            Stage::Change => self.list(ctx).await,
            Stage::Restore => {
                let output = self
                    .run_stage(ctx, self.command(["jlist"]).quiet(), stage)
                    .await?;
                Self::listed(&output)
            }
        }
    }
}

/// `before` with the update applied: `env` is merged (pm2 cannot remove a
/// variable), everything else replaced.
fn changed_settings(before: &Settings, update: &Update) -> Settings {
    let mut after = before.clone();
    if let Some(instances) = update.instances {
        after.instances = instances as usize;
    }
    for (key, value) in update.env.iter().flatten() {
        after.env.insert(key.as_str().to_owned(), json!(value));
    }
    if let Some(args) = &update.args {
        after.args = args.iter().map(|a| a.as_str().to_owned()).collect();
    }
    if let Some(autorestart) = update.autorestart {
        after.autorestart = autorestart;
    }
    if let Some(size) = &update.max_memory_restart {
        after.max_memory_restart = Some(size.bytes());
    }
    if let Some(format) = &update.log_date_format {
        after.log_date_format = Some(format.as_str().to_owned());
    }
    after
}

/// The names of the settings that differ.
fn differences(before: &Settings, after: &Settings) -> Vec<&'static str> {
    [
        ("instances", before.instances != after.instances),
        ("env", before.env != after.env),
        ("args", before.args != after.args),
        ("autorestart", before.autorestart != after.autorestart),
        (
            "max_memory_restart",
            before.max_memory_restart != after.max_memory_restart,
        ),
        (
            "log_date_format",
            before.log_date_format != after.log_date_format,
        ),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

/// What a restore to `before` cannot take back from `after`: values
/// `before` did not have.
fn residues(before: &Settings, after: &Settings) -> Vec<String> {
    let mut kept: Vec<String> = after
        .env
        .keys()
        .filter(|key| !before.env.contains_key(*key))
        .map(|key| format!("env {key}"))
        .collect();
    if before.max_memory_restart.is_none() && after.max_memory_restart.is_some() {
        kept.push("max_memory_restart".into());
    }
    if before.log_date_format.is_none() && after.log_date_format.is_some() {
        kept.push("log_date_format".into());
    }
    kept
}

/// The ecosystem file that gives pm2 `settings` for app `name`: a 0600
/// temporary `.json` file (pm2 tells a configuration by its name), removed
/// when dropped.
fn ecosystem_file(
    name: &ProcessName,
    settings: &Settings,
) -> Result<tempfile::NamedTempFile, DriverError> {
    let mut app = Map::new();
    app.insert("name".into(), json!(name));
    let optional = [
        ("script", &settings.script),
        ("cwd", &settings.cwd),
        ("interpreter", &settings.interpreter),
        ("namespace", &settings.namespace),
        ("log_date_format", &settings.log_date_format),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            app.insert(key.into(), json!(value));
        }
    }
    app.insert("args".into(), json!(settings.args));
    app.insert("env".into(), Value::Object(settings.env.clone()));
    app.insert("autorestart".into(), json!(settings.autorestart));
    app.insert("instances".into(), json!(settings.instances));
    if let Some(bytes) = settings.max_memory_restart {
        // pm2 reads a size as text: digits, then an optional K, M or G.
        app.insert("max_memory_restart".into(), json!(bytes.to_string()));
    }
    let unwritable = |e: std::io::Error| {
        DriverError::retryable(
            codes::PM2_FAILED,
            format!("could not write the ecosystem file for {name}: {e}"),
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix("opsqueue-pm2-")
        .suffix(".json")
        .tempfile()
        .map_err(unwritable)?;
    let text = json!({"apps": [Value::Object(app)]}).to_string();
    file.write_all(text.as_bytes()).map_err(unwritable)?;
    file.flush().map_err(unwritable)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn settings() -> Settings {
        Settings {
            script: Some("/srv/app/server.js".into()),
            cwd: Some("/srv/app".into()),
            interpreter: Some("node".into()),
            namespace: Some("default".into()),
            cluster: false,
            instances: 1,
            args: vec!["--port".into(), "8080".into()],
            env: json!({"PORT": "8080", "TOKEN": "old-secret"})
                .as_object()
                .unwrap()
                .clone(),
            autorestart: true,
            max_memory_restart: None,
            log_date_format: Some("HH:mm".into()),
        }
    }

    fn update(payload: Value) -> Update {
        match opsqueue_shared::Action::parse("pm2.update", payload).unwrap() {
            opsqueue_shared::Action::Pm2(opsqueue_shared::families::pm2::Pm2Action::Update(
                update,
            )) => update,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_merges_env_replaces_the_rest_and_names_what_differs() {
        let before = settings();
        let after = changed_settings(
            &before,
            &update(
                json!({"name": "web", "env": {"TOKEN": "new-secret", "EXTRA": "1"},
                           "args": [], "max_memory_restart": "1M", "instances": 3}),
            ),
        );
        assert_eq!(after.env["PORT"], "8080", "unnamed variables stay");
        assert_eq!(after.env["TOKEN"], "new-secret");
        assert!(after.args.is_empty());
        assert_eq!(after.max_memory_restart, Some(1 << 20));
        assert_eq!(
            differences(&before, &after),
            ["instances", "env", "args", "max_memory_restart"]
        );
        assert_eq!(
            residues(&before, &after),
            ["env EXTRA", "max_memory_restart"]
        );
        let same = changed_settings(
            &before,
            &update(json!({"name": "web", "env": {"PORT": "8080"}, "log_date_format": "HH:mm"})),
        );
        assert!(differences(&before, &same).is_empty());
    }

    #[test]
    fn the_ecosystem_file_is_private_and_holds_the_whole_configuration() {
        let mut to = settings();
        to.max_memory_restart = Some(150 << 20);
        let name = ProcessName::parse("web").unwrap();
        let file = ecosystem_file(&name, &to).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.path().to_string_lossy().ends_with(".json"));
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(file.path()).unwrap()).unwrap();
        let app = &written["apps"][0];
        assert_eq!(app["name"], "web");
        assert_eq!(app["script"], "/srv/app/server.js");
        assert_eq!(app["env"]["TOKEN"], "old-secret");
        assert_eq!(app["max_memory_restart"], "157286400");
        assert_eq!(app["instances"], 1);
        let path = file.path().to_owned();
        drop(file);
        assert!(!path.exists(), "removed when dropped");
        assert!(
            !format!("{to:?}").contains("old-secret"),
            "Debug hides values"
        );
    }
}
