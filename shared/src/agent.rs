//! The agent protocol's bodies: what a remote worker sends to the API under
//! `/api/v1/agent/` and what it gets back. The writes themselves are the
//! store's [`WorkerWrite`]s, applied by the API with the same function the
//! local worker's writer uses ([`crate::store::worker_batch_apply`]).
//!
//! Every request names the worker it comes from ([`AgentWorker`]): the API
//! keeps no session, so a restarted API or a second API process serves an
//! agent just the same. The API parses it at the edge (names, targets
//! inside the key's) before anything is stored.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::operation::OperationId;
use crate::process::ProcessIdentity;
use crate::store::{NewWorker, WorkerWrite, WorkerWritten};

/// Paths of the protocol.
pub mod paths {
    /// `POST`: a batch of writes, applied in one transaction, in order.
    pub const WRITES: &str = "/api/v1/agent/writes";
    /// `POST`: a claim that waits (long poll) until work or a new cancel
    /// request is there.
    pub const CLAIM: &str = "/api/v1/agent/claim";
    /// `GET`: objects opsqueue manages on one of the agent's targets.
    pub const MANAGED: &str = "/api/v1/agent/managed";
    /// `POST`: create (or resume) an artifact of the workflow of a step the
    /// worker runs; `/{id}`: `GET` where it stands, `PUT` one chunk;
    /// `/{id}/content`: `GET` the complete file from `offset`.
    pub const ARTIFACTS: &str = "/api/v1/agent/artifacts";
}

/// The worker a request comes from, as it registered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentWorker {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Its process start time, in clock ticks after boot.
    pub process_start: u64,
    pub boot_id: String,
    pub version: String,
    pub drivers: Vec<String>,
    pub targets: Vec<String>,
    /// Sources served; absent means every source.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    pub concurrency: usize,
    pub lease_secs: u64,
}

impl AgentWorker {
    pub fn from_registration(worker: &NewWorker) -> Self {
        Self {
            id: worker.id.clone(),
            host: worker.identity.host.clone(),
            pid: worker.identity.pid,
            process_start: worker.identity.start_ticks,
            boot_id: worker.identity.boot_id.clone(),
            version: worker.version.clone(),
            drivers: worker.drivers.clone(),
            targets: worker.targets.clone(),
            sources: worker.sources.clone(),
            concurrency: worker.concurrency,
            lease_secs: worker.lease_secs,
        }
    }

    /// The registration, on behalf of the agent key `agent_key_id`.
    pub fn registration(&self, agent_key_id: &str) -> NewWorker {
        NewWorker {
            id: self.id.clone(),
            identity: ProcessIdentity {
                host: self.host.clone(),
                pid: self.pid,
                start_ticks: self.process_start,
                boot_id: self.boot_id.clone(),
            },
            version: self.version.clone(),
            drivers: self.drivers.clone(),
            targets: self.targets.clone(),
            sources: self.sources.clone(),
            concurrency: self.concurrency,
            lease_secs: self.lease_secs,
            agent_key_id: Some(agent_key_id.to_owned()),
        }
    }
}

/// `POST /api/v1/agent/writes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBatch {
    pub worker: AgentWorker,
    /// Applied in order, in one transaction.
    #[schema(value_type = Vec<Object>)]
    pub writes: Vec<WorkerWrite>,
    /// The worker is shutting down: finishes claim no next operation, and
    /// its waiting claim (if any) answers at once.
    #[serde(default)]
    pub stopping: bool,
}

/// The answer to one write of a batch: `status` 200 when it applied, 409
/// (`code: claim_lost`) for a fenced write whose claim no longer holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentAnswer {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[schema(value_type = Object)]
    pub answer: WorkerWritten,
}

/// The `code` of a fenced write refused because its claim no longer holds.
pub const CLAIM_LOST: &str = "claim_lost";

impl AgentAnswer {
    pub fn new(answer: WorkerWritten) -> Self {
        if answer.refused() {
            Self {
                status: 409,
                code: Some(CLAIM_LOST.to_owned()),
                answer,
            }
        } else {
            Self {
                status: 200,
                code: None,
                answer,
            }
        }
    }
}

/// The answer to `POST /api/v1/agent/writes`: one per write, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentAnswers {
    pub answers: Vec<AgentAnswer>,
}

/// `POST /api/v1/agent/claim`: claims up to `limit` operations; when none
/// is claimable and no new cancel request is there, waits up to
/// `wait_secs` for one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentClaim {
    pub worker: AgentWorker,
    pub limit: usize,
    /// Operations it already stops: their cancel requests are not news.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub stopping: Vec<OperationId>,
    pub wait_secs: f64,
}

/// `GET /api/v1/agent/managed` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedQuery {
    pub target: String,
    pub family: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Who asks for an artifact: the worker and the running attempt of the
/// step it acts for (query parameters of every artifact request).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtifactHolder {
    pub worker: String,
    #[schema(value_type = String, format = Uuid)]
    #[param(value_type = String, format = Uuid)]
    pub operation: OperationId,
    pub attempt: i64,
    /// `PUT`: where the chunk starts; `GET …/content`: where to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `PUT`: the chunk's sha256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /api/v1/agent/artifacts`: what the whole will be.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDeclaration {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}
