//! Reads of observed host state for the typed routes. The API never touches
//! the host: a read answers from `observations`, the last state a worker
//! recorded, and each item carries its `observed_at` (and the operation
//! that observed it, `observed_by`), so a caller knows how fresh it is. A
//! refresh is an operation (the monitor schedules one per family).

use opsqueue_shared::names::Label;
use opsqueue_shared::store::{Observation, observation_list};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::problem::ApiError;
use crate::state::AppState;

/// Observed objects of one kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservedList {
    /// Each object's observed fields plus `observed_at` and `observed_by`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

/// The observation's data with `observed_at` and `observed_by` added.
pub fn item(observation: Observation) -> Value {
    let mut data = match observation.data {
        Value::Object(fields) => fields,
        other => {
            let mut fields = serde_json::Map::new();
            fields.insert("data".into(), other);
            fields
        }
    };
    data.entry("name").or_insert(json!(observation.name));
    data.insert("target".into(), json!(observation.target));
    data.insert("observed_at".into(), json!(observation.observed_at));
    data.insert("observed_by".into(), json!(observation.operation_id));
    Value::Object(data)
}

/// Every observed object of `family`/`kind` on `target`, by name.
pub async fn list(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
) -> Result<ObservedList, ApiError> {
    let target = target.to_string();
    let found = state
        .store
        .call(move |s| s.read(|c| observation_list(c, &target, family, kind, None)))
        .await?;
    Ok(ObservedList {
        items: found.into_iter().map(item).collect(),
    })
}

/// One observed object, or `404 not_found` saying how to observe it.
pub async fn one(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
    name: &str,
    how_to_observe: &str,
) -> Result<Value, ApiError> {
    let (target_text, name_text) = (target.to_string(), name.to_owned());
    let found = state
        .store
        .call(move |s| {
            s.read(|c| observation_list(c, &target_text, family, kind, Some(&name_text)))
        })
        .await?;
    found.into_iter().next().map(item).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no observation of {family} {kind} {name:?} on {target}; {how_to_observe}"
        ))
    })
}
