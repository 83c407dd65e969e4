//! `/api/v1/agent/…`: the protocol of remote workers. Only agent keys get
//! here (the middleware sees to it), and an agent key acts for its own
//! targets only:
//!
//! - every request names its worker; the worker's targets must be among
//!   the key's (else `403`), and its names are parsed like every name;
//! - `writes` applies a batch (registration, heartbeats with host facts,
//!   claims, log lines, progress, finishes with their observations) in one
//!   transaction through the agents' writer, which checks each write in
//!   that transaction (the worker id is this key's, every finish is about
//!   an operation on the key's targets and states it truly) and applies
//!   them as a local worker's would; a write refused by its fence answers
//!   `409 claim_lost` in its place, a batch refused as a whole `403`;
//! - `claim` claims and, when there is nothing, waits (long poll) until
//!   work may be there (a commit woke the workers), a cancel request it
//!   does not know yet is there, the wait ends, the worker says it is
//!   stopping, or the server stops. It claims only when the request
//!   arrives, never after waiting: an answer held for seconds may find its
//!   worker gone (a cut link), and operations claimed for nobody would
//!   wait for their lease. After a wake-up it answers with no operations,
//!   and the worker claims at once in a fresh request;
//! - `managed` reads the objects opsqueue manages on one of the key's
//!   targets (what a driver checks before it acts).
//!
//! Answers that hold operations carry their secrets (the worker needs
//! them): they go only to the agent that claimed them, and are never
//! logged.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use opsqueue_shared::agent::{
    AgentAnswer, AgentAnswers, AgentBatch, AgentClaim, AgentWorker, ManagedQuery,
};
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{ApiKey, NewWorker, WorkerWrite, WorkerWritten, managed_list};
use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::agent_writer::{AgentJob, AgentReply};
use crate::auth::Caller;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

opsqueue_shared::name_type!(
    /// A worker's id (`<host>-<pid>-<random>` by default).
    WorkerId, "worker id", max = 128, extra = "._-"
);
opsqueue_shared::name_type!(
    /// A host name as a worker reports it.
    HostName, "host name", max = 253, extra = "._-"
);
opsqueue_shared::name_type!(
    /// A kernel boot id, or a version string.
    Token, "token", max = 64, extra = "._-+"
);

/// Most operations one claim may take.
const MAX_CLAIM: usize = 1024;
/// Most writes in one batch.
const MAX_WRITES: usize = 4096;

fn field<T>(
    name: &str,
    parsed: Result<T, opsqueue_shared::names::NameError>,
) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::invalid_field(name, e.to_string()))
}

/// The worker a request names, parsed, on behalf of `key`.
fn registration(worker: &AgentWorker, key: &ApiKey) -> Result<NewWorker, ApiError> {
    field("worker.id", WorkerId::parse(&worker.id))?;
    field("worker.host", HostName::parse(&worker.host))?;
    field("worker.boot_id", Token::parse(&worker.boot_id))?;
    field("worker.version", Token::parse(&worker.version))?;
    for driver in &worker.drivers {
        field("worker.drivers", Label::parse(driver))?;
    }
    for source in worker.sources.iter().flatten() {
        field("worker.sources", Label::parse(source))?;
    }
    if worker.targets.is_empty() {
        return Err(ApiError::invalid_field(
            "worker.targets",
            "must name at least one target",
        ));
    }
    for target in &worker.targets {
        field("worker.targets", Label::parse(target))?;
        if !key.serves(target) {
            return Err(ApiError::Forbidden(format!(
                "this agent key serves the targets {:?}, not {target:?}",
                key.targets
            )));
        }
    }
    if !(1..=10_000).contains(&worker.concurrency) {
        return Err(ApiError::invalid_field(
            "worker.concurrency",
            "must be between 1 and 10000",
        ));
    }
    if !(3..=3600).contains(&worker.lease_secs) {
        return Err(ApiError::invalid_field(
            "worker.lease_secs",
            "must be between 3 and 3600",
        ));
    }
    Ok(worker.registration(&key.id))
}

async fn apply(state: &AppState, job: AgentJob) -> Result<Vec<WorkerWritten>, ApiError> {
    match state.agents.apply(job).await? {
        AgentReply::Applied(answers) => Ok(answers),
        AgentReply::Refused(refusal) => Err(ApiError::Forbidden(refusal.0)),
    }
}

/// Apply a batch of a remote worker's writes.
///
/// In order, in one transaction: `register`, `stop`, `claim`,
/// `heartbeat` (with host facts; answers lost fences and cancel requests),
/// `cancel_requests`, `log`, `progress`, `finish` (with its last log lines
/// and observations; may claim the slot's next operation). One answer per
/// write: `status` 200, or 409 `claim_lost` for a fenced write whose claim
/// no longer holds (nothing of it was written).
#[utoipa::path(
    tag = "agent",
    request_body = AgentBatch,
    responses(
        (status = 200, description = "One answer per write, in order", body = AgentAnswers),
        (status = 403, description = "Not an agent key, a target it does not serve, or a write about another worker's or target's operation (nothing applied)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name or number out of bounds", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/agent/writes")]
pub async fn agent_writes(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<AgentBatch>,
) -> Result<HttpResponse, ApiError> {
    let batch = body.into_inner();
    let key = caller.key();
    let worker = registration(&batch.worker, key)?;
    if batch.writes.len() > MAX_WRITES {
        return Err(ApiError::invalid_field(
            "writes",
            format!("at most {MAX_WRITES} writes per batch"),
        ));
    }
    for write in &batch.writes {
        if let WorkerWrite::Claim { limit, .. } = write
            && *limit > MAX_CLAIM
        {
            return Err(ApiError::invalid_field(
                "writes",
                format!("a claim takes at most {MAX_CLAIM} operations"),
            ));
        }
    }
    if batch.stopping {
        state.stopping_agents.mark(&worker.id);
    } else if batch
        .writes
        .iter()
        .any(|w| matches!(w, WorkerWrite::Register { .. }))
    {
        state.stopping_agents.forget(&worker.id);
    }
    let answers = if batch.writes.is_empty() {
        Vec::new()
    } else {
        let job = AgentJob {
            key_id: key.id.clone(),
            key_targets: key.targets.clone(),
            worker,
            writes: batch.writes,
            stopping: batch.stopping,
        };
        apply(&state, job).await?
    };
    Ok(HttpResponse::Ok().json(AgentAnswers {
        answers: answers.into_iter().map(AgentAnswer::new).collect(),
    }))
}

/// Claim operations, waiting for work.
///
/// Claims up to `limit` operations for the worker's targets and reads its
/// cancel requests. When nothing was claimed and no cancel request is news
/// (every one is of an operation in `stopping`), holds the answer until
/// work may be there (then it answers with no operations: claim again),
/// a new cancel request is made, `wait_secs` (capped by `max_wait_secs`)
/// passed, the worker said it is stopping, or the server stops. The
/// claimed operations carry their secrets.
#[utoipa::path(
    tag = "agent",
    request_body = AgentClaim,
    responses(
        (status = 200, description = "`{answer: claimed, operations: [{operation, secrets}], cancels}`", body = Object),
        (status = 403, description = "Not an agent key, or a target it does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name or number out of bounds", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/agent/claim")]
pub async fn agent_claim(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<AgentClaim>,
) -> Result<HttpResponse, ApiError> {
    let claim = body.into_inner();
    let key = caller.key();
    let worker = registration(&claim.worker, key)?;
    if claim.limit > MAX_CLAIM {
        return Err(ApiError::invalid_field(
            "limit",
            format!("at most {MAX_CLAIM}"),
        ));
    }
    let wait = Duration::from_secs_f64(
        claim
            .wait_secs
            .clamp(0.0, state.config.api.max_wait_secs as f64),
    );
    let deadline = Instant::now() + wait;
    let known: HashSet<_> = claim.stopping.iter().copied().collect();
    // Claims on arrival only; after a wake-up, reads cancel requests only.
    let mut limit = claim.limit;
    loop {
        // Subscribe before claiming: work committed meanwhile still bumps.
        let mut work = state.work.subscribe();
        let mut stopping = state.stopping_agents.subscribe();
        let job = AgentJob {
            key_id: key.id.clone(),
            key_targets: key.targets.clone(),
            worker: worker.clone(),
            writes: vec![WorkerWrite::Claim {
                limit,
                cancels: true,
            }],
            stopping: false,
        };
        let answer = apply(&state, job).await?.pop().ok_or(ApiError::Internal)?;
        let woken = limit == 0 && claim.limit > 0;
        let news = match &answer {
            WorkerWritten::Claimed {
                operations,
                cancels,
            } => !operations.is_empty() || cancels.iter().any(|f| !known.contains(&f.id)),
            _ => true,
        };
        if news
            || woken
            || Instant::now() >= deadline
            || state.stopping.is_cancelled()
            || state.stopping_agents.is_stopping(&worker.id)
        {
            return Ok(HttpResponse::Ok().json(answer));
        }
        tokio::select! {
            _ = work.changed() => limit = 0,
            _ = stopping.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = state.stopping.cancelled() => {}
        }
    }
}

/// Objects opsqueue manages on one of the agent's targets.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedItems {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<opsqueue_shared::store::ManagedObject>,
}

/// Read what opsqueue manages on a target.
///
/// The objects of one `family` and `kind` (a `name` narrows to one) that
/// opsqueue created on `target`, with the spec it applied: what a driver
/// checks before it touches them.
#[utoipa::path(
    tag = "agent",
    params(
        ("target" = String, Query, description = "One of the agent key's targets"),
        ("family" = String, Query, description = "A family (`systemd`, `caddy`, …)"),
        ("kind" = String, Query, description = "A kind of object (`unit`, `site`, …)"),
        ("name" = Option<String>, Query, description = "One object"),
    ),
    responses(
        (status = 200, description = "The objects, by name", body = ManagedItems),
        (status = 403, description = "Not an agent key, or a target it does not serve", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/agent/managed")]
pub async fn agent_managed(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ManagedQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    field("target", Label::parse(&query.target))?;
    field("family", Label::parse(&query.family))?;
    field("kind", Label::parse(&query.kind))?;
    if query
        .name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 255)
    {
        return Err(ApiError::InvalidQuery("name: 1 to 255 bytes".into()));
    }
    if !caller.key().serves(&query.target) {
        return Err(ApiError::Forbidden(format!(
            "this agent key does not serve the target {:?}",
            query.target
        )));
    }
    let items = state
        .store
        .call(move |s| {
            s.read(|c| {
                managed_list(
                    c,
                    &query.target,
                    &query.family,
                    &query.kind,
                    query.name.as_deref(),
                )
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(ManagedItems { items }))
}
