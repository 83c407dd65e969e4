//! The `migration` family's typed actions: the steps of a migration that
//! only this family can do. Every one names its migration (the id the API
//! gave it, which keys the worker's staging folder) and the app.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::MigrationConfig;
use crate::OperationId;
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};
use crate::families::pm2::ProcessName;
use crate::names::{AbsolutePath, Port};

pub const FAMILY: &str = "migration";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "migration.inspect",
        summary: "On the source: reads app {name}'s record and measures its {state_dir}; answers the spec with paths relative to [pm2] base_dir.",
    },
    ActionInfo {
        kind: "migration.preflight",
        summary: "On the target: pm2 answers, no app {name} there yet, its script deployed, its state directory absent, free disk at least twice the state, {port} free.",
    },
    ActionInfo {
        kind: "migration.copy",
        summary: "On the source: copies {state_dir} into the staging folder ({phase} warm while the app runs, final after it stopped: changed files again, SQLite databases through VACUUM INTO), the final one packed as a tar archive with its sha256 manifest.",
    },
    ActionInfo {
        kind: "migration.upload",
        summary: "On the source: uploads the final archive to the API in sha256-verified chunks, resuming where the API stands.",
    },
    ActionInfo {
        kind: "migration.restore",
        summary: "On the target: downloads the archive, checks its sha256, unpacks it beside the state directory, checks every file against the source's manifest and moves it into place.",
    },
    ActionInfo {
        kind: "migration.discard",
        summary: "Removes what this migration left on a target: its staging folder and the state directory its restore made (never a source's state).",
    },
    ActionInfo {
        kind: "migration.start",
        summary: "On the target: starts app {name} from the source's spec, its paths under this target's [pm2] base_dir.",
    },
    ActionInfo {
        kind: "migration.health",
        summary: "On the target: app {name} online and staying up (same pid) for [migration] settle_secs, and {port} accepting connections when given.",
    },
];

/// Which copy of the state: taken while the app runs, or after it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyPhase {
    Warm,
    Final,
}

/// What every step names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub migration: OperationId,
    pub name: ProcessName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspect {
    pub migration: OperationId,
    pub name: ProcessName,
    /// The state directory as the source recorded it.
    pub state_dir: AbsolutePath,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub migration: OperationId,
    pub name: ProcessName,
    /// The port the app listens on, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub migration: OperationId,
    pub name: ProcessName,
    pub state_dir: AbsolutePath,
    pub phase: CopyPhase,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MigrationAction {
    Inspect(Inspect),
    Preflight(Probe),
    Copy(Copy),
    Upload(Step),
    Restore(Step),
    Discard(Step),
    Start(Step),
    Health(Probe),
}

impl MigrationAction {
    /// The migration it belongs to.
    pub fn migration(&self) -> OperationId {
        match self {
            MigrationAction::Inspect(a) => a.migration,
            MigrationAction::Copy(a) => a.migration,
            MigrationAction::Preflight(a) | MigrationAction::Health(a) => a.migration,
            MigrationAction::Upload(a)
            | MigrationAction::Restore(a)
            | MigrationAction::Discard(a)
            | MigrationAction::Start(a) => a.migration,
        }
    }
}

impl FamilyAction for MigrationAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = MigrationConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        Ok(match kind {
            "migration.inspect" => MigrationAction::Inspect(payload(kind, value)?),
            "migration.preflight" => MigrationAction::Preflight(payload(kind, value)?),
            "migration.copy" => MigrationAction::Copy(payload(kind, value)?),
            "migration.upload" => MigrationAction::Upload(payload(kind, value)?),
            "migration.restore" => MigrationAction::Restore(payload(kind, value)?),
            "migration.discard" => MigrationAction::Discard(payload(kind, value)?),
            "migration.start" => MigrationAction::Start(payload(kind, value)?),
            "migration.health" => MigrationAction::Health(payload(kind, value)?),
            _ => return Err(ActionError::UnknownType(kind.chars().take(80).collect())),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            MigrationAction::Inspect(_) => "migration.inspect",
            MigrationAction::Preflight(_) => "migration.preflight",
            MigrationAction::Copy(_) => "migration.copy",
            MigrationAction::Upload(_) => "migration.upload",
            MigrationAction::Restore(_) => "migration.restore",
            MigrationAction::Discard(_) => "migration.discard",
            MigrationAction::Start(_) => "migration.start",
            MigrationAction::Health(_) => "migration.health",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            MigrationAction::Inspect(a) => serde_json::to_value(a),
            MigrationAction::Copy(a) => serde_json::to_value(a),
            MigrationAction::Preflight(a) | MigrationAction::Health(a) => serde_json::to_value(a),
            MigrationAction::Upload(a)
            | MigrationAction::Restore(a)
            | MigrationAction::Discard(a)
            | MigrationAction::Start(a) => serde_json::to_value(a),
        };
        value.expect("a payload serializes")
    }

    /// The steps of one migration already run one after another; two
    /// migrations of one app are refused at the API (`409`).
    fn resource(&self) -> Option<String> {
        None
    }

    /// Every step can run again: copies are redone, uploads resume,
    /// a restore that finds its files in place completes unchanged.
    fn rerun_safe(&self) -> bool {
        true
    }

    fn default_timeout_secs(&self) -> i64 {
        match self {
            MigrationAction::Copy(_) | MigrationAction::Upload(_) | MigrationAction::Restore(_) => {
                3600
            }
            _ => 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_parse_their_payloads_and_refuse_unknown_fields_and_hostile_paths() {
        let migration = OperationId::new().to_string();
        let copy = MigrationAction::parse(
            "migration.copy",
            json!({"migration": migration, "name": "web", "state_dir": "/srv/web/state", "phase": "warm"}),
        )
        .unwrap();
        assert_eq!(copy.kind(), "migration.copy");
        assert_eq!(copy.payload()["phase"], "warm");
        for (kind, bad) in [
            (
                "migration.copy",
                json!({"migration": migration, "name": "web", "state_dir": "/srv/../etc", "phase": "warm"}),
            ),
            (
                "migration.copy",
                json!({"migration": migration, "name": "web", "state_dir": "srv", "phase": "warm"}),
            ),
            (
                "migration.upload",
                json!({"migration": migration, "name": "web", "extra": 1}),
            ),
            (
                "migration.restore",
                json!({"migration": "nope", "name": "web"}),
            ),
            (
                "migration.health",
                json!({"migration": migration, "name": "web", "port": 0}),
            ),
            (
                "migration.start",
                json!({"migration": migration, "name": "all"}),
            ),
        ] {
            assert!(
                MigrationAction::parse(kind, bad.clone()).is_err(),
                "{kind} {bad}"
            );
        }
    }
}
