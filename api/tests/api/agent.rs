//! The agent protocol and the targets registry over real HTTP: what an
//! agent key may and may not do, claims that wait for work, fenced
//! finishes (a stale one is a 409 that changes nothing), and targets'
//! status, agents, facts and descriptions.

use std::time::{Duration, Instant};

use opsqueue_shared::store::{ApiKey, NewKey, Scope, api_key_insert, token_generate};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, assert_problem, id_of, spawn_app};

fn agent_key(app: &TestApp, name: &str, targets: &[&str]) -> (ApiKey, String) {
    let token = token_generate();
    let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    let new = NewKey {
        name,
        scopes: &[Scope::Agent],
        targets: &targets,
        ..Default::default()
    };
    let key = app
        .store
        .write(|tx| api_key_insert(tx, &new, &token, opsqueue_shared::time::now()))
        .unwrap();
    (key, token)
}

fn worker(id: &str, targets: &[&str]) -> Value {
    json!({
        "id": id, "host": "web-2", "pid": 4242, "process_start": 1, "boot_id": "boot-1",
        "version": "0.1.0", "drivers": ["diag"], "targets": targets, "concurrency": 4,
        "lease_secs": 30,
    })
}

async fn writes(app: &TestApp, token: &str, worker: &Value, writes: Value) -> reqwest::Response {
    app.post_as(
        "/api/v1/agent/writes",
        token,
        &json!({"worker": worker, "writes": writes}),
    )
    .await
}

/// Applies writes that must go through; returns the answers.
async fn writes_ok(app: &TestApp, token: &str, worker: &Value, batch: Value) -> Vec<Value> {
    let response = writes(app, token, worker, batch).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["answers"].as_array().unwrap().clone()
}

/// Claims (without waiting) as `worker`; returns the claimed operations.
async fn claim_now(app: &TestApp, token: &str, worker: &Value) -> Vec<Value> {
    let answers = writes_ok(
        app,
        token,
        worker,
        json!([{"write": "claim", "limit": 10, "cancels": false}]),
    )
    .await;
    assert_eq!(answers[0]["status"], 200);
    answers[0]["answer"]["operations"]
        .as_array()
        .unwrap()
        .clone()
}

fn finish(op: &Value, worker_id: &str) -> Value {
    let operation = &op["operation"];
    json!({"write": "finish", "claim_next": false, "done": {
        "fence": {"id": operation["id"], "worker_id": worker_id, "attempt": operation["attempt"]},
        "finish": {"status": "completed", "result": {"changed": false}},
        "target": operation["target"], "family": "diag", "has_resource": false,
        "duration_secs": 0.01,
    }})
}

#[tokio::test]
async fn an_agent_key_can_do_nothing_but_its_own_targets_work() {
    let app = spawn_app().await;
    let (_, agent_a) = agent_key(&app, "web-a", &["a"]);
    let (_, agent_b) = agent_key(&app, "web-b", &["b"]);
    let on_a = id_of(
        &app.enqueue_ok(json!({"type": "diag.noop", "target": "a"}))
            .await,
    );
    let on_b = id_of(
        &app.enqueue_ok(json!({"type": "diag.noop", "target": "b"}))
            .await,
    );

    // Everything outside the agent protocol is refused, whatever it names.
    let forbidden = [
        ("POST", "/api/v1/operations".to_owned()),
        ("GET", "/api/v1/operations".to_owned()),
        ("GET", format!("/api/v1/operations/{on_a}")),
        ("GET", format!("/api/v1/operations/{on_b}")),
        ("GET", format!("/api/v1/operations/{on_b}/logs")),
        ("POST", format!("/api/v1/operations/{on_b}/cancel")),
        ("POST", format!("/api/v1/operations/{on_a}/retry")),
        ("GET", "/api/v1/targets".to_owned()),
        ("PUT", "/api/v1/targets/a".to_owned()),
        ("GET", "/api/v1/workers".to_owned()),
        ("POST", "/api/v1/schedules".to_owned()),
        ("GET", "/api/v1/proxmox/nodes".to_owned()),
        ("GET", "/api/v1/openapi.json".to_owned()),
        ("GET", "/metrics".to_owned()),
    ];
    for (method, path) in &forbidden {
        let request = match *method {
            "GET" => app.client.get(app.url(path)),
            "PUT" => app.client.put(app.url(path)).json(&json!({})),
            _ => app
                .client
                .post(app.url(path))
                .json(&json!({"type": "diag.noop"})),
        };
        let response = request.bearer_auth(&agent_a).send().await.unwrap();
        let problem = assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("agent key"),
            "{method} {path}: {problem}"
        );
    }
    assert_eq!(app.count_operations(), 2, "an agent key stored something");

    // Other keys cannot speak the agent protocol.
    let response = writes(&app, &app.admin, &worker("w-admin", &["a"]), json!([])).await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;

    // An agent key acts for its own targets only.
    let response = writes(
        &app,
        &agent_a,
        &worker("wa", &["b"]),
        json!([{"write": "register"}]),
    )
    .await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .post_as(
            "/api/v1/agent/claim",
            &agent_a,
            &json!({"worker": worker("wa", &["a", "b"]), "limit": 5, "wait_secs": 0}),
        )
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .get_as(
            "/api/v1/agent/managed?target=b&family=systemd&kind=unit",
            &agent_a,
        )
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .get_as(
            "/api/v1/agent/managed?target=a&family=systemd&kind=unit",
            &agent_a,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Names are parsed at the edge.
    let response = writes(&app, &agent_a, &worker("-rf", &["a"]), json!([])).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;

    // Each worker claims only its target's operation.
    let wa = worker("wa", &["a"]);
    let wb = worker("wb", &["b"]);
    writes_ok(&app, &agent_a, &wa, json!([{"write": "register"}])).await;
    writes_ok(&app, &agent_b, &wb, json!([{"write": "register"}])).await;
    let claimed_a = claim_now(&app, &agent_a, &wa).await;
    assert_eq!(claimed_a.len(), 1);
    assert_eq!(claimed_a[0]["operation"]["id"], on_a.as_str());
    let claimed_b = claim_now(&app, &agent_b, &wb).await;
    assert_eq!(claimed_b[0]["operation"]["id"], on_b.as_str());

    // Agent a cannot finish b's operation: not as its own worker (the
    // fence names another worker), nor as b's worker (the id is b's key's).
    let response = writes(&app, &agent_a, &wa, json!([finish(&claimed_b[0], "wb")])).await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = writes(
        &app,
        &agent_a,
        &worker("wb", &["a"]),
        json!([finish(&claimed_b[0], "wb")]),
    )
    .await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.operation(&on_b).await["status"], "running");
    // A finish that misstates its operation is refused too.
    let mut lying = finish(&claimed_a[0], "wa");
    lying["done"]["family"] = json!("systemd");
    let response = writes(&app, &agent_a, &wa, json!([lying])).await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;

    // Its own finish applies once; the same finish again is a 409 in its
    // place and changes nothing.
    let answers = writes_ok(&app, &agent_a, &wa, json!([finish(&claimed_a[0], "wa")])).await;
    assert_eq!(answers[0]["status"], 200, "{answers:?}");
    assert_eq!(answers[0]["answer"]["applied"], true);
    let done = app.operation(&on_a).await;
    assert_eq!(done["status"], "completed");
    let mut again = finish(&claimed_a[0], "wa");
    again["done"]["finish"] = json!({"status": "failed", "error": {"code": "late", "message": "late", "retryable": false}});
    let answers = writes_ok(&app, &agent_a, &wa, json!([again])).await;
    assert_eq!(answers[0]["status"], 409, "{answers:?}");
    assert_eq!(answers[0]["code"], "claim_lost");
    assert_eq!(answers[0]["answer"]["applied"], false);
    let after = app.operation(&on_a).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["finished_at"], done["finished_at"]);
}

#[tokio::test]
async fn a_claimed_operation_carries_its_secrets_to_its_agent_only() {
    let app = spawn_app().await;
    let (_, agent) = agent_key(&app, "web-s", &["s"]);
    // Secret payload fields are stored apart, in the secrets column.
    let op = app
        .enqueue_ok(json!({"type": "diag.noop", "target": "s"}))
        .await;
    app.store
        .write(|tx| {
            tx.execute(
                "UPDATE operations SET secrets = '{\"password\":\"hunter2\"}' WHERE id = ?1",
                [id_of(&op)],
            )?;
            Ok(())
        })
        .unwrap();
    let ws = worker("ws", &["s"]);
    writes_ok(&app, &agent, &ws, json!([{"write": "register"}])).await;
    let claimed = claim_now(&app, &agent, &ws).await;
    assert_eq!(claimed[0]["secrets"], json!({"password": "hunter2"}));
    // Nobody else sees them.
    let read = app.operation(&id_of(&op)).await;
    assert!(!read.to_string().contains("hunter2"), "{read}");
}

#[tokio::test]
async fn a_waiting_claim_answers_when_work_is_committed_or_its_worker_stops_and_claims_only_on_arrival()
 {
    let app = spawn_app().await;
    let (_, agent) = agent_key(&app, "web-w", &["w"]);
    let ww = worker("ww", &["w"]);
    writes_ok(&app, &agent, &ww, json!([{"write": "register"}])).await;

    let claim = |app: &TestApp, agent: String, worker: Value| {
        let request = app
            .client
            .post(app.url("/api/v1/agent/claim"))
            .bearer_auth(agent)
            .json(&json!({"worker": worker, "limit": 4, "wait_secs": 50}));
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    let waiting = claim(&app, agent.clone(), ww.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the claim did not wait");
    let id = id_of(
        &app.enqueue_ok(json!({"type": "diag.noop", "target": "w"}))
            .await,
    );
    let (took, body) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        took < Duration::from_secs(40),
        "answered only when its wait ended"
    );
    // It claims nothing after waiting (its worker may be gone by then):
    // the worker claims again, in a fresh request, and gets the work.
    assert_eq!(body["answer"], "claimed");
    assert_eq!(body["operations"], json!([]), "{body}");
    assert_eq!(app.operation(&id).await["status"], "pending");
    let (_, body) = tokio::time::timeout(PATIENCE, claim(&app, agent.clone(), ww.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        body["operations"][0]["operation"]["id"],
        id.as_str(),
        "{body}"
    );

    // A cancel request of what it runs answers a waiting claim too, once.
    let waiting = claim(&app, agent.clone(), ww.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = format!("/api/v1/operations/{id}/cancel");
    let cancelled = app.post_as(&cancel, &app.write, &json!({})).await;
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    let (_, body) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["cancels"][0]["id"], id.as_str(), "{body}");

    // A worker that says it is stopping gets its waiting claim back at once.
    let request = app
        .client
        .post(app.url("/api/v1/agent/claim"))
        .bearer_auth(&agent)
        .json(&json!({"worker": ww, "limit": 4, "wait_secs": 50, "stopping": [id]}));
    let waiting =
        tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a known cancel answered the claim again"
    );
    let response = app
        .post_as(
            "/api/v1/agent/writes",
            &agent,
            &json!({"worker": ww, "writes": [], "stopping": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["operations"], json!([]));
}

#[tokio::test]
async fn the_targets_registry_shows_status_agents_facts_and_counts_and_takes_descriptions() {
    let app = spawn_app().await;
    let (_, agent) = agent_key(&app, "web-t", &["t"]);
    let pending = id_of(
        &app.enqueue_ok(json!({"type": "diag.noop", "target": "t"}))
            .await,
    );
    app.enqueue_ok(json!({"type": "diag.noop", "target": "never-seen"}))
        .await;

    let listed: Value = app.get("/api/v1/targets").await.json().await.unwrap();
    let find = |listed: &Value, name: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
    };
    assert_eq!(find(&listed, "t")["status"], "unknown");
    assert_eq!(find(&listed, "t")["pending"], 1);
    assert_eq!(find(&listed, "never-seen")["status"], "unknown");
    assert_eq!(app.operation(&pending).await["target_status"], "offline");

    let wt = worker("wt", &["t"]);
    let facts = json!({"os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0", "cpus": 2,
        "load": [0.5, 0.25, 0.1], "memory_total_bytes": 1024, "memory_used_bytes": 512,
        "disks": [{"path": "/", "free_bytes": 10, "total_bytes": 20}], "uptime_secs": 99.5});
    writes_ok(
        &app,
        &agent,
        &wt,
        json!([{"write": "register", "facts": facts}]),
    )
    .await;
    let target: Value = app.get("/api/v1/targets/t").await.json().await.unwrap();
    assert_eq!(target["status"], "online", "{target}");
    assert_eq!(target["agents"][0]["worker_id"], "wt");
    assert_eq!(target["agents"][0]["host"], "web-2");
    assert_eq!(target["agents"][0]["remote"], true);
    assert_eq!(target["agents"][0]["drivers"], json!(["diag"]));
    assert_eq!(target["facts"], facts);
    assert_eq!(app.operation(&pending).await["target_status"], "online");
    claim_now(&app, &agent, &wt).await;
    let target: Value = app.get("/api/v1/targets/t").await.json().await.unwrap();
    assert_eq!(
        (target["pending"].as_i64(), target["running"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(target["agents"][0]["running"], 1);

    // Described by a person.
    let body = json!({"description": "the second app server", "labels": {"dc": "fra-1", "tier": "app"}, "role": "app"});
    let response = app
        .client
        .put(app.url("/api/v1/targets/t"))
        .bearer_auth(&app.write)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let target: Value = app.get("/api/v1/targets/t").await.json().await.unwrap();
    assert_eq!(target["description"], "the second app server");
    assert_eq!(target["labels"], json!({"dc": "fra-1", "tier": "app"}));
    assert_eq!(target["role"], "app");
    assert_eq!(target["status"], "online", "describing changed the status");
    for bad in [
        json!({"labels": {"-x": "y"}}),
        json!({"role": "a b"}),
        json!({"description": "x".repeat(1001)}),
        json!({"colour": "red"}),
    ] {
        let response = app
            .client
            .put(app.url("/api/v1/targets/t"))
            .bearer_auth(&app.write)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{bad} was accepted");
    }
    let response = app.get("/api/v1/targets/nothing-here").await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.get("/api/v1/targets/-rf").await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_id").await;

    // The worker stops: the target is offline, and says when it changed.
    writes_ok(&app, &agent, &wt, json!([{"write": "stop"}])).await;
    let target: Value = app.get("/api/v1/targets/t").await.json().await.unwrap();
    assert_eq!(target["status"], "offline", "{target}");
    let stored: String = app
        .store
        .read(|c| {
            Ok(
                c.query_row("SELECT status FROM targets WHERE name = 't'", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(stored, "offline");
}
