//! Workflows: operations composed into a graph, with compensation.
//!
//! A workflow is an operation of type [`WORKFLOW_KIND`] (the parent) whose
//! steps are ordinary operations (`parent_id` set, plus the step's name),
//! stored with the parent in one transaction. A step becomes claimable when
//! every step it `depends_on` has completed; a step may name a
//! `compensate` action that undoes it if the workflow fails later.
//!
//! This module parses a request into a [`WorkflowRequest`] — every step's
//! payload through the same action parsers as a single operation, names
//! unique, dependencies known, no cycle, at most [`MAX_STEPS`] steps — and
//! prepares the rows the store inserts ([`NewWorkflow`]). Nothing here
//! touches the store or the host, so the API and the `opsqueue` client
//! apply the same rules. Steps are ordered so that every step comes after
//! the steps it depends on: their ids (UUIDv7, increasing) then never point
//! a dependency forward, which keeps per-resource order free of deadlocks.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::families::{Action, ActionError};
use crate::names::Label;
use crate::operation::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_MAX_ATTEMPTS, MAX_TIMEOUT_SECS, NewOperation,
    OperationId, OperationRequest, hex,
};
use crate::secret::split_secrets;
use crate::time::Timestamp;

/// The parent operation's type.
pub const WORKFLOW_KIND: &str = "workflow.run";

/// The most steps one workflow may have.
pub const MAX_STEPS: usize = 1_000;

crate::name_type!(
    /// A step's name, unique in its workflow: letters, digits and `._-`.
    StepName, "step name", max = 64, extra = "._-"
);

/// What a workflow does when a step fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Cancel what can no longer run, let running steps finish, then run
    /// the compensations of the completed steps in reverse order.
    #[default]
    Compensate,
    /// The same without compensations.
    Stop,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Compensate => "compensate",
            OnFailure::Stop => "stop",
        }
    }
}

/// `POST /api/v1/workflows`, as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBody {
    pub name: Option<String>,
    pub steps: Vec<StepBody>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The steps' default target.
    pub target: Option<String>,
    pub source: Option<String>,
    /// The steps' priority, 0..=9 (default 5).
    pub priority: Option<i64>,
    /// Or the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// One step, as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    pub target: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub compensate: Option<CompensateBody>,
    pub timeout_secs: Option<i64>,
    pub max_attempts: Option<i64>,
}

/// A step's compensation, as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompensateBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
}

/// One field a workflow request got wrong; `payload` when it is inside a
/// step's (or a compensation's) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
    pub payload: bool,
}

impl Refusal {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            payload: false,
        }
    }

    /// An action parser's refusal of what `at` (`steps[2]`,
    /// `steps[2].compensate`) holds.
    fn action(at: &str, error: ActionError) -> Self {
        match &error {
            ActionError::UnknownType(_) => Self::new(format!("{at}.type"), error.to_string()),
            ActionError::InvalidPayload { message, .. } => Self {
                field: match error.field() {
                    Some(inner) if inner.starts_with('[') => format!("{at}.payload{inner}"),
                    Some(inner) => format!("{at}.payload.{inner}"),
                    None => format!("{at}.payload"),
                },
                message: message.clone(),
                payload: true,
            },
        }
    }
}

/// A step parsed into types.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub name: StepName,
    /// The step's operation (its target, timeout and attempts included).
    pub request: OperationRequest,
    /// The steps it waits for, as indices into [`WorkflowRequest::steps`]
    /// (always smaller than its own).
    pub depends_on: Vec<usize>,
    pub compensate: Option<Action>,
}

/// A workflow request parsed into types, its steps in dependency order.
#[derive(Debug, Clone)]
pub struct WorkflowRequest {
    pub name: Option<StepName>,
    pub on_failure: OnFailure,
    pub source: Label,
    pub target: Label,
    pub priority: Option<i64>,
    pub idempotency_key: Option<String>,
    pub steps: Vec<StepRequest>,
}

fn check_range(refusals: &mut Vec<Refusal>, field: String, value: Option<i64>, min: i64, max: i64) {
    if let Some(value) = value
        && !(min..=max).contains(&value)
    {
        refusals.push(Refusal::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
}

fn label(refusals: &mut Vec<Refusal>, field: String, value: Option<&str>) -> Option<Label> {
    Label::parse(value?)
        .map_err(|e| refusals.push(Refusal::new(field, e.to_string())))
        .ok()
}

impl WorkflowBody {
    /// The body out of JSON; a refusal names the field at fault
    /// (`steps[1].depends_on`).
    pub fn from_json(value: Value) -> Result<Self, Refusal> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".into() } else { path };
            Refusal::new(field, e.into_inner().to_string())
        })
    }

    /// Everything checked, nothing stored. `source` is the one the caller
    /// may use (the API resolves the key's source first).
    pub fn parse(self, source: Label) -> Result<WorkflowRequest, Vec<Refusal>> {
        let mut refusals = Vec::new();
        let name = self.name.as_deref().and_then(|name| {
            StepName::parse(name)
                .map_err(|e| refusals.push(Refusal::new("name", e.to_string())))
                .ok()
        });
        let target = label(&mut refusals, "target".into(), self.target.as_deref());
        check_range(&mut refusals, "priority".into(), self.priority, 0, 9);
        if self.steps.is_empty() {
            refusals.push(Refusal::new("steps", "a workflow needs at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            refusals.push(Refusal::new(
                "steps",
                format!("at most {MAX_STEPS} steps, got {}", self.steps.len()),
            ));
            return Err(refusals);
        }
        let mut index = HashMap::new();
        let mut names = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            match StepName::parse(&step.name) {
                Ok(name) => {
                    if index.insert(name.clone(), i).is_some() {
                        refusals.push(Refusal::new(
                            format!("steps[{i}].name"),
                            format!("a step named {name} comes earlier"),
                        ));
                    }
                    names.push(Some(name));
                }
                Err(e) => {
                    refusals.push(Refusal::new(format!("steps[{i}].name"), e.to_string()));
                    names.push(None);
                }
            }
        }
        let mut parsed = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.into_iter().enumerate() {
            let at = format!("steps[{i}]");
            let StepBody {
                kind,
                payload,
                target,
                depends_on: dependencies,
                compensate,
                timeout_secs,
                max_attempts,
                ..
            } = step;
            let action = Action::parse(&kind, payload)
                .map_err(|e| refusals.push(Refusal::action(&at, e)))
                .ok();
            let compensate = compensate.and_then(|c| {
                Action::parse(&c.kind, c.payload)
                    .map_err(|e| refusals.push(Refusal::action(&format!("{at}.compensate"), e)))
                    .ok()
            });
            let step_target = label(&mut refusals, format!("{at}.target"), target.as_deref());
            check_range(
                &mut refusals,
                format!("{at}.timeout_secs"),
                timeout_secs,
                1,
                MAX_TIMEOUT_SECS,
            );
            check_range(
                &mut refusals,
                format!("{at}.max_attempts"),
                max_attempts,
                1,
                MAX_MAX_ATTEMPTS,
            );
            let mut depends_on = Vec::new();
            for (j, dependency) in dependencies.iter().enumerate() {
                let found = StepName::parse(dependency)
                    .ok()
                    .and_then(|name| index.get(&name).copied());
                match found {
                    Some(k) if k == i => refusals.push(Refusal::new(
                        format!("{at}.depends_on[{j}]"),
                        "a step cannot depend on itself",
                    )),
                    Some(k) if !depends_on.contains(&k) => depends_on.push(k),
                    Some(_) => {}
                    None => refusals.push(Refusal::new(
                        format!("{at}.depends_on[{j}]"),
                        format!("no step named {dependency:?}"),
                    )),
                }
            }
            parsed.push((
                action,
                compensate,
                step_target,
                depends_on,
                (timeout_secs, max_attempts),
            ));
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        let names: Vec<StepName> = names.into_iter().map(Option::unwrap).collect();
        let edges: Vec<Vec<usize>> = parsed.iter().map(|p| p.3.clone()).collect();
        let order = match dependency_order(&edges) {
            Ok(order) => order,
            Err(cycle) => {
                let path: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
                return Err(vec![Refusal::new(
                    "steps",
                    format!(
                        "the steps depend on each other in a cycle: {}",
                        path.join(" → ")
                    ),
                )]);
            }
        };
        let target = target.unwrap_or_else(Label::local);
        let mut position = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            position[old] = new;
        }
        let mut slots: Vec<Option<_>> = parsed.into_iter().map(Some).collect();
        let steps = order
            .iter()
            .map(|&old| {
                let (action, compensate, step_target, depends_on, (timeout_secs, max_attempts)) =
                    slots[old].take().expect("each step once");
                let mut depends_on: Vec<usize> = depends_on.iter().map(|&d| position[d]).collect();
                depends_on.sort_unstable();
                StepRequest {
                    name: names[old].clone(),
                    request: OperationRequest {
                        source: source.clone(),
                        target: step_target.unwrap_or_else(|| target.clone()),
                        priority: self.priority,
                        timeout_secs,
                        max_attempts,
                        ..OperationRequest::new(action.expect("parsed when nothing was refused"))
                    },
                    depends_on,
                    compensate,
                }
            })
            .collect();
        Ok(WorkflowRequest {
            name,
            on_failure: self.on_failure,
            source,
            target,
            priority: self.priority,
            idempotency_key: self.idempotency_key,
            steps,
        })
    }
}

/// The steps in an order where each comes after those it depends on
/// (stable: otherwise in the order given), or a cycle as indices, its first
/// step repeated at the end.
fn dependency_order(depends_on: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let count = depends_on.len();
    let mut waiting: Vec<usize> = depends_on.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); count];
    for (step, deps) in depends_on.iter().enumerate() {
        for &dep in deps {
            dependents[dep].push(step);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..count).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(step) = ready.pop_first() {
        order.push(step);
        for &next in &dependents[step] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.insert(next);
            }
        }
    }
    if order.len() == count {
        return Ok(order);
    }
    // Every step left waits on another step left: walk until one repeats.
    let left: Vec<bool> = waiting.iter().map(|&w| w > 0).collect();
    let mut seen = vec![None; count];
    let mut path = Vec::new();
    let mut step = (0..count).find(|&i| left[i]).expect("a step is left");
    loop {
        if let Some(at) = seen[step] {
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.push(step);
            return Err(cycle);
        }
        seen[step] = Some(path.len());
        path.push(step);
        step = *depends_on[step]
            .iter()
            .find(|&&d| left[d])
            .expect("a step left waits on one left");
    }
}

/// A step's compensation, ready to become an operation when needed.
#[derive(Debug, Clone)]
pub struct NewCompensation {
    pub kind: String,
    pub payload: Value,
    pub secrets: Option<Value>,
    pub resource: Option<String>,
    pub rerun_safe: bool,
    pub timeout_secs: i64,
    pub max_attempts: i64,
}

impl NewCompensation {
    pub fn of(action: &Action) -> Self {
        let (payload, secrets) = split_secrets(action.payload(), action.secret_fields());
        Self {
            kind: action.kind().to_owned(),
            payload,
            secrets,
            resource: action.resource(),
            rerun_safe: action.rerun_safe(),
            timeout_secs: action.default_timeout_secs(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// One step's rows.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub operation: NewOperation,
    /// Indices of the steps it waits for (all smaller than its own).
    pub depends_on: Vec<usize>,
    pub compensation: Option<NewCompensation>,
}

/// What `workflow_insert` stores: the parent, its steps, their
/// dependencies and compensations.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub parent: NewOperation,
    pub name: Option<String>,
    pub on_failure: OnFailure,
    pub steps: Vec<NewStep>,
}

impl WorkflowRequest {
    /// The rows to insert, accepted at `now`.
    pub fn prepare(&self, now: Timestamp) -> NewWorkflow {
        let parent_id = OperationId::new();
        let steps: Vec<NewStep> = self
            .steps
            .iter()
            .map(|step| {
                let mut operation = step.request.prepare(now);
                operation.parent_id = Some(parent_id);
                operation.step = Some(step.name.to_string());
                operation.deps_left = step.depends_on.len() as i64;
                NewStep {
                    operation,
                    depends_on: step.depends_on.clone(),
                    compensation: step.compensate.as_ref().map(NewCompensation::of),
                }
            })
            .collect();
        let step_names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        let mut payload = json!({"on_failure": self.on_failure, "steps": step_names});
        if let Some(name) = &self.name {
            payload["name"] = json!(name);
        }
        NewWorkflow {
            parent: NewOperation {
                id: parent_id,
                kind: WORKFLOW_KIND.to_owned(),
                payload,
                secrets: None,
                source: self.source.to_string(),
                target: self.target.to_string(),
                resource: None,
                priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
                run_at: now,
                max_attempts: 1,
                timeout_secs: MAX_TIMEOUT_SECS,
                rerun_safe: false,
                idempotency_key: self.idempotency_key.clone(),
                request_hash: self.fingerprint(),
                parent_id: None,
                step: None,
                compensates: None,
                // The store runs a workflow's parent, never a worker.
                deps_left: 1,
                created_at: now,
            },
            name: self.name.as_ref().map(ToString::to_string),
            on_failure: self.on_failure,
            steps,
        }
    }

    /// sha256 over what the caller chose, so a replay of the same request
    /// with the same idempotency key matches.
    fn fingerprint(&self) -> String {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|step| {
                json!({
                    "name": step.name,
                    "type": step.request.action.kind(),
                    "payload": step.request.action.payload(),
                    "target": step.request.target.as_str(),
                    "timeout_secs": step.request.timeout_secs,
                    "max_attempts": step.request.max_attempts,
                    "depends_on": step.depends_on,
                    "compensate": step.compensate.as_ref().map(|c| json!({
                        "type": c.kind(), "payload": c.payload(),
                    })),
                })
            })
            .collect();
        let canonical = json!({
            "type": WORKFLOW_KIND,
            "name": self.name,
            "on_failure": self.on_failure,
            "target": self.target.as_str(),
            "priority": self.priority,
            "steps": steps,
        });
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// The refusals of steps (and compensations) the configuration does
    /// not allow (a disabled family, a path outside a base directory).
    pub fn check_config(&self, config: &crate::config::Config) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if let Err(e) = step.request.action.check_config(config) {
                refusals.push(Refusal::action(&at, e));
            }
            if let Some(compensate) = &step.compensate
                && let Err(e) = compensate.check_config(config)
            {
                refusals.push(Refusal::action(&format!("{at}.compensate"), e));
            }
        }
        refusals
    }
}

/// A step's inputs: the results of the steps it depends on, by name.
pub type Inputs = BTreeMap<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> WorkflowBody {
        serde_json::from_value(value).unwrap()
    }

    fn refusals(value: Value) -> Vec<Refusal> {
        body(value).parse(Label::api()).unwrap_err()
    }

    fn step(name: &str, depends_on: &[&str]) -> Value {
        json!({"name": name, "type": "diag.noop", "depends_on": depends_on})
    }

    #[test]
    fn steps_come_after_the_steps_they_depend_on() {
        let request = body(json!({"steps": [
            step("d", &["b", "c"]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("a", &[]),
        ]}))
        .parse(Label::api())
        .unwrap();
        let names: Vec<&str> = request.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(request.steps[3].depends_on, [1, 2]);
        let new = request.prepare(crate::time::now());
        let ids: Vec<OperationId> = new.steps.iter().map(|s| s.operation.id).collect();
        assert!(new.parent.id < ids[0] && ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(new.steps[3].operation.deps_left, 2);
        assert_eq!(new.parent.deps_left, 1);
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let refused = refusals(json!({"steps": [
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"]),
            step("d", &[]),
        ]}));
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "steps");
        assert!(
            refused[0].message.ends_with("a → c → b → a"),
            "{}",
            refused[0].message
        );
        let refused = refusals(json!({"steps": [step("a", &["a"])]}));
        assert_eq!(refused[0].field, "steps[0].depends_on[0]");
    }

    #[test]
    fn each_refusal_names_its_field() {
        let refused = refusals(json!({"steps": [
            step("a", &[]),
            step("a", &["nope"]),
            {"name": "c", "type": "diag.sleep", "payload": {"seconds": "x"}},
            {"name": "d", "type": "nope.never"},
            {"name": "-e", "type": "diag.noop", "timeout_secs": 0},
            {"name": "f", "type": "diag.noop", "compensate": {"type": "diag.fail", "payload": {}}},
        ]}));
        let fields: Vec<&str> = refused.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "steps[1].name",
                "steps[4].name",
                "steps[1].depends_on[0]",
                "steps[2].payload.seconds",
                "steps[3].type",
                "steps[4].timeout_secs",
                "steps[5].compensate.payload",
            ]
        );
        assert!(refused[3].payload && !refused[0].payload);
        let too_many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), &[]))
            .collect();
        assert_eq!(refusals(json!({"steps": too_many}))[0].field, "steps");
        assert_eq!(refusals(json!({"steps": []}))[0].field, "steps");
    }
}
