//! The store's promises, against real SQLite files: the claim is atomic and
//! honours priority, due time, targets, sources and per-resource order;
//! idempotency holds per source; logs are capped; old schemas upgrade.

use std::collections::HashSet;

use opsqueue_shared::config::DatabaseConfig;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{self, ClaimRequest, Finish, Inserted, LogLine, Stream};
use opsqueue_shared::time::{Timestamp, add_secs, now};
use opsqueue_shared::{
    Action, Operation, OperationError, OperationId, OperationRequest, Status, Store,
};
use serde_json::{Value, json};

struct TestStore {
    store: Store,
    config: DatabaseConfig,
    _dir: tempfile::TempDir,
}

fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        path: dir.path().join("opsqueue.db"),
        ..Default::default()
    };
    TestStore {
        store: Store::open(&config).unwrap(),
        config,
        _dir: dir,
    }
}

fn request(kind: &str, payload: serde_json::Value) -> OperationRequest {
    OperationRequest::new(Action::parse(kind, payload).unwrap())
}

impl TestStore {
    fn insert(&self, request: &OperationRequest, at: Timestamp) -> Inserted {
        let new = request.prepare(at);
        self.store
            .write(|tx| store::operation_insert(tx, &new))
            .unwrap()
    }

    fn enqueue(&self, request: &OperationRequest) -> OperationId {
        self.insert(request, now()).operation().id
    }

    fn claim_for(
        &self,
        worker: &str,
        targets: &[&str],
        sources: Option<&[&str]>,
        limit: usize,
    ) -> Vec<Operation> {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let sources: Option<Vec<String>> =
            sources.map(|s| s.iter().map(|x| x.to_string()).collect());
        let at = now();
        self.store
            .write(|tx| {
                store::operation_claim(
                    tx,
                    &ClaimRequest {
                        worker_id: worker,
                        targets: &targets,
                        sources: sources.as_deref(),
                        limit,
                        now: at,
                        lease_until: add_secs(at, 30.0),
                    },
                )
            })
            .unwrap()
    }

    fn claim(&self, limit: usize) -> Vec<Operation> {
        self.claim_for("w1", &["local"], None, limit)
    }

    fn complete(&self, op: &Operation) -> bool {
        let done = Finish::Completed {
            result: json!({"changed": true}),
        };
        self.store
            .write(|tx| store::operation_finish(tx, &op.fence().unwrap(), &done, now()))
            .unwrap()
    }

    fn get(&self, id: OperationId) -> Operation {
        self.store
            .read(|c| store::operation_get(c, id))
            .unwrap()
            .unwrap()
    }

    fn count(&self) -> i64 {
        self.store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM operations", [], |r| r.get(0))?))
            .unwrap()
    }
}

#[test]
fn a_claim_takes_pending_rows_in_priority_then_due_time_then_id_order() {
    let t = test_store();
    let low = t.enqueue(&OperationRequest {
        priority: Some(9),
        ..request("diag.noop", json!({}))
    });
    let first = t.enqueue(&request("diag.noop", json!({})));
    let second = t.enqueue(&request("diag.noop", json!({})));
    let urgent = t.enqueue(&OperationRequest {
        priority: Some(0),
        ..request("diag.noop", json!({}))
    });
    let later = t.enqueue(&OperationRequest {
        run_at: Some(add_secs(now(), 3600.0)),
        ..request("diag.noop", json!({}))
    });
    let claimed: Vec<OperationId> = t.claim(10).iter().map(|o| o.id).collect();
    assert_eq!(claimed, vec![urgent, first, second, low]);
    assert_eq!(
        t.get(later).status,
        Status::Pending,
        "a future run_at was claimed"
    );
    let op = t.get(first);
    assert_eq!(
        (op.status, op.attempt, op.worker_id.as_deref()),
        (Status::Running, 1, Some("w1"))
    );
    assert!(op.lease_expires_at.is_some() && op.started_at.is_some());
}

#[test]
fn concurrent_claims_from_many_connections_never_take_a_row_twice() {
    let t = test_store();
    let new: Vec<_> = (0..1000)
        .map(|_| request("diag.noop", json!({})).prepare(now()))
        .collect();
    t.store
        .write(|tx| {
            for n in &new {
                store::operation_insert(tx, n)?;
            }
            Ok(())
        })
        .unwrap();
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let store = Store::open(&t.config).unwrap();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let targets = vec!["local".to_owned()];
                let worker = format!("w{w}");
                loop {
                    let at = now();
                    let batch = store
                        .write(|tx| {
                            store::operation_claim(
                                tx,
                                &ClaimRequest {
                                    worker_id: &worker,
                                    targets: &targets,
                                    sources: None,
                                    limit: 7,
                                    now: at,
                                    lease_until: add_secs(at, 30.0),
                                },
                            )
                        })
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|o| o.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.join().unwrap() {
            assert!(seen.insert(id), "{id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn operations_on_one_resource_are_claimed_one_at_a_time_in_accepted_order() {
    let t = test_store();
    let keyed: Vec<OperationId> = (0..5)
        .map(|_| t.enqueue(&request("diag.noop", json!({"key": "k"}))))
        .collect();
    let free = t.enqueue(&request("diag.noop", json!({})));
    let other = t.enqueue(&request("diag.noop", json!({"key": "other"})));

    let first: Vec<OperationId> = t.claim(10).iter().map(|o| o.id).collect();
    assert_eq!(first, vec![keyed[0], free, other]);
    assert!(
        t.claim(10).is_empty(),
        "a second operation on a busy resource was claimed"
    );

    for expected in &keyed[1..] {
        let running = t.get(first[0]);
        let previous = if running.status == Status::Running {
            running
        } else {
            t.store
                .read(|c| {
                    store::operation_list(
                        c,
                        &store::ListFilter {
                            status: Some(Status::Running),
                            resource: Some("diag:k".into()),
                            limit: 1,
                            ..Default::default()
                        },
                    )
                })
                .unwrap()
                .remove(0)
        };
        assert!(t.complete(&previous));
        let next = t.claim(10);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id, *expected);
    }
}

#[test]
fn a_retry_waiting_at_the_head_of_its_resource_holds_back_later_operations() {
    let t = test_store();
    let head = t.enqueue(&request("diag.noop", json!({"key": "k"})));
    let behind = t.enqueue(&request("diag.noop", json!({"key": "k"})));
    let claimed = t.claim(10);
    assert_eq!(claimed[0].id, head);
    let retry = Finish::Retry {
        error: opsqueue_shared::OperationError::new("x", "try again", true),
        run_at: add_secs(now(), 3600.0),
    };
    t.store
        .write(|tx| store::operation_finish(tx, &claimed[0].fence().unwrap(), &retry, now()))
        .unwrap();
    assert!(
        t.claim(10).is_empty(),
        "{behind} overtook the operation ahead of it"
    );
}

#[test]
fn a_worker_claims_only_its_targets_and_sources() {
    let t = test_store();
    let mut ui = request("diag.noop", json!({}));
    ui.source = Label::parse("ui").unwrap();
    let ui = t.enqueue(&ui);
    let mut remote = request("diag.noop", json!({}));
    remote.target = Label::parse("web-2").unwrap();
    let remote = t.enqueue(&remote);
    let api = t.enqueue(&request("diag.noop", json!({})));

    let claimed: Vec<OperationId> = t
        .claim_for("w-api", &["local"], Some(&["api"]), 10)
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(claimed, vec![api]);
    assert_eq!(
        t.get(ui).status,
        Status::Pending,
        "an api-only worker ran a ui operation"
    );
    let claimed: Vec<OperationId> = t
        .claim_for("w-2", &["web-2"], None, 10)
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(claimed, vec![remote]);
}

#[test]
fn an_idempotency_key_replays_the_same_request_and_refuses_a_different_one() {
    let t = test_store();
    let keyed = |seconds: f64| OperationRequest {
        idempotency_key: Some("deploy-42".into()),
        ..request("diag.sleep", json!({"seconds": seconds}))
    };
    let Inserted::Created(first) = t.insert(&keyed(1.0), now()) else {
        panic!("not created")
    };
    let Inserted::Replayed(again) = t.insert(&keyed(1.0), now()) else {
        panic!("not replayed")
    };
    assert_eq!(again.id, first.id);
    assert!(matches!(t.insert(&keyed(2.0), now()), Inserted::KeyReused(op) if op.id == first.id));
    let mut other_source = keyed(1.0);
    other_source.source = Label::parse("ui").unwrap();
    assert!(
        matches!(t.insert(&other_source, now()), Inserted::Created(_)),
        "keys are per source"
    );
    assert_eq!(t.count(), 2);
}

#[test]
fn fenced_writes_apply_only_for_the_current_claim() {
    let t = test_store();
    let id = t.enqueue(&request("diag.noop", json!({})));
    let op = t.claim(1).remove(0);
    let mut stale = op.fence().unwrap();
    stale.attempt += 1;
    let done = Finish::Completed { result: json!({}) };
    assert!(
        !t.store
            .write(|tx| store::operation_finish(tx, &stale, &done, now()))
            .unwrap()
    );
    stale.attempt -= 1;
    stale.worker_id = "someone-else".into();
    assert!(
        !t.store
            .write(|tx| store::operation_finish(tx, &stale, &done, now()))
            .unwrap()
    );
    let lost = t
        .store
        .write(|tx| store::operation_heartbeat(tx, &[stale.clone()], now(), now()))
        .unwrap();
    assert_eq!(lost, vec![stale]);
    assert!(t.complete(&op));
    assert!(!t.complete(&op), "a finished operation was finished again");
    assert_eq!(t.get(id).status, Status::Completed);
}

#[test]
fn a_released_operation_is_pending_again_without_counting_the_attempt() {
    let t = test_store();
    let id = t.enqueue(&request("diag.noop", json!({})));
    let op = t.claim(1).remove(0);
    assert!(
        t.store
            .write(|tx| store::operation_finish(tx, &op.fence().unwrap(), &Finish::Released, now()))
            .unwrap()
    );
    let op = t.get(id);
    assert_eq!(
        (op.status, op.attempt, op.worker_id),
        (Status::Pending, 0, None)
    );
}

#[test]
fn cancel_ends_a_pending_operation_and_asks_a_running_one_to_stop() {
    let t = test_store();
    let pending = t.enqueue(&request("diag.noop", json!({})));
    assert!(
        matches!(t.store.write(|tx| store::operation_cancel(tx, pending, now())).unwrap(),
        store::Cancel::Cancelled(op) if op.status == Status::Cancelled)
    );
    let running = t.enqueue(&request("diag.noop", json!({})));
    t.claim(1);
    assert!(
        matches!(t.store.write(|tx| store::operation_cancel(tx, running, now())).unwrap(),
        store::Cancel::Requested(op) if op.cancel_requested_at.is_some())
    );
    let requests = t
        .store
        .read(|c| store::operation_cancel_requests(c, "w1"))
        .unwrap();
    assert_eq!(requests.len(), 1);
    assert!(matches!(
        t.store
            .write(|tx| store::operation_cancel(tx, pending, now()))
            .unwrap(),
        store::Cancel::Terminal(_)
    ));
}

#[test]
fn retry_puts_a_failed_operation_back_with_an_attempt_left() {
    let t = test_store();
    let id = t.enqueue(&OperationRequest {
        max_attempts: Some(1),
        ..request("diag.noop", json!({}))
    });
    let op = t.claim(1).remove(0);
    let failed = Finish::Failed {
        error: opsqueue_shared::OperationError::new("x", "no", false),
    };
    t.store
        .write(|tx| store::operation_finish(tx, &op.fence().unwrap(), &failed, now()))
        .unwrap();
    assert!(matches!(
        t.store
            .write(|tx| store::operation_retry(tx, id, now()))
            .unwrap(),
        store::Retry::Requeued(_)
    ));
    let op = t.get(id);
    assert_eq!(
        (op.status, op.attempt, op.max_attempts),
        (Status::Pending, 1, 2)
    );
    assert!(op.finished_at.is_none());
    assert!(matches!(
        t.store
            .write(|tx| store::operation_retry(tx, id, now()))
            .unwrap(),
        store::Retry::NotRetryable(_)
    ));
}

#[test]
fn logs_are_capped_per_operation_with_one_marker_line() {
    let t = test_store();
    let id = t.enqueue(&request("diag.noop", json!({})));
    let op = t.claim(1).remove(0);
    let lines: Vec<LogLine> = (0..100)
        .map(|i| LogLine {
            at: now(),
            stream: Stream::Stdout,
            line: format!("line {i:04}"),
        })
        .collect();
    let fence = op.fence().unwrap();
    t.store
        .write(|tx| store::operation_log_append(tx, &fence, &lines, 100))
        .unwrap();
    t.store
        .write(|tx| store::operation_log_append(tx, &fence, &lines, 100))
        .unwrap();
    let stored = t
        .store
        .read(|c| store::operation_log_list(c, id, 0, 1000))
        .unwrap();
    assert_eq!(
        stored.len(),
        11,
        "ten lines of ten bytes, then the marker: {stored:?}"
    );
    assert!(stored.last().unwrap().line.contains("log cap reached"));
    let after = t
        .store
        .read(|c| store::operation_log_list(c, id, stored[4].seq, 1000))
        .unwrap();
    assert_eq!(after.len(), 6);
}

#[test]
fn a_database_at_every_older_schema_version_is_upgraded_keeping_its_rows() {
    for version in 0..store::latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = store::rusqlite::Connection::open(&path).unwrap();
        store::migrate(&mut conn, &path, version).unwrap();
        let has_operations: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'operations'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if has_operations {
            // Only the columns every version has.
            conn.execute(
                "INSERT INTO operations (id, type, payload, status, run_at, timeout_secs, created_at, updated_at)
                 VALUES (?1, 'diag.noop', '{}', 'pending', ?2, 300, ?2, ?2)",
                [OperationId::new().to_string(), opsqueue_shared::time::to_db(now())],
            )
            .unwrap();
        }
        drop(conn);
        let store = Store::open(&DatabaseConfig {
            path: path.clone(),
            ..Default::default()
        })
        .unwrap();
        let version_now: i64 = store
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(version_now, store::latest_version());
        let rows: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM operations", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, i64::from(has_operations), "from version {version}");
        if has_operations {
            let ops = store
                .read(|c| {
                    store::operation_list(
                        c,
                        &store::ListFilter {
                            limit: 10,
                            ..Default::default()
                        },
                    )
                })
                .unwrap();
            assert_eq!(ops[0].kind, "diag.noop", "the old row does not read back");
        }
    }
}

#[test]
fn the_workflows_migration_rebuilds_operations_keeping_every_row_and_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let mut conn = store::rusqlite::Connection::open(&path).unwrap();
    store::migrate(&mut conn, &path, 3).unwrap();
    let (parent, child) = (
        OperationId::new().to_string(),
        OperationId::new().to_string(),
    );
    let at = opsqueue_shared::time::to_db(now());
    for (id, parent_id) in [(&parent, None), (&child, Some(&parent))] {
        conn.execute(
            "INSERT INTO operations (id, type, payload, status, run_at, timeout_secs, created_at,
                 updated_at, parent_id, log_bytes)
             VALUES (?1, 'diag.noop', '{}', 'pending', ?2, 300, ?2, ?2, ?3, 5)",
            (id, &at, parent_id),
        )
        .unwrap();
        conn.execute(
            "INSERT INTO operation_logs (operation_id, attempt, at, stream, line)
             VALUES (?1, 1, ?2, 'step', 'hello')",
            (id, &at),
        )
        .unwrap();
    }
    drop(conn);
    let store = Store::open(&DatabaseConfig {
        path: path.clone(),
        ..Default::default()
    })
    .unwrap();
    let (operations, lines, linked, foreign_keys): (i64, i64, i64, i64) = store
        .read(|c| {
            Ok((
                c.query_row("SELECT count(*) FROM operations", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM operation_logs", [], |r| r.get(0))?,
                c.query_row(
                    "SELECT count(*) FROM operations WHERE parent_id IS NOT NULL",
                    [],
                    |r| r.get(0),
                )?,
                c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!((operations, lines, linked), (2, 2, 1));
    assert_eq!(
        foreign_keys, 1,
        "foreign keys are on again after the migration"
    );
    // The rebuilt table still cascades: deleting an operation deletes its log.
    store
        .write(|tx| {
            tx.execute("DELETE FROM operations WHERE id = ?1", [&parent])?;
            Ok(())
        })
        .unwrap();
    let left: (i64, i64) = store
        .read(|c| {
            Ok((
                c.query_row("SELECT count(*) FROM operations", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM operation_logs", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!(
        left,
        (0, 0),
        "the step went with its workflow, logs with both"
    );
}

fn events(t: &TestStore) -> Vec<store::Event> {
    t.store
        .read(|c| store::event_list_after(c, 0, 1000))
        .unwrap()
}

fn data(event: &store::Event) -> serde_json::Value {
    serde_json::from_str(&event.data).unwrap()
}

#[test]
fn every_change_to_an_operation_writes_its_event_in_the_same_transaction() {
    let t = test_store();
    let id = t.enqueue(&request("diag.sleep", json!({"seconds": 1, "key": "db"})));
    let op = t.claim(1).pop().unwrap();
    let fence = op.fence().unwrap();
    let progress = opsqueue_shared::operation::Progress {
        percent: Some(50.0),
        step: Some("half".into()),
    };
    t.store
        .write(|tx| store::operation_progress(tx, &fence, &progress, now()))
        .unwrap();
    // A heartbeat is not an event.
    t.store
        .write(|tx| store::operation_heartbeat(tx, std::slice::from_ref(&fence), now(), now()))
        .unwrap();
    let line = LogLine {
        at: now(),
        stream: Stream::Stdout,
        line: "hello".into(),
    };
    t.store
        .write(|tx| store::operation_log_append(tx, &fence, &[line.clone(), line.clone()], 1 << 20))
        .unwrap();
    t.store
        .write(|tx| store::operation_cancel(tx, id, now()))
        .unwrap();
    let failed = Finish::Failed {
        error: opsqueue_shared::OperationError::new("boom", "it broke", false),
    };
    t.store
        .write(|tx| store::operation_finish(tx, &fence, &failed, now()))
        .unwrap();
    t.store
        .write(|tx| store::operation_retry(tx, id, now()))
        .unwrap();

    let seen = events(&t);
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "operation.created",
            "operation.updated",
            "operation.updated",
            "operation.updated",
            "operation.updated",
            "operation.finished",
            "operation.updated",
        ]
    );
    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=7).collect::<Vec<_>>(), "ids rise without gaps");
    assert!(
        seen.iter()
            .all(|e| e.operation_id.as_deref() == Some(&*id.to_string())
                && e.target.as_deref() == Some("local"))
    );
    assert_eq!(data(&seen[0])["status"], "pending");
    assert_eq!(data(&seen[0])["resource"], "diag:db");
    assert_eq!(
        (
            data(&seen[1])["status"].as_str(),
            data(&seen[1])["attempt"].as_i64()
        ),
        (Some("running"), Some(1))
    );
    assert_eq!(
        data(&seen[2])["progress"],
        json!({"percent": 50.0, "step": "half"})
    );
    assert_eq!(data(&seen[3])["log_seq"], 2, "the last line's seq");
    assert_eq!(data(&seen[4])["cancel_requested"], true);
    assert_eq!(
        (
            data(&seen[5])["status"].as_str(),
            data(&seen[5])["error"].as_str()
        ),
        (Some("failed"), Some("boom"))
    );
    assert_eq!(
        (
            data(&seen[6])["status"].as_str(),
            data(&seen[6])["previous"].as_str()
        ),
        (Some("pending"), Some("failed"))
    );
}

#[test]
fn a_refused_write_leaves_no_event_and_a_secret_never_reaches_one() {
    let t = test_store();
    t.enqueue(&request(
        "cloudpanel.db.add",
        json!({"domain": "shop.example.com", "database_name": "shop",
               "database_user_name": "shop", "database_user_password": "hunter2-secret"}),
    ));
    let op = t.claim(1).pop().unwrap();
    let stale = opsqueue_shared::Fence {
        attempt: op.attempt + 1,
        ..op.fence().unwrap()
    };
    let done = Finish::Completed {
        result: json!({"changed": true}),
    };
    assert!(
        !t.store
            .write(|tx| store::operation_finish(tx, &stale, &done, now()))
            .unwrap()
    );
    assert!(t.complete(&op));
    let seen = events(&t);
    assert_eq!(seen.len(), 3, "created, claimed, finished: {seen:?}");
    for event in &seen {
        assert!(!event.to_json().contains("hunter2"), "{}", event.to_json());
    }
}

#[test]
fn a_schedule_fire_is_an_event_and_a_workflow_has_its_own() {
    let t = test_store();
    let at = now();
    let schedule = store::Schedule {
        name: "nightly".into(),
        cron: "0 0 * * *".into(),
        kind: "diag.noop".into(),
        payload: json!({}),
        target: "local".into(),
        priority: 5,
        timeout_secs: None,
        max_attempts: None,
        enabled: true,
        last_fire_at: Some(at),
        created_at: at,
        updated_at: at,
    };
    t.store
        .write(|tx| store::schedule_insert(tx, &schedule))
        .unwrap();
    assert!(events(&t).is_empty(), "creating a schedule fires nothing");
    assert!(
        t.store
            .write(|tx| store::schedule_mark_fired(tx, "nightly", add_secs(at, 60.0)))
            .unwrap()
    );
    let fired = events(&t).pop().unwrap();
    assert_eq!(fired.kind, "schedule.fired");
    assert_eq!(data(&fired)["schedule"], "nightly");

    // A workflow.run row (written here by hand: the workflows issue adds
    // its type) has workflow.* events beside its operation.* ones.
    t.store
        .write(|tx| {
            tx.execute(
                "INSERT INTO operations (id, type, payload, run_at, timeout_secs, created_at, updated_at)
                 VALUES ('01900000-0000-7000-8000-000000000001', 'workflow.run', '{}', ?1, 60, ?1, ?1)",
                [opsqueue_shared::time::to_db(at)],
            )?;
            Ok(())
        })
        .unwrap();
    let mut kinds: Vec<String> = events(&t).into_iter().skip(1).map(|e| e.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["operation.created", "workflow.created"]);
}

#[test]
fn a_target_going_online_and_offline_writes_its_events_and_a_heartbeat_does_not() {
    let t = test_store();
    let web = vec!["web-2".to_owned()];
    let seen = |at| {
        t.store
            .write(|tx| store::target_seen(tx, &web, at))
            .unwrap()
    };
    seen(now());
    seen(now()); // still online: no event
    // No worker serves web-2, so the next sweep marks it offline.
    let offline = t
        .store
        .write(|tx| store::target_mark_offline(tx, now()))
        .unwrap();
    assert_eq!(offline, web);
    seen(now());
    let changes: Vec<(String, serde_json::Value)> = events(&t)
        .iter()
        .filter(|e| e.kind == "target.status_changed")
        .map(|e| (e.target.clone().unwrap(), data(e)))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "web-2".into(),
                json!({"status": "online", "previous": "unknown"})
            ),
            (
                "web-2".into(),
                json!({"status": "offline", "previous": "online"})
            ),
            (
                "web-2".into(),
                json!({"status": "online", "previous": "offline"})
            ),
        ]
    );
}

#[test]
fn a_list_read_while_another_operation_observed_an_object_keeps_that_newer_observation() {
    use opsqueue_shared::store::{StateEffect, observation_list, state_apply};
    let t = test_store();
    let effect = |name: &str, data: serde_json::Value| StateEffect::Observed {
        family: "systemd".into(),
        kind: "unit".into(),
        name: name.into(),
        data,
    };
    let apply = |op: OperationId, effects: &[StateEffect]| {
        t.store
            .write(|tx| state_apply(tx, "local", op, effects, now()))
            .unwrap()
    };
    // An observation from before the refresh started: the refresh replaces it.
    let earlier = t.enqueue(&request("diag.noop", json!({})));
    apply(
        earlier,
        &[effect("old.service", json!({"from": "earlier"}))],
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    // The refresh starts (its attempt's started_at), and reads the list...
    t.enqueue(&request("diag.sleep", json!({"seconds": 1, "key": "list"})));
    let refresh = t.claim(1).pop().unwrap().id;
    std::thread::sleep(std::time::Duration::from_millis(5));
    // ... while an install finishes and observes its unit.
    let install = t.enqueue(&request("diag.noop", json!({})));
    apply(
        install,
        &[effect("new.service", json!({"from": "install"}))],
    );
    // The refresh's list, read before the install, lacks the new unit.
    apply(
        refresh,
        &[StateEffect::ObservedAll {
            family: "systemd".into(),
            kind: "unit".into(),
            items: vec![("sshd.service".into(), json!({"from": "refresh"}))],
        }],
    );
    let seen: Vec<(String, serde_json::Value)> = t
        .store
        .read(|c| observation_list(c, "local", "systemd", "unit", None))
        .unwrap()
        .into_iter()
        .map(|o| (o.name, o.data["from"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("new.service".into(), json!("install")),
            ("sshd.service".into(), json!("refresh")),
        ]
    );
}

fn artifacts(t: &TestStore, max_bytes: u64) -> store::Artifacts {
    let mut config = opsqueue_shared::Config::default();
    config.database = t.config.clone();
    config.artifacts.max_bytes = max_bytes;
    store::Artifacts::new(t.store.clone(), &config)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    opsqueue_shared::operation::hex(&sha2::Sha256::digest(bytes))
}

#[test]
fn an_artifact_is_written_in_verified_chunks_resumes_where_it_stands_and_completes_only_whole() {
    let t = test_store();
    let owner = t.enqueue(&request("diag.noop", json!({}))).to_string();
    let artifacts = artifacts(&t, 1 << 20);
    let data = b"0123456789";
    let new = store::NewArtifact {
        workflow_id: owner.clone(),
        name: "state".into(),
        size: data.len() as u64,
        sha256: sha256(data),
    };
    let created = artifacts.create(&new).unwrap();
    assert_eq!((created.received, created.complete), (0, false));
    let id = created.id.clone();
    // Only at the offset where it stands, and only with the chunk's own sha256.
    assert!(matches!(
        artifacts.put_chunk(&id, 5, &sha256(&data[5..]), &data[5..]),
        Err(store::ArtifactError::Offset { received: 0 })
    ));
    assert!(matches!(
        artifacts.put_chunk(&id, 0, &sha256(b"other"), &data[..4]),
        Err(store::ArtifactError::Invalid(_))
    ));
    let half = artifacts
        .put_chunk(&id, 0, &sha256(&data[..4]), &data[..4])
        .unwrap();
    assert_eq!((half.received, half.complete), (4, false));
    assert!(artifacts.open(&id, 0).is_err(), "read before complete");
    // Declared again (an upload resuming): the same artifact, where it stood.
    let resumed = artifacts.create(&new).unwrap();
    assert_eq!((resumed.id.as_str(), resumed.received), (id.as_str(), 4));
    let done = artifacts
        .put_chunk(&id, 4, &sha256(&data[4..]), &data[4..])
        .unwrap();
    assert!(done.complete);
    let (_, mut file) = artifacts.open(&id, 3).unwrap();
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut read).unwrap();
    assert_eq!(read, &data[3..]);

    // A whole that is not what was declared starts over.
    let lying = artifacts
        .create(&store::NewArtifact {
            name: "other".into(),
            sha256: sha256(b"something else"),
            ..new.clone()
        })
        .unwrap();
    assert!(matches!(
        artifacts.put_chunk(&lying.id, 0, &sha256(data), data),
        Err(store::ArtifactError::Invalid(_))
    ));
    let reset = artifacts.get(&lying.id).unwrap();
    assert_eq!((reset.received, reset.complete), (0, false));
}

#[test]
fn artifacts_past_max_bytes_are_refused_and_pruned_with_their_file_after_their_workflow_ended() {
    let t = test_store();
    let owner = t.enqueue(&request("diag.noop", json!({}))).to_string();
    let artifacts = artifacts(&t, 15);
    let data = b"0123456789";
    let new = |name: &str| store::NewArtifact {
        workflow_id: owner.clone(),
        name: name.into(),
        size: data.len() as u64,
        sha256: sha256(data),
    };
    let kept = artifacts.create(&new("one")).unwrap();
    artifacts
        .put_chunk(&kept.id, 0, &sha256(data), data)
        .unwrap();
    assert!(matches!(
        artifacts.create(&new("two")),
        Err(store::ArtifactError::TooLarge(_))
    ));
    assert_eq!(artifacts.prune(now()).unwrap(), 0, "its workflow runs");
    let ended = add_secs(now(), -2.0 * 86_400.0);
    t.store
        .write(|tx| {
            tx.execute(
                "UPDATE operations SET status = 'completed', finished_at = ?1 WHERE id = ?2",
                (opsqueue_shared::time::to_db(ended), &owner),
            )?;
            Ok(())
        })
        .unwrap();
    assert_eq!(artifacts.prune(add_secs(now(), -86_400.0)).unwrap(), 1);
    assert!(!artifacts.path(&kept.id).exists());
    assert!(artifacts.get(&kept.id).is_err());
    assert!(artifacts.create(&new("two")).is_ok(), "room again");
}

#[test]
fn a_second_migration_of_a_process_is_refused_while_the_first_is_active() {
    use opsqueue_shared::families::migration::Pm2Migration;
    let t = test_store();
    let migration = |id: OperationId| Pm2Migration {
        migration: id,
        name: opsqueue_shared::families::pm2::ProcessName::parse("web").unwrap(),
        source: Label::parse("a").unwrap(),
        target: Label::parse("b").unwrap(),
        state_dir: opsqueue_shared::names::AbsolutePath::parse("/srv/web/state").unwrap(),
        port: None,
        health_timeout_secs: 120,
    };
    let insert = |id: OperationId| {
        let new = migration(id)
            .plan()
            .parse(Label::parse("api").unwrap())
            .unwrap()
            .prepare(now());
        let process = opsqueue_shared::families::migration::ProcessId::parse("pm2:web@a").unwrap();
        let row = store::MigrationRow::new(id, &process, "b", &new, now());
        t.store
            .write(|tx| store::migration_insert(tx, &row, &new))
            .unwrap()
    };
    let first = OperationId::new();
    match insert(first) {
        store::MigrationInserted::Created(created) => {
            assert!(matches!(*created, Inserted::Created(_)))
        }
        other => panic!("the first migration was not stored: {other:?}"),
    }
    match insert(OperationId::new()) {
        store::MigrationInserted::Busy(active) => assert_eq!(active, first.to_string()),
        other => panic!("a second migration was stored: {other:?}"),
    }
    let logged = t.store.read(|c| store::system_log_list(c, 10)).unwrap();
    assert_eq!(logged.len(), 1);
    assert!(logged[0].message.contains("started"), "{logged:?}");

    // The event stream tells the migration's story: stored, its first step
    // claimed (the workflow runs with it), the workflow's end.
    let events = |kind: &str| -> Vec<(Option<String>, Option<String>, Value)> {
        t.store
            .read(|c| store::event_list_after(c, 0, 1000))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.operation_id.clone(), e.target.clone(), data(&e)))
            .collect()
    };
    let created = events("migration.created");
    assert_eq!(created.len(), 1, "one per stored migration: {created:?}");
    let (workflow, target, data) = &created[0];
    assert_eq!(
        (target.as_deref(), &data["process_id"]),
        (Some("b"), &json!("pm2:web@a"))
    );
    assert!(events("migration.updated").is_empty());
    let claimed = t.claim_for("w-a", &["a"], None, 1);
    assert_eq!(claimed[0].step.as_deref(), Some("inspect"));
    let updated = events("migration.updated");
    let step_running = json!({"migration": first.to_string(), "process_id": "pm2:web@a",
                              "step": "inspect", "step_status": "running"});
    assert!(
        updated.iter().any(|(_, _, d)| *d == step_running),
        "{updated:?}"
    );
    assert!(
        updated
            .iter()
            .any(|(op, _, d)| d["status"] == "running" && op == workflow),
        "{updated:?}"
    );
    let failed = Finish::Failed {
        error: OperationError {
            code: "process_not_found".into(),
            message: "no such app".into(),
            retryable: false,
        },
    };
    t.store
        .write(|tx| store::operation_finish(tx, &claimed[0].fence().unwrap(), &failed, now()))
        .unwrap();
    let ended = t.get(workflow.as_deref().unwrap().parse().unwrap());
    assert_eq!(ended.status, Status::Failed);
    let finished = events("migration.finished");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].2["status"], "failed");
}
