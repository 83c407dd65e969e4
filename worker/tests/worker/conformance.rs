//! The conformance test every driver passes, the same story told against
//! each family's real program (River's `riverdrivertest` idea): what the
//! parser refuses is never stored; an action that changes the host reports
//! `changed: true`, and run again `changed: false`; a failure that can never
//! succeed is not retried, one that may is; a slow action can be cancelled
//! and timed out, and what it started dies with it.
//!
//! A family joins by implementing [`Subject`] (start its real program in a
//! temp directory, point the worker's configuration at it, and name the
//! actions for each check) and adding one `#[tokio::test]` that calls
//! [`conforms`]. Every family has a slow action (a hung endpoint makes one
//! where the program itself answers at once), so cancel and timeout are
//! checked for all of them.

use std::path::Path;

use opsqueue_shared::{Action, Config, OperationId, Status};
use serde_json::{Value, json};

use crate::TestApp;

/// `(type, payload)`.
pub type Call = (&'static str, Value);

/// A change to the configuration [`Subject::configure`] made, for one check.
pub type Tweak = Box<dyn FnOnce(&mut Config)>;

/// An action that runs for at least a minute unless stopped, with the
/// configuration that makes it so.
pub struct Slow {
    pub call: Call,
    pub tweak: Tweak,
}

impl Slow {
    /// Slow as the family is configured (a long sleep, a job that waits).
    pub fn as_configured(kind: &'static str, payload: Value) -> Self {
        Self::with(kind, payload, |_| {})
    }

    /// Slow once `tweak` changed the configuration (pointed it at an
    /// endpoint that never answers, say).
    pub fn with(
        kind: &'static str,
        payload: Value,
        tweak: impl FnOnce(&mut Config) + 'static,
    ) -> Self {
        Self {
            call: (kind, payload),
            tweak: Box::new(tweak),
        }
    }
}

/// One family's real program, and the actions that exercise its driver.
pub trait Subject: Sized {
    /// Starts the real program (if any) with its state under `dir`.
    async fn start(dir: &Path) -> Self;

    /// Points the worker's configuration at the program.
    fn configure(&self, config: &mut Config);

    /// Payloads the parser refuses: shell metacharacters, `..`, option-like
    /// names, over-long values, unknown fields, wrong types.
    fn refused(&self) -> Vec<Call>;

    /// An action that changes the host the first time and finds it already
    /// in the desired state the second time. `None` for a family with
    /// nothing to change (diag).
    fn change(&self) -> Option<Call>;

    /// An action that fails in a way another attempt cannot fix.
    fn permanent_failure(&self) -> Call;

    /// An action that fails in a way a retry may fix (a daemon that does
    /// not answer), and the configuration that provokes it; `None` when
    /// the family cannot provoke one here.
    fn retryable_failure(&self) -> Option<(Call, Tweak)>;

    /// An action that runs for at least a minute unless stopped.
    fn slow(&self) -> Slow;

    /// Stops the program and cleans up.
    async fn stop(self);
}

/// Runs every check against `S`.
pub async fn conforms<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let subject = S::start(dir.path()).await;

    for (kind, payload) in subject.refused() {
        assert!(
            Action::parse(kind, payload.clone()).is_err(),
            "{kind} {payload} was accepted by the parser"
        );
    }

    let app = TestApp::with(|config| subject.configure(config));
    let worker = app.worker().await;

    if let Some((kind, payload)) = subject.change() {
        let first = app.enqueue(kind, payload.clone());
        worker.step().await.unwrap();
        let op = app.get(first);
        assert_eq!(
            op.status,
            Status::Completed,
            "{kind} {payload}: {op:?}\n{:?}",
            app.logs(first)
        );
        assert_eq!(
            op.result.as_ref().unwrap()["changed"],
            json!(true),
            "{kind}: {op:?}"
        );

        let again = app.enqueue(kind, payload.clone());
        worker.step().await.unwrap();
        let op = app.get(again);
        assert_eq!(
            op.status,
            Status::Completed,
            "{kind} again: {op:?}\n{:?}",
            app.logs(again)
        );
        assert_eq!(
            op.result.as_ref().unwrap()["changed"],
            json!(false),
            "{kind} again: {op:?}"
        );
    }

    let (kind, payload) = subject.permanent_failure();
    let id = app.enqueue_with(kind, payload, |r| r.max_attempts = Some(3));
    worker.step().await.unwrap();
    let op = app.get(id);
    assert_eq!(
        op.status,
        Status::Failed,
        "{kind}: {op:?}\n{:?}",
        app.logs(id)
    );
    assert_eq!(op.attempt, 1, "a permanent failure was retried");
    assert!(
        !op.error.as_ref().unwrap().retryable,
        "{kind}: {:?}",
        op.error
    );

    if let Some(((kind, payload), break_it)) = subject.retryable_failure() {
        let broken = TestApp::with(|config| {
            subject.configure(config);
            break_it(config);
        });
        let worker = broken.worker().await;
        let id = broken.enqueue_with(kind, payload, |r| r.max_attempts = Some(2));
        worker.step().await.unwrap();
        let op = broken.get(id);
        assert_eq!(
            op.status,
            Status::Pending,
            "{kind} was not put back for a retry: {op:?}"
        );
        assert!(
            op.error.as_ref().unwrap().retryable,
            "{kind}: {:?}",
            op.error
        );
    }

    let Slow {
        call: (kind, payload),
        tweak,
    } = subject.slow();
    let slow = TestApp::with(|config| {
        subject.configure(config);
        tweak(config);
    });
    let running = slow.run(slow.worker().await);
    let cancelled = slow.enqueue(kind, payload.clone());
    slow.wait_status(cancelled, Status::Running).await;
    slow.cancel(cancelled);
    let op = slow.wait_until_terminal(cancelled).await;
    assert_eq!(op.status, Status::Cancelled, "{kind}: {op:?}");
    assert_stopped_by_itself(&slow, cancelled);

    let timed_out = slow.enqueue_with(kind, payload, |r| r.timeout_secs = Some(1));
    let op = slow.wait_until_terminal(timed_out).await;
    assert_eq!(op.status, Status::Failed, "{kind}: {op:?}");
    assert_eq!(op.error.unwrap().code, "timeout");
    assert_stopped_by_itself(&slow, timed_out);
    running.stop().await.unwrap();

    subject.stop().await;
}

/// The driver returned when asked to stop; the executor did not have to
/// abandon it.
fn assert_stopped_by_itself(app: &TestApp, id: OperationId) {
    let logs = app.logs(id);
    assert!(
        !logs.iter().any(|l| l.line.contains("did not stop in time")),
        "the driver ignored the stop: {logs:?}"
    );
}

/// The diag family: no program, nothing to change.
struct Diag;

impl Subject for Diag {
    async fn start(_dir: &Path) -> Self {
        Diag
    }

    fn configure(&self, _config: &mut Config) {}

    fn refused(&self) -> Vec<Call> {
        vec![
            ("diag.noop", json!({"key": "-rf"})),
            ("diag.noop", json!({"key": "a;b"})),
            ("diag.noop", json!({"key": "../x"})),
            ("diag.noop", json!({"key": "x".repeat(65)})),
            ("diag.noop", json!({"unknown": 1})),
            ("diag.sleep", json!({"seconds": "1"})),
        ]
    }

    fn change(&self) -> Option<Call> {
        None
    }

    fn permanent_failure(&self) -> Call {
        ("diag.fail", json!({"message": "never"}))
    }

    fn retryable_failure(&self) -> Option<(Call, Tweak)> {
        Some((
            ("diag.fail", json!({"message": "later", "retryable": true})),
            Box::new(|_| {}),
        ))
    }

    fn slow(&self) -> Slow {
        Slow::as_configured("diag.sleep", json!({"seconds": 120, "child": true}))
    }

    async fn stop(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diag_driver_conforms() {
    conforms::<Diag>().await;
}
