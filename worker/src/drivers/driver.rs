//! The driver layer's contract: the narrow [`Driver`] trait a family's
//! driver implements, what it returns ([`Outcome`], or a [`DriverError`]
//! that says whether a retry can help), the error codes drivers share, and
//! how the command runner's failures become driver errors (the runner
//! itself knows nothing of drivers). Optional abilities live in small extra
//! traits ([`Probe`]). [`AnyDriver`] erases a driver's types so a registry
//! can hold any family.
//!
//! Invariants a driver keeps:
//! - every program runs through [`Context::run`] (no shell; the process group
//!   dies on timeout or cancel);
//! - it watches [`Context::cancelled`] in any wait of its own and then
//!   returns promptly (any error will do: the executor knows why it stopped);
//! - an action whose target already is in the desired state completes with
//!   `changed: false`, not an error.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use opsqueue_shared::families::{FamilyAction, SelectAction};
use opsqueue_shared::{Action, OperationError};
use serde_json::{Map, Value};

use crate::context::Context;
use crate::runner::{CommandOutput, RunError};

/// Error codes drivers share; a driver adds its own
/// (`pm2_not_found`, `unit_not_allowed`, …).
pub mod codes {
    /// The program does not exist (or is not on `PATH`): permanent.
    pub const COMMAND_NOT_FOUND: &str = "command_not_found";
    /// The program could not be started for another reason.
    pub const SPAWN_FAILED: &str = "spawn_failed";
    /// A command's own timeout passed: retryable.
    pub const COMMAND_TIMEOUT: &str = "command_timeout";
    /// A command exited non-zero (see [`crate::runner::CommandOutput::check`]).
    pub const COMMAND_FAILED: &str = "command_failed";
    /// Reading or writing a command's pipes failed: retryable.
    pub const COMMAND_IO: &str = "command_io";
    /// The driver saw its operation's cancellation.
    pub const CANCELLED: &str = opsqueue_shared::operation::codes::CANCELLED;
    /// The driver was handed an action of another family (a registry bug).
    pub const WRONG_FAMILY: &str = "wrong_family";
    /// `diag.fail`.
    pub const DIAG_FAILURE: &str = "diag_failure";
}

/// What a successful action did. The stored result is `result` with
/// `changed` added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub changed: bool,
    pub result: Map<String, Value>,
}

impl Outcome {
    /// Something on the host changed.
    pub fn changed() -> Self {
        Self {
            changed: true,
            result: Map::new(),
        }
    }

    /// The target already was in the desired state (or the action only read).
    pub fn unchanged() -> Self {
        Self::default()
    }

    /// Adds a field to the result.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.result.insert(key.to_owned(), value);
        self
    }

    /// The stored result: a JSON object that always has `changed`.
    pub fn into_result(self) -> Value {
        let mut result = self.result;
        result.insert("changed".into(), Value::Bool(self.changed));
        Value::Object(result)
    }
}

/// Why an action failed, and whether running it again could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DriverError {
    pub code: Cow<'static, str>,
    pub message: String,
    pub retryable: bool,
}

impl DriverError {
    /// A transient failure (a daemon not answering, a timeout): the executor
    /// retries it with backoff while attempts remain.
    pub fn retryable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure another attempt cannot fix (unknown process, invalid unit).
    pub fn permanent(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The driver noticed its operation was asked to stop.
    pub fn cancelled() -> Self {
        Self::permanent(codes::CANCELLED, "stopped before it finished")
    }

    pub fn wrong_family(driver: &str, action: &Action) -> Self {
        Self::permanent(
            codes::WRONG_FAMILY,
            format!("the {driver} driver cannot run {}", action.kind()),
        )
    }

    pub fn into_operation_error(self) -> OperationError {
        OperationError {
            code: self.code.into_owned(),
            message: self.message,
            retryable: self.retryable,
        }
    }
}

/// One family's driver.
///
/// ```ignore
/// impl Driver for Pm2 {
///     type Action = Pm2Action;
///
///     async fn execute(&self, action: &Pm2Action, ctx: &Context) -> Result<Outcome, DriverError> {
///         let Pm2Action::Restart(name) = action else { todo!() };
///         let spec = CommandSpec::from_argv(&self.pm2).unwrap().args(["restart", name.as_str()]);
///         ctx.run(spec).await?.check()?;
///         Ok(Outcome::changed().with("name", name))
///     }
/// }
/// ```
pub trait Driver: Send + Sync + 'static {
    /// The family's typed actions (its `opsqueue_shared::families` type).
    type Action: SelectAction + Send + Sync;

    /// The `family` of `family.verb`.
    const FAMILY: &'static str = <Self::Action as FamilyAction>::FAMILY;

    /// Executes one action. Called once per attempt; the executor owns
    /// timeout, cancellation, retry and the record of the outcome.
    fn execute(
        &self,
        action: &Self::Action,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outcome, DriverError>> + Send;
}

/// An optional ability: a driver that can check at start that its program or
/// endpoint is there (`pm2 --version`, Caddy's admin API). The worker logs
/// the answer; a failed probe does not stop the worker (operations will fail
/// with the driver's own error, which says more).
pub trait Probe: Driver {
    /// A short description of what was found (a version, an address).
    fn probe(&self, ctx: &Context) -> impl Future<Output = Result<String, DriverError>> + Send;
}

/// The longest a start-up probe may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The boxed future of a type-erased driver call.
pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, DriverError>> + Send + 'a>>;
type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<String, DriverError>> + Send + 'a>>;

/// [`Driver`] with the types erased, so the registry can hold any family.
trait Erased: Send + Sync {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a>;
    fn probe<'a>(&'a self, _ctx: &'a Context) -> Option<ProbeFuture<'a>> {
        None
    }
}

struct Plain<D>(D);
struct Probed<D>(D);

fn dispatch<'a, D: Driver>(
    driver: &'a D,
    action: &'a Action,
    ctx: &'a Context,
) -> DriverFuture<'a> {
    match D::Action::select(action) {
        Some(typed) => Box::pin(driver.execute(typed, ctx)),
        None => {
            let error = DriverError::wrong_family(D::FAMILY, action);
            Box::pin(async move { Err(error) })
        }
    }
}

impl<D: Driver> Erased for Plain<D> {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a> {
        dispatch(&self.0, action, ctx)
    }
}

impl<D: Probe> Erased for Probed<D> {
    fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a> {
        dispatch(&self.0, action, ctx)
    }

    fn probe<'a>(&'a self, ctx: &'a Context) -> Option<ProbeFuture<'a>> {
        Some(Box::pin(self.0.probe(ctx)))
    }
}

/// A driver of any family, ready for a registry.
#[derive(Clone)]
pub struct AnyDriver {
    family: &'static str,
    erased: Arc<dyn Erased>,
}

impl AnyDriver {
    pub fn plain<D: Driver>(driver: D) -> Self {
        Self {
            family: D::FAMILY,
            erased: Arc::new(Plain(driver)),
        }
    }

    /// A driver that can also [`Probe`].
    pub fn probed<D: Probe>(driver: D) -> Self {
        Self {
            family: D::FAMILY,
            erased: Arc::new(Probed(driver)),
        }
    }

    pub fn family(&self) -> &'static str {
        self.family
    }

    /// The driver call for `action`.
    pub fn execute<'a>(&'a self, action: &'a Action, ctx: &'a Context) -> DriverFuture<'a> {
        self.erased.execute(action, ctx)
    }

    /// Its probe, each for at most [`PROBE_TIMEOUT`] (a hung program or
    /// endpoint must not hold up the worker's start); `None` if it cannot.
    pub async fn probe(&self, ctx: &Context) -> Option<Result<String, DriverError>> {
        let probe = self.erased.probe(ctx)?;
        Some(
            tokio::time::timeout(PROBE_TIMEOUT, probe)
                .await
                .unwrap_or_else(|_| {
                    Err(DriverError::retryable(
                        "probe_timeout",
                        format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
                    ))
                }),
        )
    }
}

/// A program's exit as a driver sees it.
pub trait Checked: Sized {
    /// `Ok(self)` on exit code 0; otherwise a permanent `command_failed`
    /// naming the status and the end of stderr. Drivers that know a failure
    /// is transient classify it themselves instead.
    fn check(self) -> Result<Self, DriverError>;
}

impl Checked for CommandOutput {
    fn check(self) -> Result<Self, DriverError> {
        if self.success() {
            return Ok(self);
        }
        Err(DriverError::permanent(
            codes::COMMAND_FAILED,
            self.failure_message(),
        ))
    }
}

impl From<RunError> for DriverError {
    fn from(e: RunError) -> Self {
        let message = e.to_string();
        match e {
            RunError::NotFound { .. } => DriverError::permanent(codes::COMMAND_NOT_FOUND, message),
            RunError::Spawn { ref source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                DriverError::permanent(codes::SPAWN_FAILED, message)
            }
            RunError::Spawn { .. } => DriverError::retryable(codes::SPAWN_FAILED, message),
            RunError::Timeout { .. } => DriverError::retryable(codes::COMMAND_TIMEOUT, message),
            RunError::Cancelled { .. } => DriverError::cancelled(),
            RunError::Io { .. } => DriverError::retryable(codes::COMMAND_IO, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_result_always_says_whether_it_changed_anything() {
        assert_eq!(
            Outcome::unchanged().into_result(),
            json!({"changed": false})
        );
        assert_eq!(
            Outcome::changed().with("pid", 42).into_result(),
            json!({"changed": true, "pid": 42})
        );
        // A driver cannot forge `changed` through the map.
        assert_eq!(
            Outcome::unchanged().with("changed", true).into_result(),
            json!({"changed": false})
        );
    }

    #[test]
    fn driver_errors_say_whether_a_retry_can_help() {
        let e = DriverError::retryable("daemon_down", "pm2 did not answer");
        assert!(e.retryable);
        assert_eq!(e.to_string(), "daemon_down: pm2 did not answer");
        let e = DriverError::permanent(String::from("unknown_process"), "no web1")
            .into_operation_error();
        assert_eq!(e, OperationError::new("unknown_process", "no web1", false));
    }

    async fn run(spec: crate::runner::CommandSpec) -> Result<CommandOutput, RunError> {
        let sink = crate::runner::MemorySink::default();
        crate::runner::run(
            &spec,
            &tokio_util::sync::CancellationToken::new(),
            &sink,
            64 * 1024,
        )
        .await
    }

    #[tokio::test]
    async fn the_runner_s_failures_become_classified_driver_errors() {
        use crate::runner::CommandSpec;
        let output = run(CommandSpec::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .await
            .unwrap();
        let err = output.check().unwrap_err();
        assert_eq!(err.code, codes::COMMAND_FAILED);
        assert!(!err.retryable && err.message.contains("oops"), "{err:?}");

        let err = run(CommandSpec::new("/nonexistent/opsqueue-no-such-program"))
            .await
            .unwrap_err();
        let err = DriverError::from(err);
        assert_eq!(err.code, codes::COMMAND_NOT_FOUND);
        assert!(!err.retryable);

        let spec = CommandSpec::new("sleep")
            .arg("60")
            .timeout(std::time::Duration::from_millis(200));
        let err = DriverError::from(run(spec).await.unwrap_err());
        assert_eq!(err.code, codes::COMMAND_TIMEOUT);
        assert!(err.retryable);
    }
}
