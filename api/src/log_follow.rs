//! `GET /api/v1/operations/{id}/logs?follow=true`: an operation's log as
//! Server-Sent Events until the operation ends. Each line is a `line`
//! event whose id is its `seq` (so `Last-Event-ID` resumes after it) and
//! whose data is the line as `GET …/logs` shows it; the stream ends with
//! one `end` event: `{status, error}` of the finished operation.
//!
//! Ordering: the operation is read *before* its lines. A worker writes an
//! attempt's lines before (or with) its finish, so when the read shows the
//! operation ended, the lines read after it are all of them: the stream
//! never ends one line short. It looks again whenever the event hub
//! publishes an event of this operation (new lines raise
//! `operation.updated`), and every [`crate::events::POLL`] in case.

use std::sync::Arc;

use opsqueue_shared::store::{operation_get, operation_log_list};
use opsqueue_shared::{OperationId, Store, StoreError};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Credential, Hub, POLL};
use crate::sse::{self, Sink};

/// Lines per read.
const PAGE: usize = 1_000;

/// Follows the log of `id` after line `after` into `sink`; see the module
/// header.
pub async fn follow(
    hub: Arc<Hub>,
    store: Store,
    id: OperationId,
    after: i64,
    credential: impl Credential,
    sink: Sink,
) {
    if let Err(e) = follow_inner(&hub, &store, id, after, &credential, &sink).await {
        tracing::debug!(error = ?e, "a log follow ended");
    }
}

#[derive(Debug)]
enum Ended {
    #[allow(dead_code)] // read by Debug, in the trace
    Store(StoreError),
    Closed,
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Self {
        Ended::Store(e)
    }
}

impl From<sse::Closed> for Ended {
    fn from(_: sse::Closed) -> Self {
        Ended::Closed
    }
}

async fn follow_inner(
    hub: &Hub,
    store: &Store,
    id: OperationId,
    mut after: i64,
    credential: &impl Credential,
    sink: &Sink,
) -> Result<(), Ended> {
    let mut receiver = hub.join(store).await?.receiver;
    let id_text = id.to_string();
    let mut recheck = tokio::time::interval(sse::KEEP_ALIVE);
    recheck.reset();
    loop {
        let operation = store
            .call(move |s| s.read(|c| operation_get(c, id)))
            .await?;
        let Some(operation) = operation else {
            return Ok(());
        };
        loop {
            let lines = store
                .call(move |s| s.read(|c| operation_log_list(c, id, after, PAGE)))
                .await?;
            let full = lines.len() == PAGE;
            let mut frames = Vec::new();
            for line in lines {
                after = line.seq;
                let data = serde_json::to_string(&line).expect("a log line serializes");
                frames.extend_from_slice(&sse::message("line", Some(line.seq.to_string()), data));
            }
            if !frames.is_empty() {
                sink.send(frames.into()).await?;
            }
            if !full {
                break;
            }
        }
        if operation.status.is_terminal() {
            let end = json!({"status": operation.status, "error": operation.error});
            sink.send(sse::message("end", None, end.to_string()))
                .await?;
            return Ok(());
        }
        // Until something happens to this operation (or the poll).
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                batch = receiver.recv() => match batch {
                    Ok(batch) if batch.iter().any(|p| p.event.operation_id.as_deref() == Some(&id_text)) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = &mut poll => break,
                _ = recheck.tick() => {
                    if !credential.still_valid().await {
                        return Ok(());
                    }
                }
            }
        }
    }
}
