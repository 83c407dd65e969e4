//! The `script` driver: `script.run {name, args, input}` runs an executable
//! from `[scripts] dir`, the CloudPanel pattern (`manage_site.sh create
//! <operation id>`).
//!
//! Invariants:
//! - **Only the directory's own files run.** The name is a plain file name
//!   (parsed at the edge); here the file is resolved with its symlinks and
//!   must be a regular, executable file directly inside the resolved
//!   directory, so a symlink pointing out of it is refused. The resolved
//!   path is what runs.
//! - **What the script learns:** its arguments (an argument
//!   `{operation_id}` becomes the operation's id), the environment
//!   `OPSQUEUE_OPERATION_ID`, `OPSQUEUE_ATTEMPT`, `OPSQUEUE_OPERATION_TYPE`,
//!   `OPSQUEUE_TARGET`, `OPSQUEUE_SCRIPT` and `OPSQUEUE_PAYLOAD` (the payload
//!   as JSON) over a cleared environment (`PATH`, `HOME`, `LANG`), and on
//!   stdin one JSON document `{operation_id, attempt, type, target, payload}`
//!   (then stdin is closed). It runs in the scripts directory, in its own
//!   process group: a cancel or timeout kills it and its children.
//! - **What it answers:** exit 0 is success, 75 (`EX_TEMPFAIL`) a failure
//!   worth retrying, anything else a permanent failure. A JSON object on its
//!   last non-empty stdout line becomes the result; its `changed` (default
//!   true: a script ran) says whether anything changed.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use opsqueue_shared::Config;
use opsqueue_shared::families::script::{Run, ScriptAction, ScriptName};
use serde_json::{Value, json};

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome};
use crate::link::Link;
use crate::runner::CommandSpec;

/// Error codes of this driver.
pub mod codes {
    /// No such executable in the scripts directory (or it escapes it).
    pub const SCRIPT_NOT_ALLOWED: &str = "script_not_allowed";
    /// The script exited with 75 (`EX_TEMPFAIL`): retryable.
    pub const SCRIPT_TEMPFAIL: &str = "script_tempfail";
    /// The script exited non-zero otherwise, or was killed by a signal.
    pub const SCRIPT_FAILED: &str = "script_failed";
}

/// The exit status that asks for a retry (sysexits.h `EX_TEMPFAIL`).
pub const EXIT_TEMPFAIL: i32 = 75;

pub struct Scripts {
    dir: PathBuf,
}

impl Scripts {
    pub fn new(config: &Config) -> Self {
        Self {
            dir: config.scripts.dir.clone(),
        }
    }

    /// The script's resolved path, if it is a regular executable file
    /// directly inside the resolved scripts directory.
    fn resolve(&self, name: &ScriptName) -> Result<(PathBuf, PathBuf), DriverError> {
        let refuse = |message: String| DriverError::permanent(codes::SCRIPT_NOT_ALLOWED, message);
        let dir = std::fs::canonicalize(&self.dir).map_err(|e| {
            refuse(format!(
                "the scripts directory {} ([scripts] dir): {e}",
                self.dir.display()
            ))
        })?;
        let path = std::fs::canonicalize(dir.join(name.as_str()))
            .map_err(|e| refuse(format!("no script {name} in {}: {e}", dir.display())))?;
        if path.parent() != Some(dir.as_path()) {
            return Err(refuse(format!(
                "{name} resolves to {}, outside the scripts directory {}",
                path.display(),
                dir.display()
            )));
        }
        let meta =
            std::fs::metadata(&path).map_err(|e| refuse(format!("{}: {e}", path.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(refuse(format!(
                "{} is not an executable file",
                path.display()
            )));
        }
        Ok((dir, path))
    }

    async fn run(&self, run: &Run, ctx: &Context) -> Result<Outcome, DriverError> {
        let (dir, path) = self.resolve(&run.name)?;
        let id = ctx.id().to_string();
        let args: Vec<&str> = run
            .args
            .iter()
            .map(|a| {
                if a.is_operation_id() {
                    id.as_str()
                } else {
                    a.as_str()
                }
            })
            .collect();
        let payload = serde_json::to_value(run).expect("a script payload serializes");
        let stdin = json!({
            "operation_id": id,
            "attempt": ctx.attempt(),
            "type": ctx.kind(),
            "target": ctx.target(),
            "payload": payload,
        });
        let path_var = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let mut spec = CommandSpec::new(&path)
            .args(args)
            .clear_env()
            .env("PATH", path_var)
            .env("OPSQUEUE_OPERATION_ID", &id)
            .env("OPSQUEUE_ATTEMPT", ctx.attempt().to_string())
            .env("OPSQUEUE_OPERATION_TYPE", ctx.kind())
            .env("OPSQUEUE_TARGET", ctx.target())
            .env("OPSQUEUE_SCRIPT", run.name.as_str())
            .env("OPSQUEUE_PAYLOAD", payload.to_string())
            .cwd(dir)
            .stdin(stdin.to_string());
        for key in ["HOME", "LANG"] {
            if let Some(value) = std::env::var_os(key) {
                spec = spec.env(key, value);
            }
        }
        let output = ctx.run(spec).await?;
        if !output.success() {
            let message = output.failure_message();
            return Err(if output.status.code == Some(EXIT_TEMPFAIL) {
                DriverError::retryable(codes::SCRIPT_TEMPFAIL, message)
            } else {
                DriverError::permanent(codes::SCRIPT_FAILED, message)
            });
        }
        Ok(answer(&output.stdout_text()))
    }
}

/// The result a script printed: a JSON object on its last non-empty stdout
/// line, `changed` read from it (default true).
fn answer(stdout: &str) -> Outcome {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let Some(Value::Object(fields)) = last.and_then(|l| serde_json::from_str(l.trim()).ok()) else {
        return Outcome::changed();
    };
    let changed = fields
        .get("changed")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut outcome = if changed {
        Outcome::changed()
    } else {
        Outcome::unchanged()
    };
    for (key, value) in fields {
        outcome = outcome.with(&key, value);
    }
    outcome
}

/// The family's driver, as the registry builds it when `[scripts]` is enabled.
pub fn driver(config: &Config, _link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::plain(Scripts::new(config)))
}

impl Driver for Scripts {
    type Action = ScriptAction;

    async fn execute(&self, action: &ScriptAction, ctx: &Context) -> Result<Outcome, DriverError> {
        let ScriptAction::Run(run) = action;
        self.run(run, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_result_and_says_whether_it_changed() {
        let outcome = answer("working…\n{\"changed\": false, \"site\": \"a.com\"}\n\n");
        assert_eq!(
            outcome.into_result(),
            json!({"changed": false, "site": "a.com"})
        );
        let outcome = answer("{\"site\": \"a.com\"}");
        assert_eq!(
            outcome.into_result(),
            json!({"changed": true, "site": "a.com"})
        );
        assert_eq!(answer("done\n").into_result(), json!({"changed": true}));
        assert_eq!(answer("[1, 2]").into_result(), json!({"changed": true}));
        assert_eq!(
            answer("{\"changed\": false}\nnot json").into_result(),
            json!({"changed": true})
        );
    }
}
