//! The monitor's services, driven through `run_once(now)` with an injected
//! clock against a real SQLite file, and once through the real cron loop.

use std::sync::Arc;
use std::time::Duration;

use opsqueue_monitor::{Pruner, Reaper, Scheduler, Service};
use opsqueue_shared::config::Config;
use opsqueue_shared::operation::codes;
use opsqueue_shared::process::ProcessIdentity;
use opsqueue_shared::store::{self, ClaimRequest, Finish, NewWorker, Schedule};
use opsqueue_shared::time::{Timestamp, add_secs, now};
use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Action, Operation, OperationId, OperationRequest, Status, Store};
use serde_json::json;

struct TestMonitor {
    config: Config,
    store: Store,
    waker: Arc<Waker>,
    _dir: tempfile::TempDir,
}

fn spawn_monitor() -> TestMonitor {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("opsqueue.db");
    config.monitor.timeout_grace_secs = 5;
    let store = Store::open(&config.database).unwrap();
    let waker = Arc::new(Waker::new(&config.database.wake_dir()).unwrap());
    TestMonitor {
        config,
        store,
        waker,
        _dir: dir,
    }
}

impl TestMonitor {
    fn reaper(&self) -> Reaper {
        Reaper::new(self.store.clone(), self.waker.clone(), &self.config)
    }

    fn enqueue(&self, kind: &str, payload: serde_json::Value, at: Timestamp) -> OperationId {
        self.enqueue_with(kind, payload, at, |_| {})
    }

    fn enqueue_with(
        &self,
        kind: &str,
        payload: serde_json::Value,
        at: Timestamp,
        adjust: impl Fn(&mut OperationRequest),
    ) -> OperationId {
        let mut request = OperationRequest::new(Action::parse(kind, payload).unwrap());
        adjust(&mut request);
        let new = request.prepare(at);
        self.store
            .write(|tx| Ok(store::operation_insert(tx, &new)?.operation().id))
            .unwrap()
    }

    fn claim(&self, worker: &str, at: Timestamp, lease_secs: f64) -> Vec<Operation> {
        let targets = vec!["local".to_owned()];
        self.store
            .write(|tx| {
                store::operation_claim(
                    tx,
                    &ClaimRequest {
                        worker_id: worker,
                        targets: &targets,
                        sources: None,
                        limit: 100,
                        now: at,
                        lease_until: add_secs(at, lease_secs),
                    },
                )
            })
            .unwrap()
    }

    fn get(&self, id: OperationId) -> Operation {
        self.store
            .read(|c| store::operation_get(c, id))
            .unwrap()
            .unwrap()
    }

    /// Claims what is due at `at` and completes it then.
    fn complete_due(&self, at: Timestamp) {
        for op in self.claim("w1", at, 60.0) {
            let done = Finish::Completed {
                result: json!({"changed": false}),
            };
            self.store
                .write(|tx| store::operation_finish(tx, &op.fence().unwrap(), &done, at))
                .unwrap();
        }
    }

    fn register_worker(&self, id: &str, identity: ProcessIdentity, at: Timestamp) {
        let worker = NewWorker {
            id: id.into(),
            identity,
            version: "test".into(),
            drivers: vec!["diag".into()],
            targets: vec!["local".into()],
            sources: None,
            concurrency: 1,
            lease_secs: 30,
            agent_key_id: None,
        };
        self.store
            .write(|tx| store::worker_register(tx, &worker, None, at))
            .unwrap();
    }
}

#[test]
fn an_expired_claim_is_requeued_when_safe_and_failed_when_not() {
    let monitor = spawn_monitor();
    let t0 = now();
    let safe = monitor.enqueue("diag.noop", json!({}), t0);
    let unsafe_ = monitor.enqueue("diag.noop", json!({"rerun_safe": false}), t0);
    assert_eq!(monitor.claim("w1", t0, 10.0).len(), 2);

    let early = monitor.reaper().run_once(add_secs(t0, 5.0)).unwrap();
    assert!(early.reaped.is_empty(), "{early:?}");

    let report = monitor.reaper().run_once(add_secs(t0, 11.0)).unwrap();
    assert_eq!(report.reaped.len(), 2);
    let safe = monitor.get(safe);
    assert_eq!(safe.status, Status::Pending);
    assert_eq!(safe.attempt, 1);
    assert_eq!(safe.error.unwrap().code, codes::LEASE_EXPIRED);
    assert_eq!(safe.worker_id, None);
    let unsafe_ = monitor.get(unsafe_);
    assert_eq!(unsafe_.status, Status::Failed);
    assert_eq!(unsafe_.error.unwrap().code, codes::LEASE_EXPIRED);
}

#[test]
fn an_expired_claim_with_no_attempts_left_fails() {
    let monitor = spawn_monitor();
    let t0 = now();
    let id = monitor.enqueue_with("diag.noop", json!({}), t0, |r| r.max_attempts = Some(1));
    monitor.claim("w1", t0, 1.0);
    monitor.reaper().run_once(add_secs(t0, 2.0)).unwrap();
    let op = monitor.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(op.error.unwrap().code, codes::LEASE_EXPIRED);
    assert!(op.finished_at.is_some());
}

/// A process standing in for a worker that is about to die, and its
/// identity as a worker would register it.
fn doomed_process() -> (std::process::Child, ProcessIdentity) {
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = child.id();
    let identity = ProcessIdentity {
        pid,
        start_ticks: opsqueue_shared::process::start_ticks(pid).unwrap().unwrap(),
        ..ProcessIdentity::current().unwrap()
    };
    (child, identity)
}

#[test]
fn the_claims_of_a_worker_whose_process_died_are_reaped_at_once() {
    let monitor = spawn_monitor();
    let t0 = now();
    let (mut child, identity) = doomed_process();
    monitor.register_worker("doomed", identity, t0);
    monitor.register_worker("alive", ProcessIdentity::current().unwrap(), t0);
    let doomed_op = monitor.enqueue("diag.sleep", json!({"seconds": 30}), t0);
    monitor.claim("doomed", t0, 3600.0);
    let alive_op = monitor.enqueue("diag.sleep", json!({"seconds": 30}), t0);
    monitor.claim("alive", t0, 3600.0);

    let before = monitor.reaper().run_once(add_secs(t0, 1.0)).unwrap();
    assert!(
        before.reaped.is_empty(),
        "a live worker was reaped: {before:?}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let report = monitor.reaper().run_once(add_secs(t0, 2.0)).unwrap();
    assert_eq!(report.dead_workers, vec!["doomed".to_owned()]);
    let op = monitor.get(doomed_op);
    assert_eq!(
        op.status,
        Status::Pending,
        "the lease had an hour left, yet it was reaped"
    );
    assert_eq!(op.error.unwrap().code, codes::WORKER_LOST);
    assert_eq!(monitor.get(alive_op).status, Status::Running);
    let running: Vec<String> = monitor
        .store
        .read(store::worker_list_running)
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(running, vec!["alive".to_owned()]);
}

#[test]
fn an_action_not_safe_to_re_run_is_failed_with_a_message_naming_its_type_on_both_reap_paths() {
    let monitor = spawn_monitor();
    let t0 = now();
    // A hung worker: its lease runs out.
    let restart = monitor.enqueue("systemd.restart", json!({"unit": "web"}), t0);
    monitor.claim("hung", t0, 10.0);
    // A dead worker: reaped at once, its lease an hour from over.
    let (mut child, identity) = doomed_process();
    monitor.register_worker("doomed", identity, t0);
    let script = monitor.enqueue(
        "script.run",
        json!({"name": "manage_site.sh", "args": ["create"]}),
        t0,
    );
    monitor.claim("doomed", t0, 3600.0);
    child.kill().unwrap();
    child.wait().unwrap();

    let report = monitor.reaper().run_once(add_secs(t0, 11.0)).unwrap();
    assert_eq!(report.reaped.len(), 2, "{report:?}");
    for (id, kind, code) in [
        (restart, "systemd.restart", codes::LEASE_EXPIRED),
        (script, "script.run", codes::WORKER_LOST),
    ] {
        let op = monitor.get(id);
        assert!(!op.rerun_safe, "{kind}");
        assert_eq!(op.status, Status::Failed, "{kind}");
        let error = op.error.unwrap();
        assert_eq!(error.code, code, "{kind}");
        assert!(
            error.message.contains(&format!(
                "not re-run: {kind} is not safe to re-run after a lost worker"
            )),
            "{kind}: {}",
            error.message
        );
    }
}

#[test]
fn an_operation_past_its_timeout_and_grace_is_failed_timeout() {
    let monitor = spawn_monitor();
    let t0 = now();
    let id = monitor.enqueue_with("diag.sleep", json!({"seconds": 100}), t0, |r| {
        r.timeout_secs = Some(10)
    });
    monitor.claim("w1", t0, 3600.0);
    assert!(
        monitor
            .reaper()
            .run_once(add_secs(t0, 12.0))
            .unwrap()
            .reaped
            .is_empty()
    );
    monitor.reaper().run_once(add_secs(t0, 16.0)).unwrap();
    let op = monitor.get(id);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(op.error.unwrap().code, codes::TIMEOUT);
}

#[test]
fn a_reaped_operation_whose_cancel_was_requested_ends_cancelled() {
    let monitor = spawn_monitor();
    let t0 = now();
    let id = monitor.enqueue("diag.noop", json!({}), t0);
    monitor.claim("w1", t0, 1.0);
    monitor
        .store
        .write(|tx| store::operation_cancel(tx, id, t0))
        .unwrap();
    monitor.reaper().run_once(add_secs(t0, 2.0)).unwrap();
    assert_eq!(monitor.get(id).status, Status::Cancelled);
}

#[test]
fn reaping_is_idempotent_and_the_reaped_worker_cannot_finish() {
    let monitor = spawn_monitor();
    let t0 = now();
    let id = monitor.enqueue("diag.noop", json!({}), t0);
    let fence = monitor.claim("w1", t0, 1.0)[0].fence().unwrap();
    let first = monitor.reaper().run_once(add_secs(t0, 2.0)).unwrap();
    let second = monitor.reaper().run_once(add_secs(t0, 2.0)).unwrap();
    assert_eq!(first.reaped.len(), 1);
    assert!(second.reaped.is_empty());

    let late = Finish::Completed {
        result: json!({"changed": true}),
    };
    let applied = monitor
        .store
        .write(|tx| store::operation_finish(tx, &fence, &late, add_secs(t0, 3.0)))
        .unwrap();
    assert!(!applied, "a reaped worker overwrote the requeued operation");
    assert_eq!(monitor.get(id).status, Status::Pending);

    let notes = monitor
        .store
        .read(|c| store::operation_log_list(c, id, 0, 10))
        .unwrap();
    assert!(
        notes
            .iter()
            .any(|l| l.line.contains("reaped by the monitor")),
        "{notes:?}"
    );
}

#[test]
fn two_monitors_reaping_at_once_reap_each_operation_once() {
    let monitor = spawn_monitor();
    let t0 = now();
    for _ in 0..50 {
        monitor.enqueue_with("diag.noop", json!({}), t0, |r| r.max_attempts = Some(1));
    }
    monitor.claim("w1", t0, 1.0);
    let reapers: Vec<_> = (0..2)
        .map(|_| {
            let reaper = monitor.reaper();
            std::thread::spawn(move || reaper.run_once(add_secs(t0, 2.0)).unwrap().reaped.len())
        })
        .collect();
    let total: usize = reapers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(total, 50);
}

fn every_second(name: &str, created: Timestamp) -> Schedule {
    Schedule {
        name: name.into(),
        cron: "* * * * * *".into(),
        kind: "diag.noop".into(),
        payload: json!({}),
        target: "local".into(),
        priority: 5,
        timeout_secs: None,
        max_attempts: None,
        enabled: true,
        last_fire_at: Some(created),
        created_at: created,
        updated_at: created,
    }
}

fn cron_operations(monitor: &TestMonitor) -> Vec<Operation> {
    let filter = store::ListFilter {
        source: Some("cron".into()),
        limit: 1000,
        ..Default::default()
    };
    monitor
        .store
        .read(|c| store::operation_list(c, &filter))
        .unwrap()
}

#[test]
fn one_schedule_fire_with_two_monitors_enqueues_exactly_one_operation() {
    let monitor = spawn_monitor();
    let t0 = opsqueue_shared::time::from_db("2026-01-01T00:00:00.500000Z").unwrap();
    monitor
        .store
        .write(|tx| store::schedule_insert(tx, &every_second("tick", t0)))
        .unwrap();

    let at = add_secs(t0, 1.0);
    let schedulers: Vec<_> = (0..2)
        .map(|_| {
            // Each monitor has its own pool, as two processes would.
            let store = Store::open(&monitor.config.database).unwrap();
            let scheduler = Scheduler::new(store, monitor.waker.clone());
            std::thread::spawn(move || scheduler.run_once(at).unwrap().fired.len())
        })
        .collect();
    let fired: usize = schedulers.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(fired, 1);
    let ops = cron_operations(&monitor);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].source, "cron");
    assert_eq!(ops[0].kind, "diag.noop");

    let scheduler = Scheduler::new(monitor.store.clone(), monitor.waker.clone());
    assert!(scheduler.run_once(at).unwrap().fired.is_empty());
    assert_eq!(
        scheduler.run_once(add_secs(at, 1.0)).unwrap().fired.len(),
        1
    );
    assert_eq!(cron_operations(&monitor).len(), 2);
}

#[test]
fn two_monitors_a_few_milliseconds_apart_fire_a_tick_once_at_its_whole_second() {
    let monitor = spawn_monitor();
    let at = |text: &str| opsqueue_shared::time::from_db(text).unwrap();
    monitor
        .store
        .write(|tx| store::schedule_insert(tx, &every_second("tick", at("2026-01-01T00:00:00Z"))))
        .unwrap();
    let scheduler = || {
        let store = Store::open(&monitor.config.database).unwrap();
        Scheduler::new(store, monitor.waker.clone())
    };
    let first = scheduler()
        .run_once(at("2026-01-01T00:00:01.003Z"))
        .unwrap();
    let second = scheduler()
        .run_once(at("2026-01-01T00:00:01.007Z"))
        .unwrap();
    assert_eq!(first.fired.len(), 1, "{first:?}");
    assert_eq!(first.fired[0].1, at("2026-01-01T00:00:01Z"));
    assert!(second.fired.is_empty(), "the tick fired twice: {second:?}");
    assert_eq!(cron_operations(&monitor).len(), 1);
}

#[test]
fn fires_missed_while_no_monitor_ran_collapse_into_one() {
    let monitor = spawn_monitor();
    let t0 = now();
    monitor
        .store
        .write(|tx| store::schedule_insert(tx, &every_second("tick", t0)))
        .unwrap();
    let scheduler = Scheduler::new(monitor.store.clone(), monitor.waker.clone());
    assert_eq!(
        scheduler
            .run_once(add_secs(t0, 3600.0))
            .unwrap()
            .fired
            .len(),
        1
    );
    assert_eq!(cron_operations(&monitor).len(), 1);
}

#[test]
fn a_disabled_or_broken_schedule_does_not_fire() {
    let monitor = spawn_monitor();
    let t0 = now();
    let mut off = every_second("off", t0);
    off.enabled = false;
    let mut broken = every_second("broken", t0);
    broken.kind = "diag.nope".into();
    monitor
        .store
        .write(|tx| store::schedule_insert(tx, &off))
        .unwrap();
    monitor
        .store
        .write(|tx| store::schedule_insert(tx, &broken))
        .unwrap();
    let report = Scheduler::new(monitor.store.clone(), monitor.waker.clone())
        .run_once(add_secs(t0, 5.0))
        .unwrap();
    assert!(report.fired.is_empty());
    assert_eq!(report.broken.len(), 1);
    assert!(cron_operations(&monitor).is_empty());
}

#[test]
fn the_pruner_deletes_old_terminal_operations_with_their_logs_and_nothing_else() {
    let mut monitor = spawn_monitor();
    monitor.config.monitor.retention_days = 30;
    monitor.config.monitor.prune_batch = 7;
    let long_ago = add_secs(now(), -40.0 * 86400.0);
    let mut old = Vec::new();
    for _ in 0..20 {
        old.push(monitor.enqueue("diag.noop", json!({}), long_ago));
    }
    let still_pending = monitor.enqueue("diag.noop", json!({}), long_ago);
    for op in monitor.claim("w1", long_ago, 60.0) {
        if op.id == still_pending {
            continue;
        }
        let fence = op.fence().unwrap();
        let line = store::LogLine {
            at: long_ago,
            stream: store::Stream::Step,
            line: "hello".into(),
        };
        monitor
            .store
            .write(|tx| {
                store::operation_log_append(tx, &fence, std::slice::from_ref(&line), 1 << 20)
            })
            .unwrap();
        let done = Finish::Completed {
            result: json!({"changed": false}),
        };
        monitor
            .store
            .write(|tx| store::operation_finish(tx, &fence, &done, long_ago))
            .unwrap();
    }
    let recent = monitor.enqueue("diag.noop", json!({}), now());

    let report = Pruner::new(monitor.store.clone(), &monitor.config)
        .run_once(now())
        .unwrap();
    // The pending one was claimed too and is running: never pruned.
    assert_eq!(report.operations, 20);
    for id in old {
        assert!(
            monitor
                .store
                .read(|c| store::operation_get(c, id))
                .unwrap()
                .is_none()
        );
    }
    let logs: i64 = monitor
        .store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM operation_logs", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(logs, 0);
    assert_eq!(monitor.get(still_pending).status, Status::Running);
    assert_eq!(monitor.get(recent).status, Status::Pending);
}

#[test]
fn the_pruner_keeps_terminal_operations_inside_the_retention_and_checkpoints_the_wal() {
    let mut monitor = spawn_monitor();
    monitor.config.monitor.retention_days = 30;
    let t = now();
    let days_ago = |days: f64| add_secs(t, -days * 86400.0);
    let old = monitor.enqueue("diag.noop", json!({}), days_ago(31.0));
    monitor.complete_due(days_ago(31.0));
    let completed = monitor.enqueue("diag.noop", json!({}), days_ago(29.0));
    monitor.complete_due(days_ago(29.0));
    let cancelled = monitor.enqueue("diag.noop", json!({}), t);
    monitor
        .store
        .write(|tx| store::operation_cancel(tx, cancelled, t))
        .unwrap();

    let report = Pruner::new(monitor.store.clone(), &monitor.config)
        .run_once(t)
        .unwrap();
    assert_eq!(report.operations, 1, "{report:?}");
    let exists = |id| {
        monitor
            .store
            .read(|c| store::operation_get(c, id))
            .unwrap()
            .is_some()
    };
    assert!(!exists(old));
    assert_eq!(monitor.get(completed).status, Status::Completed);
    assert_eq!(monitor.get(cancelled).status, Status::Cancelled);

    assert!(report.wal_frames_checkpointed > 0, "{report:?}");
    // The database file alone, without its WAL, holds the pruned state.
    let copy = tempfile::tempdir().unwrap();
    let mut alone = monitor.config.database.clone();
    alone.path = copy.path().join("opsqueue.db");
    std::fs::copy(&monitor.config.database.path, &alone.path).unwrap();
    let mut ids: Vec<String> = Store::open(&alone)
        .unwrap()
        .read(|c| {
            let mut statement = c.prepare("SELECT id FROM operations")?;
            let ids = statement.query_map([], |r| r.get(0))?;
            Ok(ids.collect::<Result<_, _>>()?)
        })
        .unwrap();
    ids.sort();
    let mut kept = vec![completed.to_string(), cancelled.to_string()];
    kept.sort();
    assert_eq!(ids, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_monitor_reaps_on_its_cron_trigger() {
    let monitor = spawn_monitor();
    let t0 = now();
    let id = monitor.enqueue("diag.noop", json!({}), t0);
    monitor.claim("w1", add_secs(t0, -10.0), 1.0);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(opsqueue_monitor::run(
        monitor.config.clone(),
        shutdown.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while monitor.get(id).status == Status::Running {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor never reaped the expired claim"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(monitor.get(id).status, Status::Pending);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[test]
fn the_pruner_deletes_events_past_their_retention_and_expired_sessions() {
    let mut monitor = spawn_monitor();
    monitor.config.api.events_retention_secs = 3600;
    monitor.config.monitor.prune_batch = 2;
    for _ in 0..5 {
        monitor.enqueue("diag.noop", json!({}), now());
    }
    let key = monitor
        .store
        .write(|tx| {
            let key = store::NewKey {
                name: "ui",
                scopes: &[store::Scope::Read],
                ..Default::default()
            };
            store::api_key_insert(tx, &key, &store::token_generate(), now())
        })
        .unwrap();
    let (cookie, _) = monitor
        .store
        .write(|tx| store::session_insert(tx, &key, now(), add_secs(now(), 60.0)))
        .unwrap();
    let pruner = Pruner::new(monitor.store.clone(), &monitor.config);

    // Within the retention: nothing goes.
    let report = pruner.run_once(add_secs(now(), 30.0)).unwrap();
    assert_eq!((report.events, report.sessions), (0, 0), "{report:?}");

    // Two hours on: the events are older than an hour (all but the newest,
    // which keeps the ids rising), the session expired.
    let report = pruner.run_once(add_secs(now(), 7200.0)).unwrap();
    assert_eq!((report.events, report.sessions), (4, 1), "{report:?}");
    let (oldest, latest) = monitor
        .store
        .read(|c| Ok((store::event_oldest_id(c)?, store::event_latest_id(c)?)))
        .unwrap();
    assert_eq!((oldest, latest), (Some(5), 5));
    let session = monitor
        .store
        .read(|c| store::session_get(c, &store::session_id_hash(&cookie), now()))
        .unwrap();
    assert!(session.is_none());
}
