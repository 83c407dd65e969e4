//! The worker's promises, told as stories: each test gets its own database
//! in a temp directory, enqueues operations the way the API does (prepare,
//! insert, wake the workers) and drives a worker in-process, either a step
//! at a time or with the real claim loop. Waits have generous deadlines;
//! nothing asserts how long something took.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opsqueue_shared::families::diag::DiagAction;
use opsqueue_shared::store::{
    Finish, LogEntry, StateEffect, counters_list, managed_list, names, observation_list,
    operation_cancel, operation_get, operation_insert, operation_log_list, operation_reap_worker,
    worker_list_running,
};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{
    Action, Config, Operation, OperationId, OperationRequest, Status, Store, time,
};
use opsqueue_worker::drivers::driver::Checked;
use opsqueue_worker::{
    CommandSpec, Context, Driver, DriverError, Ended, Outcome, Registry, Worker,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod caddy;
mod cloudpanel;
mod conformance;
mod pm2;
mod pocketbase;
mod proxmox;
mod scripts;
mod systemd;

const PATIENCE: Duration = Duration::from_secs(60);

struct TestApp {
    dir: tempfile::TempDir,
    config: Config,
    store: Store,
    waker: Waker,
}

/// A worker running its claim loop in a task.
struct Running {
    worker: Worker,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// SIGTERM, as far as the worker can tell; waits for it to return.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the worker did not stop")
            .expect("the worker task panicked")
    }
}

impl TestApp {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.path = dir.path().join("opsqueue.db");
        config.diag.record_path = Some(dir.path().join("record"));
        config.worker.backoff_base_ms = 100;
        config.worker.poll_interval_ms = 200;
        edit(&mut config);
        let store = Store::open(&config.database).unwrap();
        let waker = Waker::new(&config.database.wake_dir()).unwrap();
        Self {
            dir,
            config,
            store,
            waker,
        }
    }

    async fn worker(&self) -> Worker {
        Worker::start(self.config.clone(), self.store.clone())
            .await
            .unwrap()
    }

    async fn worker_with(&self, drivers: Registry) -> Worker {
        Worker::with_drivers(self.config.clone(), self.store.clone(), drivers)
            .await
            .unwrap()
    }

    fn run(&self, worker: Worker) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (worker, shutdown) = (worker.clone(), shutdown.clone());
            async move { worker.run(shutdown).await }
        });
        Running {
            worker,
            shutdown,
            task,
        }
    }

    async fn start(&self) -> Running {
        let worker = self.worker().await;
        self.run(worker)
    }

    /// As the API does: insert, then wake the workers.
    fn enqueue_with(
        &self,
        kind: &str,
        payload: Value,
        edit: impl FnOnce(&mut OperationRequest),
    ) -> OperationId {
        let mut request = OperationRequest::new(Action::parse(kind, payload).unwrap());
        edit(&mut request);
        let new = request.prepare(time::now());
        let inserted = self.store.write(|tx| operation_insert(tx, &new)).unwrap();
        self.waker.wake(Role::Worker);
        inserted.operation().id
    }

    fn enqueue(&self, kind: &str, payload: Value) -> OperationId {
        self.enqueue_with(kind, payload, |_| {})
    }

    fn get(&self, id: OperationId) -> Operation {
        self.store.read(|c| operation_get(c, id)).unwrap().unwrap()
    }

    fn logs(&self, id: OperationId) -> Vec<LogEntry> {
        self.store
            .read(|c| operation_log_list(c, id, 0, 10_000))
            .unwrap()
    }

    fn cancel(&self, id: OperationId) {
        self.store
            .write(|tx| operation_cancel(tx, id, time::now()))
            .unwrap();
        self.waker.wake(Role::Worker);
    }

    fn counter(&self, name: &str, labels: &str) -> f64 {
        self.store
            .read(counters_list)
            .unwrap()
            .into_iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map_or(0.0, |(_, _, v)| v)
    }

    fn count(&self, status: Status) -> i64 {
        self.store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM operations WHERE status = ?1",
                    [status.as_str()],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
    }

    /// `(id, attempt, worker)` for each diag execution, in order.
    fn records(&self) -> Vec<(String, i64, String)> {
        let path: PathBuf = self.dir.path().join("record");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut parts = l.split(' ');
                let id = parts.next().unwrap().to_owned();
                let attempt = parts.next().unwrap().parse().unwrap();
                (id, attempt, parts.next().unwrap().to_owned())
            })
            .collect()
    }

    async fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_status(&self, id: OperationId, status: Status) -> Operation {
        self.wait_until(&format!("{id} is {status}"), || {
            self.get(id).status == status
        })
        .await;
        self.get(id)
    }

    async fn wait_until_terminal(&self, id: OperationId) -> Operation {
        self.wait_until(&format!("{id} ends"), || self.get(id).status.is_terminal())
            .await;
        self.get(id)
    }

    /// The pid of the child the runner logged for this operation.
    async fn child_pid(&self, id: OperationId) -> u32 {
        let mut pid = None;
        self.wait_until("the child's pid is logged", || {
            pid = self.logs(id).iter().find_map(|e| {
                e.line
                    .split("[pid ")
                    .nth(1)?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            });
            pid.is_some()
        })
        .await;
        pid.unwrap()
    }
}

fn alive(pid: u32) -> bool {
    opsqueue_shared::process::start_ticks(pid)
        .unwrap()
        .is_some()
}

fn error_code(op: &Operation) -> &str {
    &op.error.as_ref().expect("an error").code
}

/// Enqueues one operation and runs it to its end with one step of `worker`.
async fn run_on(app: &TestApp, worker: &Worker, kind: &str, payload: Value) -> OperationId {
    let id = app.enqueue(kind, payload);
    worker.step().await.unwrap();
    let op = app.get(id);
    assert!(
        op.status.is_terminal(),
        "{kind} did not end in one step: {op:?}"
    );
    id
}

/// Enqueues one operation and runs it to its end with one step of a worker
/// started for it.
async fn run(app: &TestApp, kind: &str, payload: Value) -> Operation {
    let worker = app.worker().await;
    let id = run_on(app, &worker, kind, payload).await;
    app.get(id)
}

/// The result of an operation that must have completed.
fn completed(op: &Operation) -> &Value {
    assert_eq!(
        op.status,
        Status::Completed,
        "{} failed: {:?}",
        op.kind,
        op.error
    );
    op.result.as_ref().unwrap()
}

/// `result.changed` of an operation that must have completed.
fn changed(app: &TestApp, id: OperationId) -> bool {
    let op = app.get(id);
    assert_eq!(
        op.status,
        Status::Completed,
        "{} {}: {op:?}\n{:?}",
        op.kind,
        op.payload,
        app.logs(id)
    );
    op.result.as_ref().unwrap()["changed"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_completes_and_its_result_says_whether_it_changed_anything() {
    let app = TestApp::new();
    let id = app.enqueue("diag.noop", json!({}));
    let worker = app.worker().await;

    let step = worker.step().await.unwrap();

    assert_eq!(step.ran.len(), 1);
    assert_eq!(step.ran[0].id, id);
    let op = app.get(id);
    assert_eq!(op.status, Status::Completed);
    assert_eq!(op.result, Some(json!({"changed": false})));
    assert_eq!(op.attempt, 1);
    assert!(op.worker_id.is_none() && op.lease_expires_at.is_none() && op.finished_at.is_some());
    assert_eq!(
        app.records(),
        vec![(id.to_string(), 1, worker.id().to_owned())]
    );
    let family = "family=\"diag\"";
    assert_eq!(app.counter(names::CLAIMED, family), 1.0);
    assert_eq!(app.counter(names::COMPLETED, family), 1.0);
    assert_eq!(
        app.counter("opsqueue_operation_duration_seconds_count", family),
        1.0
    );
    assert!(app.logs(id).is_empty(), "a noop writes no log lines");
    assert!(
        worker.step().await.unwrap().ran.is_empty(),
        "nothing left to claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_registers_with_its_drivers_and_marks_itself_stopped_on_shutdown() {
    let app = TestApp::new();
    let running = app.start().await;
    let id = running.worker.id().to_owned();
    let rows = app.store.read(worker_list_running).unwrap();
    let row = rows.iter().find(|w| w.id == id).expect("registered");
    assert_eq!(row.drivers, vec!["diag"]);
    assert_eq!(row.pid, std::process::id());
    assert_eq!(row.targets, vec!["local"]);

    running.stop().await.unwrap();

    let rows = app.store.read(worker_list_running).unwrap();
    assert!(rows.iter().all(|w| w.id != id), "still listed as running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_concurrency_n_runs_n_operations_at_once_and_no_more() {
    let app = TestApp::with(|c| {
        c.worker.concurrency = 3;
        c.worker.shutdown_grace_secs = 0;
    });
    let ids: Vec<_> = (0..5)
        .map(|_| app.enqueue("diag.sleep", json!({"seconds": 3600})))
        .collect();
    let running = app.start().await;

    app.wait_until("three sleeps run at once", || {
        app.count(Status::Running) == 3
    })
    .await;
    assert_eq!(app.count(Status::Running), 3);
    assert_eq!(app.count(Status::Pending), 2);

    running.stop().await.unwrap();
    for id in ids {
        let op = app.get(id);
        assert_eq!(op.status, Status::Pending, "released at shutdown");
        assert_eq!(op.attempt, 0, "a released attempt does not count");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_one_resource_never_overlap_and_run_in_the_order_accepted() {
    let app = TestApp::with(|c| c.worker.concurrency = 4);
    let mut keyed = Vec::new();
    let mut others = Vec::new();
    for i in 0..20 {
        keyed.push(app.enqueue("diag.sleep", json!({"seconds": 0.01, "key": "shared"})));
        others.push(app.enqueue("diag.noop", json!({"key": format!("other-{i}")})));
        others.push(app.enqueue("diag.sleep", json!({"seconds": 0.01})));
    }
    let running = app.start().await;

    for id in keyed.iter().chain(&others) {
        assert_eq!(app.wait_status(*id, Status::Completed).await.attempt, 1);
    }
    running.stop().await.unwrap();

    let ops: Vec<Operation> = keyed.iter().map(|id| app.get(*id)).collect();
    for pair in ops.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        assert!(first.id < next.id);
        assert!(
            next.started_at.unwrap() >= first.finished_at.unwrap(),
            "{} started before {} finished",
            next.id,
            first.id
        );
    }
    let order: Vec<String> = app
        .records()
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| keyed.iter().any(|k| k.to_string() == *id))
        .collect();
    let accepted: Vec<String> = keyed.iter().map(|id| id.to_string()).collect();
    assert_eq!(order, accepted, "executed in the order accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_child_sleep_kills_the_child_and_ends_it_cancelled() {
    let app = TestApp::new();
    let id = app.enqueue("diag.sleep", json!({"seconds": 3600, "child": true}));
    let running = app.start().await;
    let pid = app.child_pid(id).await;
    assert!(alive(pid));

    app.cancel(id);

    let op = app.wait_status(id, Status::Cancelled).await;
    assert_eq!(error_code(&op), "cancelled");
    assert!(!alive(pid), "the child {pid} outlived its operation");
    assert!(
        app.logs(id)
            .iter()
            .any(|e| e.line.contains("cancel requested"))
    );
    assert_eq!(app.counter(names::CANCELLED, "family=\"diag\""), 1.0);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_past_its_timeout_fails_with_timeout_and_its_child_is_killed() {
    let app = TestApp::new();
    let id = app.enqueue_with("diag.sleep", json!({"seconds": 3600, "child": true}), |r| {
        r.timeout_secs = Some(1);
        r.max_attempts = Some(3);
    });
    let running = app.start().await;
    let pid = app.child_pid(id).await;

    let op = app.wait_status(id, Status::Failed).await;

    assert_eq!(error_code(&op), "timeout");
    assert_eq!(op.attempt, 1, "a timeout is not retried");
    assert!(!alive(pid), "the child {pid} outlived its operation");
    assert_eq!(
        app.counter(names::FAILED, "family=\"diag\",code=\"timeout\""),
        1.0
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_retried_with_growing_backoff_until_max_attempts() {
    let app = TestApp::with(|c| {
        c.worker.backoff_base_ms = 200;
        c.worker.backoff_max_ms = 60_000;
    });
    let id = app.enqueue_with(
        "diag.fail",
        json!({"message": "flaky", "retryable": true}),
        |r| r.max_attempts = Some(3),
    );
    let running = app.start().await;

    let op = app.wait_status(id, Status::Failed).await;
    running.stop().await.unwrap();

    assert_eq!(op.attempt, 3);
    assert_eq!(error_code(&op), "diag_failure");
    let attempts: Vec<i64> = app.records().into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let logs = app.logs(id);
    let retries: Vec<(&LogEntry, u64)> = logs
        .iter()
        .filter_map(|e| {
            let ms = e.line.split("retrying in ").nth(1)?.strip_suffix(" ms")?;
            Some((e, ms.parse().unwrap()))
        })
        .collect();
    assert_eq!(retries.len(), 2, "{logs:#?}");
    let (first, second) = (retries[0].1, retries[1].1);
    assert!((150..=250).contains(&first), "first backoff {first} ms");
    assert!((300..=500).contains(&second), "second backoff {second} ms");
    // Each attempt ran no earlier than the run_at its predecessor set.
    for (i, (line, delay)) in retries.iter().enumerate() {
        let next = logs
            .iter()
            .find(|e| e.attempt == i as i64 + 2)
            .expect("the next attempt logged");
        assert!(next.at >= line.at + chrono::Duration::milliseconds(*delay as i64));
    }
    assert!(logs.last().unwrap().line.ends_with("no attempts left"));
    assert_eq!(app.counter(names::RETRIED, "family=\"diag\""), 2.0);
    assert_eq!(
        app.counter(names::FAILED, "family=\"diag\",code=\"diag_failure\""),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_not_retried() {
    let app = TestApp::new();
    let id = app.enqueue_with(
        "diag.fail",
        json!({"message": "broken", "retryable": false}),
        |r| r.max_attempts = Some(5),
    );
    let worker = app.worker().await;

    worker.step().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(op.attempt, 1);
    assert_eq!(
        op.error.unwrap(),
        opsqueue_shared::OperationError::new("diag_failure", "broken", false)
    );
    assert!(worker.step().await.unwrap().ran.is_empty());
}

/// A diag driver whose actions wait for the test to open a gate (ignoring
/// cancellation), or panic on `diag.fail`.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
}

impl Driver for Gated {
    type Action = DiagAction;

    async fn execute(&self, action: &DiagAction, ctx: &Context) -> Result<Outcome, DriverError> {
        if let DiagAction::Fail(fail) = action {
            panic!("driver bug: {}", fail.message);
        }
        ctx.step("waiting at the gate");
        self.gate.acquire().await.unwrap().forget();
        Ok(Outcome::changed())
    }
}

fn gated() -> (Registry, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut registry = Registry::new();
    registry.register(Gated { gate: gate.clone() });
    (registry, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_claim_was_reaped_cannot_record_its_finish() {
    let app = TestApp::new();
    let id = app.enqueue("diag.sleep", json!({"seconds": 1, "rerun_safe": false}));
    let (drivers, gate) = gated();
    let worker = app.worker_with(drivers).await;
    let step = tokio::spawn({
        let worker = worker.clone();
        async move { worker.step().await }
    });
    app.wait_status(id, Status::Running).await;

    let reaped = app
        .store
        .write(|tx| operation_reap_worker(tx, worker.id(), time::now()))
        .unwrap();
    assert_eq!(reaped.len(), 1);
    gate.add_permits(1);
    let step = step.await.unwrap().unwrap();

    assert_eq!(step.ran[0].ended, Ended::Lost);
    let op = app.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "worker_lost");
    assert_eq!(op.result, None, "the late finish was not applied");
    assert_eq!(app.counter(names::COMPLETED, "family=\"diag\""), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_that_finds_the_claim_reaped_stops_the_operation_without_writing() {
    let app = TestApp::with(|c| c.worker.lease_secs = 3);
    let id = app.enqueue(
        "diag.sleep",
        json!({"seconds": 3600, "child": true, "rerun_safe": false}),
    );
    let running = app.start().await;
    let pid = app.child_pid(id).await;

    app.store
        .write(|tx| operation_reap_worker(tx, running.worker.id(), time::now()))
        .unwrap();
    let reaped = app.get(id);
    let lines = app.logs(id).len();

    app.wait_until("the child is killed", || !alive(pid)).await;
    running.stop().await.unwrap();
    let op = app.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "worker_lost");
    assert_eq!(
        op.updated_at, reaped.updated_at,
        "the worker wrote after losing its claim"
    );
    assert_eq!(
        app.logs(id).len(),
        lines,
        "the worker logged after losing its claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_operation_may_finish_within_the_shutdown_grace() {
    let app = TestApp::with(|c| {
        c.worker.shutdown_grace_secs = 60;
        c.worker.concurrency = 1;
    });
    let id = app.enqueue("diag.noop", json!({}));
    let later = app.enqueue("diag.noop", json!({}));
    let (drivers, gate) = gated();
    let running = app.run(app.worker_with(drivers).await);
    app.wait_status(id, Status::Running).await;

    // SIGTERM first; only then may the operation end and free its slot.
    running.shutdown.cancel();
    gate.add_permits(1);
    running.stop().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.status, Status::Completed);
    assert_eq!(op.result, Some(json!({"changed": true})));
    assert_eq!(
        app.get(later).status,
        Status::Pending,
        "claimed after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_still_running_after_the_grace_are_handed_back_or_failed() {
    let app = TestApp::with(|c| {
        c.worker.shutdown_grace_secs = 1;
        c.worker.concurrency = 2;
    });
    let safe = app.enqueue("diag.sleep", json!({"seconds": 3600, "child": true}));
    let unsafe_ = app.enqueue("diag.sleep", json!({"seconds": 3600, "rerun_safe": false}));
    let running = app.start().await;
    let pid = app.child_pid(safe).await;
    app.wait_status(unsafe_, Status::Running).await;

    running.stop().await.unwrap();

    let op = app.get(safe);
    assert_eq!(op.status, Status::Pending);
    assert_eq!(op.attempt, 0, "the interrupted attempt does not count");
    assert!(op.worker_id.is_none());
    assert!(!alive(pid), "the child {pid} outlived the worker");
    let op = app.get(unsafe_);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "worker_shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_starts_new_work_when_woken_without_waiting_for_its_poll() {
    let app = TestApp::with(|c| c.worker.poll_interval_ms = 3_600_000);
    let running = app.start().await;
    app.wait_until("the worker is idle", || running.worker.claim_rounds() >= 1)
        .await;

    let id = app.enqueue("diag.noop", json!({}));

    app.wait_status(id, Status::Completed).await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_execute_each_operation_exactly_once() {
    let app = TestApp::with(|c| c.worker.concurrency = 16);
    let ids: Vec<_> = (0..300)
        .map(|i| match i % 3 {
            0 => app.enqueue("diag.noop", json!({})),
            1 => app.enqueue("diag.noop", json!({"key": format!("k{}", i % 7)})),
            _ => app.enqueue("diag.sleep", json!({"seconds": 0.001})),
        })
        .collect();
    let a = app.start().await;
    let b = app.start().await;

    app.wait_until("everything completed", || {
        app.count(Status::Completed) == 300
    })
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, attempt, _) in app.records() {
        assert_eq!(attempt, 1);
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), ids.len());
    assert!(seen.values().all(|n| *n == 1), "some operation ran twice");
    assert_eq!(app.counter(names::COMPLETED, "family=\"diag\""), 300.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_driver_fails_its_operation_with_code_panic() {
    let app = TestApp::new();
    let id = app.enqueue("diag.fail", json!({"message": "oops", "retryable": true}));
    let (drivers, _gate) = gated();
    let worker = app.worker_with(drivers).await;

    worker.step().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(error_code(&op), "panic");
    assert!(op.error.unwrap().message.contains("driver bug: oops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_payload_that_no_longer_parses_fails_with_invalid_payload() {
    let app = TestApp::new();
    let id = app.enqueue("diag.noop", json!({}));
    app.store
        .write(|tx| Ok(tx.execute("UPDATE operations SET payload = '{\"bogus\":1}'", [])?))
        .unwrap();

    app.worker().await.step().await.unwrap();

    assert_eq!(error_code(&app.get(id)), "invalid_payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_family_has_no_driver_fails_with_no_driver() {
    let app = TestApp::new();
    let id = app.enqueue("diag.noop", json!({}));

    let step = app.worker_with(Registry::new()).await.step().await.unwrap();

    assert!(matches!(
        &step.ran[0].ended,
        Ended::Finished(Finish::Failed { .. })
    ));
    assert_eq!(error_code(&app.get(id)), "no_driver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_only_its_targets_and_sources() {
    let app = TestApp::with(|c| c.worker.sources = Some(vec!["api".into()]));
    let from_ui = app.enqueue_with("diag.noop", json!({}), |r| {
        r.source = opsqueue_shared::names::Label::parse("ui").unwrap()
    });
    let elsewhere = app.enqueue_with("diag.noop", json!({}), |r| {
        r.target = opsqueue_shared::names::Label::parse("web-2").unwrap()
    });
    let ours = app.enqueue("diag.noop", json!({}));

    let step = app.worker().await.step().await.unwrap();

    assert_eq!(step.ran.len(), 1);
    assert_eq!(app.get(ours).status, Status::Completed);
    assert_eq!(app.get(from_ui).status, Status::Pending);
    assert_eq!(app.get(elsewhere).status, Status::Pending);
}

/// A driver that talks: steps, progress and a command's output.
struct Chatty;

impl Driver for Chatty {
    type Action = DiagAction;

    async fn execute(&self, _action: &DiagAction, ctx: &Context) -> Result<Outcome, DriverError> {
        ctx.step("starting");
        assert!(ctx.progress(Some(50.0), Some("half way")).await);
        let output = ctx
            .run(
                CommandSpec::new("printf")
                    .args(["out %s\\n", "s3cret"])
                    .redact("s3cret"),
            )
            .await?
            .check()?;
        Ok(Outcome::changed().with("said", output.stdout_text().trim()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_s_steps_progress_and_command_output_reach_the_operation() {
    let app = TestApp::new();
    let id = app.enqueue("diag.noop", json!({}));
    let mut drivers = Registry::new();
    drivers.register(Chatty);

    app.worker_with(drivers).await.step().await.unwrap();

    let op = app.get(id);
    assert_eq!(op.result, Some(json!({"changed": true, "said": "out ***"})));
    let progress = op.progress.unwrap();
    assert_eq!(
        (progress.percent, progress.step.as_deref()),
        (Some(50.0), Some("half way"))
    );
    let lines: Vec<(String, String)> = app
        .logs(id)
        .into_iter()
        .map(|e| (e.stream, e.line))
        .collect();
    assert_eq!(lines[0], ("step".into(), "starting".into()));
    assert!(
        lines[1].1.starts_with("$ printf 'out %s\\n' *** [pid "),
        "{lines:?}"
    );
    assert_eq!(lines[2], ("stdout".into(), "out ***".into()));
    assert!(lines[3].1.contains("ended with exit code 0"));
    assert!(lines.iter().all(|(_, l)| !l.contains("s3cret")));
}

/// A driver that observes: records what it saw, then succeeds or fails as
/// the diag action says.
struct Observer;

impl Driver for Observer {
    type Action = DiagAction;

    async fn execute(&self, action: &DiagAction, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = ctx.id().to_string();
        ctx.record(StateEffect::Observed {
            family: "diag".into(),
            kind: "thing".into(),
            name: name.clone(),
            data: json!({"seen": true}),
        });
        ctx.record(StateEffect::Managed {
            family: "diag".into(),
            kind: "thing".into(),
            name,
            spec: json!({"wanted": 1}),
        });
        match action {
            DiagAction::Fail(fail) => {
                Err(DriverError::permanent("diag_failure", fail.message.clone()))
            }
            _ => Ok(Outcome::changed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_driver_observed_is_stored_with_its_completion_and_dropped_when_it_fails() {
    let app = TestApp::new();
    let completed = app.enqueue("diag.noop", json!({}));
    let failed = app.enqueue("diag.fail", json!({"message": "no"}));
    let mut drivers = Registry::new();
    drivers.register(Observer);

    app.worker_with(drivers).await.step().await.unwrap();

    let seen = app
        .store
        .read(|c| observation_list(c, "local", "diag", "thing", None))
        .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].name, completed.to_string());
    assert_eq!(seen[0].data, json!({"seen": true}));
    assert_eq!(seen[0].operation_id, Some(completed.to_string()));
    let managed = app
        .store
        .read(|c| managed_list(c, "local", "diag", "thing", Some(&failed.to_string())))
        .unwrap();
    assert!(
        managed.is_empty(),
        "a failed operation's effects were stored"
    );
}

/// A driver that completes with what its context holds as inputs.
struct Echo;

impl Driver for Echo {
    type Action = DiagAction;

    async fn execute(&self, _: &DiagAction, ctx: &Context) -> Result<Outcome, DriverError> {
        Ok(Outcome::changed()
            .with("step_id", ctx.id().to_string())
            .with("inputs", ctx.inputs()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_step_reads_the_results_of_the_steps_it_depends_on() {
    let app = TestApp::new();
    let body = opsqueue_shared::workflow::WorkflowBody::from_json(json!({"steps": [
        {"name": "port", "type": "diag.noop"},
        {"name": "path", "type": "diag.noop"},
        {"name": "deploy", "type": "diag.noop", "depends_on": ["port", "path"]},
    ]}))
    .unwrap();
    let new = body
        .parse(opsqueue_shared::names::Label::api())
        .unwrap()
        .prepare(time::now());
    let parent = new.parent.id;
    app.store
        .write(|tx| opsqueue_shared::store::workflow_insert(tx, &new))
        .unwrap();
    let mut drivers = Registry::new();
    drivers.register(Echo);
    let worker = app.worker_with(drivers).await;
    // The first round claims the two independent steps; the second the one
    // they released.
    assert_eq!(worker.step().await.unwrap().ran.len(), 2);
    assert_eq!(worker.step().await.unwrap().ran.len(), 1);
    let view = app
        .store
        .read(|c| opsqueue_shared::store::workflow_get(c, parent))
        .unwrap()
        .unwrap();
    assert_eq!(view.operation.status, Status::Completed);
    let result = |name: &str| {
        view.steps
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .result
            .clone()
            .unwrap()
    };
    let inputs = &result("deploy")["inputs"];
    assert_eq!(inputs["port"]["step_id"], result("port")["step_id"]);
    assert_eq!(inputs["path"]["step_id"], result("path")["step_id"]);
    assert_eq!(result("port")["inputs"], json!({}));
}
