//! The migration workflow, built in code from a parsed request: every step
//! with the target it runs on (the source's worker copies and uploads, the
//! target's restores and starts) and, for each change, the step that undoes
//! it. The API stores it exactly as a workflow sent to
//! `POST /api/v1/workflows`.
//!
//! inspect (source) → preflight (target) → warm copy (source; undone by
//! discard) → stop (source; undone by a start) → final copy (source) →
//! upload (source) → restore (target; undone by discard) → start (target;
//! undone by a delete) → health (target). A step that fails for good undoes
//! the completed ones in reverse: the target's copy and app removed, the
//! source started again. The source's state is never removed.

use serde_json::{Value, json};

use super::actions::CopyPhase;
use crate::OperationId;
use crate::families::pm2::ProcessName;
use crate::names::{AbsolutePath, Label, Port};
use crate::workflow::{CompensateBody, OnFailure, StepBody, WorkflowBody};

/// A pm2 app's migration, parsed and checked against what opsqueue manages.
#[derive(Debug, Clone)]
pub struct Pm2Migration {
    pub migration: OperationId,
    pub name: ProcessName,
    pub source: Label,
    pub target: Label,
    /// The app's state directory as the source recorded it.
    pub state_dir: AbsolutePath,
    pub port: Option<Port>,
    /// The health step's timeout (the check's own bound plus a margin).
    pub health_timeout_secs: i64,
}

/// The names of the steps, in order.
pub const STEPS: &[&str] = &[
    "inspect",
    "preflight",
    "warm",
    "stop",
    "final",
    "upload",
    "restore",
    "start",
    "health",
];

fn step(name: &str, kind: &str, payload: Value, target: &Label, after: &[&str]) -> StepBody {
    StepBody {
        name: name.to_owned(),
        kind: kind.to_owned(),
        payload,
        target: Some(target.to_string()),
        depends_on: after.iter().map(|s| (*s).to_owned()).collect(),
        compensate: None,
        timeout_secs: None,
        max_attempts: None,
    }
}

fn undo(mut step: StepBody, kind: &str, payload: Value) -> StepBody {
    step.compensate = Some(CompensateBody {
        kind: kind.to_owned(),
        payload,
    });
    step
}

impl Pm2Migration {
    /// The workflow (as `POST /api/v1/workflows` takes it).
    pub fn plan(&self) -> WorkflowBody {
        let named = json!({"migration": self.migration, "name": self.name});
        let app = json!({"name": self.name});
        let copy = |phase: CopyPhase| {
            json!({"migration": self.migration, "name": self.name,
                   "state_dir": self.state_dir, "phase": phase})
        };
        let mut probe = named.clone();
        if let Some(port) = self.port {
            probe["port"] = json!(port);
        }
        let (source, target) = (&self.source, &self.target);
        let mut health = step(
            "health",
            "migration.health",
            probe.clone(),
            target,
            &["start"],
        );
        health.timeout_secs = Some(self.health_timeout_secs);
        let steps = vec![
            step(
                "inspect",
                "migration.inspect",
                json!({"migration": self.migration, "name": self.name, "state_dir": self.state_dir}),
                source,
                &[],
            ),
            step(
                "preflight",
                "migration.preflight",
                probe,
                target,
                &["inspect"],
            ),
            undo(
                step(
                    "warm",
                    "migration.copy",
                    copy(CopyPhase::Warm),
                    source,
                    &["preflight"],
                ),
                "migration.discard",
                named.clone(),
            ),
            undo(
                step("stop", "pm2.stop", app.clone(), source, &["warm"]),
                "pm2.start",
                app.clone(),
            ),
            step(
                "final",
                "migration.copy",
                copy(CopyPhase::Final),
                source,
                &["stop"],
            ),
            step(
                "upload",
                "migration.upload",
                named.clone(),
                source,
                &["final"],
            ),
            undo(
                step(
                    "restore",
                    "migration.restore",
                    named.clone(),
                    target,
                    &["upload", "inspect"],
                ),
                "migration.discard",
                named.clone(),
            ),
            undo(
                step(
                    "start",
                    "migration.start",
                    named.clone(),
                    target,
                    &["restore", "inspect"],
                ),
                "pm2.delete",
                app,
            ),
            health,
        ];
        WorkflowBody {
            name: Some(format!("migration-{}", self.name)),
            steps,
            on_failure: OnFailure::Compensate,
            target: Some(self.source.to_string()),
            source: None,
            priority: None,
            idempotency_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_runs_each_step_on_its_side_and_undoes_every_change() {
        let migration = Pm2Migration {
            migration: OperationId::new(),
            name: ProcessName::parse("web").unwrap(),
            source: Label::parse("a").unwrap(),
            target: Label::parse("b").unwrap(),
            state_dir: AbsolutePath::parse("/srv/web/state").unwrap(),
            port: None,
            health_timeout_secs: 120,
        };
        let request = migration
            .plan()
            .parse(Label::parse("api").unwrap())
            .expect("the plan parses as a workflow");
        let names: Vec<&str> = request.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, STEPS);
        let sides: Vec<&str> = request
            .steps
            .iter()
            .map(|s| s.request.target.as_str())
            .collect();
        assert_eq!(sides, ["a", "b", "a", "a", "a", "a", "b", "b", "b"]);
        let undone: Vec<(&str, &str)> = request
            .steps
            .iter()
            .filter_map(|s| s.compensate.as_ref().map(|c| (s.name.as_str(), c.kind())))
            .collect();
        assert_eq!(
            undone,
            [
                ("warm", "migration.discard"),
                ("stop", "pm2.start"),
                ("restore", "migration.discard"),
                ("start", "pm2.delete")
            ]
        );
    }
}
