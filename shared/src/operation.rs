//! The operation: what a caller asked for, as stored and as returned by the
//! API. [`OperationRequest`] is a parsed request (the action already typed);
//! [`OperationRequest::prepare`] fills the defaults and fingerprints it for
//! idempotency, giving the [`NewOperation`] the store inserts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::families::Action;
use crate::names::Label;
use crate::secret::{split_secrets, with_secrets};
use crate::status::Status;
use crate::time::Timestamp;

/// A UUIDv7: operation ids sort in the order the operations were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(Uuid);

impl OperationId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for OperationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid operation id {0:?}: expected a UUID")]
pub struct InvalidOperationId(pub String);

impl FromStr for OperationId {
    type Err = InvalidOperationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| InvalidOperationId(s.chars().take(80).collect()))
    }
}

/// Stable error codes written by opsqueue itself (drivers add their own).
pub mod codes {
    /// The worker's per-operation deadline passed, or the monitor's backstop.
    pub const TIMEOUT: &str = "timeout";
    /// The claim's lease ran out and the operation was not safe to re-run, or
    /// had no attempts left.
    pub const LEASE_EXPIRED: &str = "lease_expired";
    /// The claiming worker's process is gone (dead pid or a reboot).
    pub const WORKER_LOST: &str = "worker_lost";
    /// The worker shut down before the operation finished and it was not safe
    /// to hand back for a re-run.
    pub const WORKER_SHUTDOWN: &str = "worker_shutdown";
    /// Cancelled by a caller.
    pub const CANCELLED: &str = "cancelled";
    /// The stored payload no longer parses (written by older code).
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    /// No driver for this family in this worker.
    pub const NO_DRIVER: &str = "no_driver";
    /// A bug: a driver task panicked.
    pub const PANIC: &str = "panic";
}

/// What went wrong, stored with the operation and shown to callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationError {
    pub code: String,
    pub message: String,
    /// Whether running it again could succeed.
    pub retryable: bool,
}

impl OperationError {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retryable,
        }
    }
}

/// Progress reported by long actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// An operation as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    #[schema(value_type = String, format = Uuid)]
    pub id: OperationId,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub source: String,
    pub target: String,
    pub resource: Option<String>,
    pub status: Status,
    pub priority: i64,
    pub run_at: DateTime<Utc>,
    pub attempt: i64,
    pub max_attempts: i64,
    pub timeout_secs: i64,
    /// Whether the action may be run again after a worker was lost mid-way.
    pub rerun_safe: bool,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<OperationError>,
    pub progress: Option<Progress>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<OperationId>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// A workflow step's name (its workflow is `parent_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A workflow compensation: the step it undoes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensates: Option<String>,
    /// A claimed step's inputs: the results of the steps it depends on, by
    /// step name (filled by the claim only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
    /// Payload fields held back from every answer (see `secret_fields`).
    #[serde(skip)]
    pub secrets: Option<Value>,
}

impl Operation {
    /// The payload with its secret fields put back: what the worker parses.
    pub fn action_payload(&self) -> Value {
        with_secrets(&self.payload, self.secrets.as_ref())
    }

    pub fn fence(&self) -> Option<Fence> {
        Some(Fence {
            id: self.id,
            worker_id: self.worker_id.clone()?,
            attempt: self.attempt,
        })
    }

    pub fn family(&self) -> &str {
        self.kind.split('.').next().unwrap_or(&self.kind)
    }
}

/// What every write about a running operation is conditional on: the row is
/// still `running`, claimed by this worker, in this attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub id: OperationId,
    pub worker_id: String,
    pub attempt: i64,
}

pub const DEFAULT_PRIORITY: i64 = 5;
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
pub const MAX_MAX_ATTEMPTS: i64 = 100;
pub const MAX_TIMEOUT_SECS: i64 = 7 * 24 * 3600;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A request already parsed into types; only the store's defaults are left.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub action: Action,
    pub source: Label,
    pub target: Label,
    pub priority: Option<i64>,
    pub run_at: Option<DateTime<Utc>>,
    pub timeout_secs: Option<i64>,
    pub max_attempts: Option<i64>,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<OperationId>,
}

impl OperationRequest {
    pub fn new(action: Action) -> Self {
        Self {
            action,
            source: Label::api(),
            target: Label::local(),
            priority: None,
            run_at: None,
            timeout_secs: None,
            max_attempts: None,
            idempotency_key: None,
            parent_id: None,
        }
    }

    /// The row to insert, accepted at `now`.
    pub fn prepare(&self, now: Timestamp) -> NewOperation {
        let (payload, secrets) = split_secrets(self.action.payload(), self.action.secret_fields());
        NewOperation {
            id: OperationId::new(),
            kind: self.action.kind().to_owned(),
            payload,
            secrets,
            source: self.source.to_string(),
            target: self.target.to_string(),
            resource: self.action.resource(),
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            run_at: self.run_at.unwrap_or(now),
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout_secs: self
                .timeout_secs
                .unwrap_or_else(|| self.action.default_timeout_secs()),
            rerun_safe: self.action.rerun_safe(),
            idempotency_key: self.idempotency_key.clone(),
            request_hash: self.fingerprint(),
            parent_id: self.parent_id,
            step: None,
            compensates: None,
            deps_left: 0,
            created_at: now,
        }
    }

    /// sha256 over what the caller chose (not the defaults filled at accept
    /// time), so that a replay of the same request matches.
    fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "type": self.action.kind(),
            "payload": self.action.payload(),
            "target": self.target.as_str(),
            "priority": self.priority,
            "run_at": self.run_at.map(crate::time::to_db),
            "timeout_secs": self.timeout_secs,
            "max_attempts": self.max_attempts,
            "parent_id": self.parent_id.map(|id| id.to_string()),
        });
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// A row ready for `operation_insert`.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub id: OperationId,
    pub kind: String,
    /// With secret fields masked as `"***"`.
    pub payload: Value,
    /// The secret fields' values, stored apart.
    pub secrets: Option<Value>,
    pub source: String,
    pub target: String,
    pub resource: Option<String>,
    pub priority: i64,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i64,
    pub timeout_secs: i64,
    pub rerun_safe: bool,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub parent_id: Option<OperationId>,
    /// A workflow step's name, or (with `compensates`) a compensation's.
    pub step: Option<String>,
    pub compensates: Option<String>,
    /// Dependencies not completed yet: claimable only at 0.
    pub deps_left: i64,
    pub created_at: DateTime<Utc>,
}

/// Bytes as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
