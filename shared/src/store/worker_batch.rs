//! The writes a worker makes (its registration, heartbeats, claims, log
//! lines, progress, finishes) as one batch applied in one transaction. The
//! worker's writer applies its batches here on the database beside it; the
//! API applies a remote worker's batches here too, after checking that its
//! agent key may make each write. Both call the same store functions
//! (`operation_claim`, `operation_finish`, the fenced writes), so a claim,
//! a fence and a finish mean exactly the same in both modes. The types
//! serialize: they are also the agent protocol's wire format.
//!
//! Invariants:
//! - Requests are applied in the order given: an operation's log lines sent
//!   before its finish are written before it, and a claim after a finish
//!   sees that operation's resource free.
//! - Every write about an operation is fenced by the store function that
//!   does it; a finish that was refused leaves nothing behind (no log lines
//!   of it, no state effects, no counters).
//! - Finishes that want their slot's next operation get it from one claim
//!   made after every finish of the batch (so the resources they freed
//!   count), unless the worker is stopping.
//! - Counter deltas are merged and applied once per batch.
//! - [`Woken`] says whom to wake after the commit: API processes when an
//!   operation ended (long-polls re-check), workers when a resource was
//!   freed or an operation handed back (the next one may start).

use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{
    ClaimRequest, Counters, Finish, HostFacts, LogLine, NewWorker, Result, StateEffect,
    counters_apply, family_label, label_value, names, operation_cancel_requests, operation_claim,
    operation_finish, operation_heartbeat, operation_log_append, operation_progress, state_apply,
    target_mark_offline, target_seen, worker_heartbeat, worker_register, worker_stop,
};
use crate::operation::{Fence, Operation, Progress};
use crate::time;

/// One write of a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "write", rename_all = "snake_case")]
pub enum WorkerWrite {
    /// Registers (or registers again) the worker row; its targets are seen.
    Register {
        #[serde(default)]
        facts: Option<HostFacts>,
    },
    /// Marks the worker stopped.
    Stop,
    /// Claims up to `limit` operations; with `cancels`, also reads this
    /// worker's cancel requests.
    Claim {
        limit: usize,
        cancels: bool,
    },
    /// Renews the worker row (with its host's facts) and the leases of
    /// `fences`; reads cancel requests.
    Heartbeat {
        fences: Vec<Fence>,
        #[serde(default)]
        facts: Option<HostFacts>,
    },
    /// Reads this worker's cancel requests.
    CancelRequests,
    /// Records the end of an attempt; with `claim_next`, also claims one
    /// operation for the slot it frees, in the same transaction.
    Finish {
        done: Arc<FinishWrite>,
        claim_next: bool,
    },
    Log {
        fence: Fence,
        lines: Vec<LogLine>,
    },
    Progress {
        fence: Fence,
        progress: Progress,
    },
}

impl WorkerWrite {
    /// The fence this write is conditional on, if any.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            WorkerWrite::Finish { done, .. } => Some(&done.fence),
            WorkerWrite::Log { fence, .. } | WorkerWrite::Progress { fence, .. } => Some(fence),
            _ => None,
        }
    }
}

/// The end of one attempt, with what it still had to log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishWrite {
    pub fence: Fence,
    pub finish: Finish,
    #[serde(default)]
    pub logs: Vec<LogLine>,
    /// Applied with a completion only.
    #[serde(default)]
    pub effects: Vec<StateEffect>,
    /// The operation's target, family and whether it has a resource (the
    /// API takes these from the row, never from an agent).
    pub target: String,
    pub family: String,
    pub has_resource: bool,
    pub duration_secs: f64,
}

/// An operation handed to the worker that claimed it: the whole row,
/// secrets included (on the wire: `{operation, secrets}`). Secrets go no
/// further than that worker and are never logged.
#[derive(Clone)]
pub struct Claimed(pub Operation);

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.0.id)
            .field("type", &self.0.kind)
            .field("attempt", &self.0.attempt)
            .finish_non_exhaustive()
    }
}

impl Serialize for Claimed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            operation: &'a Operation,
            secrets: &'a Option<Value>,
        }
        Wire {
            operation: &self.0,
            secrets: &self.0.secrets,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Claimed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            operation: Operation,
            #[serde(default)]
            secrets: Option<Value>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let mut operation = wire.operation;
        operation.secrets = wire.secrets;
        Ok(Claimed(operation))
    }
}

/// The answer to one [`WorkerWrite`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum WorkerWritten {
    Done,
    Claimed {
        operations: Vec<Claimed>,
        cancels: Vec<Fence>,
    },
    /// A heartbeat: the fences that no longer hold, and cancel requests.
    Beat {
        lost: Vec<Fence>,
        cancels: Vec<Fence>,
    },
    Cancels {
        cancels: Vec<Fence>,
    },
    /// Whether the fenced finish applied, and the slot's next operation.
    Finished {
        applied: bool,
        next: Option<Box<Claimed>>,
    },
    /// Whether a fenced write applied.
    Applied {
        applied: bool,
    },
}

impl WorkerWritten {
    /// The answer's name, for messages (never the answer itself: a claim
    /// holds secrets).
    pub fn name(&self) -> &'static str {
        match self {
            WorkerWritten::Done => "done",
            WorkerWritten::Claimed { .. } => "claimed",
            WorkerWritten::Beat { .. } => "beat",
            WorkerWritten::Cancels { .. } => "cancels",
            WorkerWritten::Finished { .. } => "finished",
            WorkerWritten::Applied { .. } => "applied",
        }
    }

    /// Whether a fenced write was refused because its fence no longer
    /// holds (the claim was reaped or ended elsewhere).
    pub fn refused(&self) -> bool {
        matches!(
            self,
            WorkerWritten::Finished { applied: false, .. }
                | WorkerWritten::Applied { applied: false }
        )
    }
}

/// Who the writes are from.
#[derive(Debug, Clone)]
pub struct WorkerSession<'a> {
    pub worker: &'a NewWorker,
    /// Per-operation cap on stored log bytes.
    pub log_cap: u64,
    /// Once the worker is stopping, finishes claim no next operation.
    pub stopping: bool,
}

/// Whom to wake after the commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Woken {
    /// An operation was claimed, ended or reported on (progress, log
    /// lines): API processes' long-polls re-check and their event streams
    /// read the events the commit wrote.
    pub api: bool,
    /// A resource was freed or an operation handed back: workers claim.
    pub workers: bool,
}

fn tally(counters: &mut Counters, done: &FinishWrite) {
    let family = family_label(&done.family);
    match &done.finish {
        Finish::Completed { .. } => counters.add(names::COMPLETED, &family, 1.0),
        Finish::Failed { error } => counters.add(
            names::FAILED,
            &format!("{family},code=\"{}\"", label_value(&error.code)),
            1.0,
        ),
        Finish::Cancelled { .. } => counters.add(names::CANCELLED, &family, 1.0),
        Finish::Retry { .. } => counters.add(names::RETRIED, &family, 1.0),
        Finish::Released => return,
    }
    counters.observe_duration(&done.family, done.duration_secs);
}

fn claim(
    tx: &Connection,
    worker: &NewWorker,
    limit: usize,
    now: time::Timestamp,
    counters: &mut Counters,
) -> Result<Vec<Claimed>> {
    let ops = operation_claim(
        tx,
        &ClaimRequest {
            worker_id: &worker.id,
            targets: &worker.targets,
            sources: worker.sources.as_deref(),
            limit,
            now,
            lease_until: time::add_secs(now, worker.lease_secs as f64),
        },
    )?;
    for op in &ops {
        counters.add(names::CLAIMED, &family_label(op.family()), 1.0);
    }
    Ok(ops.into_iter().map(Claimed).collect())
}

/// Applies `requests` in order inside the caller's transaction; one answer
/// per request. Adds to `woken` whom to wake once it committed.
pub fn worker_batch_apply(
    tx: &Connection,
    session: &WorkerSession,
    requests: &[WorkerWrite],
    woken: &mut Woken,
) -> Result<Vec<WorkerWritten>> {
    let now = time::now();
    let lease_until = time::add_secs(now, session.worker.lease_secs as f64);
    let worker = session.worker;
    let mut counters = Counters::default();
    let mut answers = Vec::with_capacity(requests.len());
    let mut wanting = Vec::new();
    for request in requests {
        let answer = match request {
            WorkerWrite::Register { facts } => {
                worker_register(tx, worker, facts.as_ref(), now)?;
                target_seen(tx, &worker.targets, now)?;
                WorkerWritten::Done
            }
            WorkerWrite::Stop => {
                worker_stop(tx, &worker.id, now)?;
                target_mark_offline(tx, now)?;
                WorkerWritten::Done
            }
            WorkerWrite::Claim { limit, cancels } => {
                let operations = claim(tx, worker, *limit, now, &mut counters)?;
                woken.api |= !operations.is_empty();
                let cancels = if *cancels {
                    operation_cancel_requests(tx, &worker.id)?
                } else {
                    Vec::new()
                };
                WorkerWritten::Claimed {
                    operations,
                    cancels,
                }
            }
            WorkerWrite::Heartbeat { fences, facts } => {
                if !worker_heartbeat(tx, &worker.id, facts.as_ref(), now)? {
                    tracing::warn!(worker = %worker.id, "the worker row was gone or marked stopped; registering again");
                    worker_register(tx, worker, facts.as_ref(), now)?;
                }
                target_seen(tx, &worker.targets, now)?;
                let lost = operation_heartbeat(tx, fences, lease_until, now)?;
                let cancels = operation_cancel_requests(tx, &worker.id)?;
                WorkerWritten::Beat { lost, cancels }
            }
            WorkerWrite::CancelRequests => WorkerWritten::Cancels {
                cancels: operation_cancel_requests(tx, &worker.id)?,
            },
            WorkerWrite::Finish { done, claim_next } => {
                // Fenced like the finish: a refused one writes no lines.
                if !done.logs.is_empty() {
                    operation_log_append(tx, &done.fence, &done.logs, session.log_cap)?;
                }
                let applied = operation_finish(tx, &done.fence, &done.finish, now)?;
                if applied {
                    if matches!(done.finish, Finish::Completed { .. }) && !done.effects.is_empty() {
                        state_apply(tx, &done.target, done.fence.id, &done.effects, now)?;
                    }
                    tally(&mut counters, done);
                    woken.api = true;
                    woken.workers |= done.has_resource || done.finish == Finish::Released;
                }
                if *claim_next && !session.stopping {
                    wanting.push(answers.len());
                }
                WorkerWritten::Finished {
                    applied,
                    next: None,
                }
            }
            WorkerWrite::Log { fence, lines } => {
                let applied = operation_log_append(tx, fence, lines, session.log_cap)?;
                woken.api |= applied;
                WorkerWritten::Applied { applied }
            }
            WorkerWrite::Progress { fence, progress } => {
                let applied = operation_progress(tx, fence, progress, now)?;
                woken.api |= applied;
                WorkerWritten::Applied { applied }
            }
        };
        answers.push(answer);
    }
    if !wanting.is_empty() {
        let claimed = claim(tx, worker, wanting.len(), now, &mut counters)?;
        woken.api |= !claimed.is_empty();
        for (index, op) in wanting.into_iter().zip(claimed) {
            if let WorkerWritten::Finished { next, .. } = &mut answers[index] {
                *next = Some(Box::new(op));
            }
        }
    }
    if !counters.is_empty() {
        counters_apply(tx, &counters)?;
    }
    Ok(answers)
}

/// Why a remote worker's batch is refused (nothing of it is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Checks, inside the transaction that will apply them, that an agent key
/// (`key_id`, serving `key_targets`) may make `writes` for `worker`: the
/// worker id is not a local worker's nor another key's; every fenced write
/// names this worker; every finish is about an operation on one of the
/// key's targets and says truly what it is (target, family, resource),
/// since counters, state effects and wake-ups follow what it says. The
/// worker's own targets are the caller's to check (at the edge). Fences
/// themselves are the store functions' to check, as for any worker.
pub fn worker_batch_check(
    conn: &Connection,
    key_id: &str,
    key_targets: &[String],
    worker: &NewWorker,
    writes: &[WorkerWrite],
) -> Result<Result<(), Refusal>> {
    let refuse = |why: String| Ok(Err(Refusal(why)));
    match super::worker_agent_key(conn, &worker.id)? {
        Some(None) => {
            return refuse(format!(
                "worker id {:?} belongs to a worker beside the database",
                worker.id
            ));
        }
        Some(Some(other)) if other != key_id => {
            return refuse(format!(
                "worker id {:?} was registered with another agent key",
                worker.id
            ));
        }
        _ => {}
    }
    let mut row = conn.prepare_cached(
        // A workflow step's end may release its dependents, so it counts as
        // having a resource (as the executor says it) even without one.
        "SELECT target, type, resource IS NOT NULL OR parent_id IS NOT NULL
         FROM operations WHERE id = ?1",
    )?;
    for write in writes {
        let Some(fence) = write.fence() else { continue };
        if fence.worker_id != worker.id {
            return refuse(format!(
                "a write about operation {} names worker {:?}, not {:?}",
                fence.id, fence.worker_id, worker.id
            ));
        }
        let WorkerWrite::Finish { done, .. } = write else {
            continue;
        };
        let mut rows = row.query([fence.id.to_string()])?;
        let Some(found) = rows.next()? else { continue };
        let (target, kind, has_resource): (String, String, bool) =
            (found.get(0)?, found.get(1)?, found.get(2)?);
        if !key_targets.contains(&target) {
            return refuse(format!(
                "operation {} runs on target {target:?}, which this agent key does not serve",
                fence.id
            ));
        }
        let family = kind.split('.').next().unwrap_or(&kind);
        if done.target != target || done.family != family || done.has_resource != has_resource {
            return refuse(format!(
                "the finish of operation {} misstates its target, family or resource",
                fence.id
            ));
        }
    }
    Ok(Ok(()))
}
