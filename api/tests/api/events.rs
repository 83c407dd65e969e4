//! The event stream (`GET /api/v1/events`) and the followed log
//! (`…/logs?follow=true`) over real HTTP: resumption without loss, the gap
//! event, filters, the key's reach, no secret in any event, and many
//! subscribers at once.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use opsqueue_shared::store::{Finish, LogLine, Stream, api_key_revoke, event_prune};
use reqwest::StatusCode;
use russe::reqwest_0_12::ReqwestExt;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, assert_problem, id_of, spawn_app, spawn_app_with};

/// One frame of a stream: its event name, id and data.
#[derive(Debug, Clone)]
struct Frame {
    event: String,
    id: Option<String>,
    data: Value,
}

impl Frame {
    fn id(&self) -> i64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
}

struct Subscription {
    frames: BoxStream<'static, Result<russe::Event, russe::Error>>,
}

impl Subscription {
    /// The next message frame (comments and retry hints skipped), or `None`
    /// when the stream ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.frames.next())
                .await
                .expect("a frame within the test's patience")?;
            if let russe::Event::Message(message) = next.expect("a well-formed frame") {
                return Some(Frame {
                    event: message.event.map(|e| e.to_string()).unwrap_or_default(),
                    id: message.id.map(|i| i.to_string()),
                    data: serde_json::from_str(&message.data).expect("JSON data"),
                });
            }
        }
    }

    /// The next `n` frames.
    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        while frames.len() < n {
            frames.push(self.next().await.expect("the stream goes on"));
        }
        frames
    }

    /// Whether the stream ends (or stays silent) within `wait`.
    async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}

async fn subscribe_as(app: &TestApp, path: &str, token: &str, last: Option<i64>) -> Subscription {
    let mut request = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Subscription {
        frames: response.sse_stream(),
    }
}

async fn subscribe(app: &TestApp, path: &str, last: Option<i64>) -> Subscription {
    subscribe_as(app, path, &app.read, last).await
}

#[tokio::test]
async fn a_stream_resumed_after_last_event_id_loses_and_repeats_nothing() {
    let app = spawn_app().await;
    let first = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let claimed = app.claim("w1");
    app.finish(
        &claimed[0],
        Finish::Completed {
            result: json!({"changed": false}),
        },
    );
    let mut all = subscribe(&app, "/api/v1/events", Some(0)).await;
    let frames = all.take(3).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "operation.created",
            "operation.updated",
            "operation.finished"
        ]
    );
    assert!(frames.iter().all(|f| f.data["operation_id"] == first));
    assert_eq!(frames[2].data["data"]["status"], "completed");
    let ids: Vec<i64> = frames.iter().map(Frame::id).collect();
    assert_eq!(ids, [1, 2, 3]);

    // Live: what happens after the stream started arrives on it.
    let second = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let live = all.next().await.unwrap();
    assert_eq!(
        (live.event.as_str(), live.data["operation_id"].as_str()),
        ("operation.created", Some(second.as_str()))
    );
    assert_eq!(live.id(), 4);
    drop(all);

    // Resumed after the claim: the finish and the second enqueue, once each.
    let mut resumed = subscribe(&app, "/api/v1/events", Some(2)).await;
    let ids: Vec<i64> = resumed.take(2).await.iter().map(Frame::id).collect();
    assert_eq!(ids, [3, 4]);
    app.enqueue_ok(json!({"type": "diag.noop"})).await;
    assert_eq!(resumed.next().await.unwrap().id(), 5);

    // The same with the query parameter (what a page uses to start where it
    // was rendered).
    let mut by_query = subscribe(&app, "/api/v1/events?last_event_id=4", None).await;
    assert_eq!(by_query.next().await.unwrap().id(), 5);
}

#[tokio::test]
async fn a_last_event_id_older_than_what_is_kept_gets_a_gap_event_first() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.enqueue_ok(json!({"type": "diag.noop"})).await;
    }
    let pruned = app
        .store
        .write(|tx| event_prune(tx, opsqueue_shared::time::now(), 2))
        .unwrap();
    assert_eq!(pruned, 2);
    let mut stream = subscribe(&app, "/api/v1/events", Some(0)).await;
    let gap = stream.next().await.unwrap();
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.data["missed"], 2);
    assert_eq!(gap.data["resumed_after"], 2);
    assert_eq!(gap.id(), 2, "a reconnect after the gap resumes after it");
    assert_eq!(stream.next().await.unwrap().id(), 3);

    // Everything old pruned (the newest row stays): still a gap, not silence.
    app.enqueue_ok(json!({"type": "diag.noop"})).await;
    app.store
        .write(|tx| event_prune(tx, opsqueue_shared::time::now(), 100))
        .unwrap();
    let mut stream = subscribe(&app, "/api/v1/events", Some(1)).await;
    let gap = stream.next().await.unwrap();
    assert_eq!((gap.event.as_str(), gap.id()), ("gap", 3));
    assert_eq!(gap.data["missed"], 2);
    assert_eq!(stream.next().await.unwrap().id(), 4);

    // An id this server never gave (another database): said, then live.
    let mut stream = subscribe(&app, "/api/v1/events", Some(999)).await;
    let gap = stream.next().await.unwrap();
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.data["resumed_after"], 4);
    app.enqueue_ok(json!({"type": "diag.noop"})).await;
    assert_eq!(stream.next().await.unwrap().id(), 5);
}

#[tokio::test]
async fn filters_select_events_by_type_target_and_operation() {
    let app = spawn_app().await;
    let watched = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    app.enqueue_ok(json!({"type": "diag.noop", "target": "web-2"}))
        .await;
    let claimed = app.claim("w1");
    app.fail(&claimed[0]);

    let mut finished = subscribe(&app, "/api/v1/events?type=operation.finished", Some(0)).await;
    let frame = finished.next().await.unwrap();
    assert_eq!(frame.data["operation_id"], watched);
    assert_eq!(frame.data["data"]["error"], "boom");

    let mut web = subscribe(&app, "/api/v1/events?target=web-2", Some(0)).await;
    let frame = web.next().await.unwrap();
    assert_eq!(
        (frame.event.as_str(), frame.data["target"].as_str()),
        ("operation.created", Some("web-2"))
    );

    let mut one = subscribe(
        &app,
        &format!("/api/v1/events?operation={watched}&type=operation.*"),
        Some(0),
    )
    .await;
    let kinds: Vec<String> = one.take(3).await.into_iter().map(|f| f.event).collect();
    assert_eq!(
        kinds,
        [
            "operation.created",
            "operation.updated",
            "operation.finished"
        ]
    );

    for bad in [
        "type=operation.exploded",
        "target=not%20a%20target",
        "operation=42",
        "colour=red",
    ] {
        let response = app.get(&format!("/api/v1/events?{bad}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn the_stream_needs_a_key_and_ends_when_the_key_is_revoked() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let (_, token) = crate::helpers::make_key(
        &app.store,
        "short-lived",
        &[opsqueue_shared::store::Scope::Read],
        None,
    );
    let mut stream = subscribe_as(&app, "/api/v1/events", &token, None).await;
    app.enqueue_ok(json!({"type": "diag.noop"})).await;
    assert_eq!(stream.next().await.unwrap().event, "operation.created");
    app.store
        .write(|tx| api_key_revoke(tx, "short-lived", opsqueue_shared::time::now()))
        .unwrap();
    // The key is looked up again at each keep-alive (15 s).
    assert!(
        stream.ends_within(Duration::from_secs(25)).await,
        "the stream of a revoked key went on"
    );
}

#[tokio::test]
async fn no_secret_reaches_an_event_or_a_followed_log() {
    let app = spawn_app_with(|config| config.cloudpanel.enabled = true).await;
    let mut stream = subscribe(&app, "/api/v1/events", None).await;
    let op = app
        .enqueue_ok(json!({"type": "cloudpanel.db.add", "payload": {
            "domain": "shop.example.com", "database_name": "shop",
            "database_user_name": "shop", "database_user_password": "hunter2-secret"}}))
        .await;
    let claimed = app.claim("w1");
    app.fail(&claimed[0]);
    let frames = stream.take(3).await;
    for frame in &frames {
        assert!(!frame.data.to_string().contains("hunter2"), "{:?}", frame);
    }
    assert_eq!(frames[2].event, "operation.finished");
    let mut log = subscribe(
        &app,
        &format!("/api/v1/operations/{}/logs?follow=true", id_of(&op)),
        None,
    )
    .await;
    while let Some(frame) = log.next().await {
        assert!(!frame.data.to_string().contains("hunter2"), "{:?}", frame);
    }
}

#[tokio::test]
async fn a_followed_log_streams_each_line_once_and_ends_with_the_operation() {
    let app = spawn_app().await;
    let id = id_of(&app.enqueue_ok(json!({"type": "diag.noop"})).await);
    let response = app
        .get("/api/v1/operations/0190a4b2-7c1d-7000-8000-00000000dead/logs?follow=true")
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;

    let claimed = app.claim("w1");
    let fence = claimed[0].fence().unwrap();
    let append = |text: &str| {
        let line = LogLine {
            at: opsqueue_shared::time::now(),
            stream: Stream::Stdout,
            line: text.to_owned(),
        };
        app.store
            .write(|tx| {
                opsqueue_shared::store::operation_log_append(
                    tx,
                    &fence,
                    std::slice::from_ref(&line),
                    1 << 20,
                )
            })
            .unwrap();
        app.wake(opsqueue_shared::wake::Role::Api);
    };
    append("one");
    let mut log = subscribe(
        &app,
        &format!("/api/v1/operations/{id}/logs?follow=true"),
        None,
    )
    .await;
    let first = log.next().await.unwrap();
    assert_eq!((first.event.as_str(), first.id()), ("line", 1));
    assert_eq!(first.data["line"], "one");
    append("two");
    let second = log.next().await.unwrap();
    assert_eq!(
        (second.data["line"].as_str(), second.id()),
        (Some("two"), 2)
    );

    // Resumed after the first line: the second, once.
    let mut resumed = subscribe(
        &app,
        &format!("/api/v1/operations/{id}/logs?follow=true"),
        Some(1),
    )
    .await;
    assert_eq!(resumed.next().await.unwrap().data["line"], "two");

    append("three");
    app.finish(
        &claimed[0],
        Finish::Completed {
            result: json!({"changed": true}),
        },
    );
    app.wake(opsqueue_shared::wake::Role::Api);
    let rest = [log.next().await.unwrap(), log.next().await.unwrap()];
    assert_eq!(rest[0].data["line"], "three");
    assert_eq!(rest[1].event, "end");
    assert_eq!(rest[1].data["status"], "completed");
    assert!(log.next().await.is_none(), "the stream ends after `end`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_subscribers_each_get_every_event_while_64_clients_enqueue() {
    const SUBSCRIBERS: usize = 500;
    const CLIENTS: usize = 64;
    const EACH: usize = 4;
    let app = spawn_app_with(|config| config.api.http_workers = Some(2)).await;
    let mut streams = Vec::new();
    for _ in 0..SUBSCRIBERS {
        streams.push(subscribe(&app, "/api/v1/events?type=operation.created", None).await);
    }
    let enqueues: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, token) = (
                app.client.clone(),
                app.url("/api/v1/operations"),
                app.write.clone(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..EACH {
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"type": "diag.noop"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::ACCEPTED);
                    ids.push(id_of(&response.json::<Value>().await.unwrap()));
                }
                ids
            })
        })
        .collect();
    let mut expected = BTreeSet::new();
    for task in enqueues {
        expected.extend(task.await.unwrap());
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let total = expected.len();
            tokio::spawn(async move {
                let frames = stream.take(total).await;
                let mut seen: HashMap<String, i64> = HashMap::new();
                let mut last = 0;
                for frame in frames {
                    assert!(frame.id() > last, "ids rise");
                    last = frame.id();
                    let id = frame.data["operation_id"].as_str().unwrap().to_owned();
                    assert!(seen.insert(id, last).is_none(), "an event came twice");
                }
                seen.into_keys().collect::<BTreeSet<_>>()
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), expected);
    }
}
