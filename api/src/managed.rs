//! Reads that join what a worker last observed of a kind of host object
//! with what opsqueue manages of it (the systemd units it installed, the
//! Caddy sites it added), for the typed routes. Both come from the store;
//! the API never touches the host.
//!
//! Each item is the observation (see [`crate::observed::item`]: its data,
//! `name`, `target`, `observed_at`, `observed_by`) plus `managed`: the spec
//! opsqueue applied, with when and by which operation, or `null` for an
//! object opsqueue did not create. A managed object not observed yet (or
//! observed gone) is still listed, with `observed_at: null`: the desired
//! state is known even when the host was not looked at.

use std::collections::BTreeMap;

use opsqueue_shared::names::Label;
use opsqueue_shared::store::{ManagedObject, Observation, managed_list, observation_list};
use serde_json::{Value, json};

use crate::observed::{self, ObservedList};
use crate::problem::ApiError;
use crate::state::AppState;

fn managed_json(managed: &ManagedObject) -> Value {
    json!({
        "spec": managed.spec,
        "operation_id": managed.operation_id,
        "created_at": managed.created_at,
        "updated_at": managed.updated_at,
    })
}

/// One item out of an observation and a managed row (at least one given).
fn joined(
    name: &str,
    target: &str,
    seen: Option<Observation>,
    managed: Option<&ManagedObject>,
) -> Value {
    let mut item = match seen {
        Some(observation) => observed::item(observation),
        None => json!({
            "name": name,
            "target": target,
            "observed_at": null,
            "observed_by": null,
        }),
    };
    item["managed"] = managed.map_or(Value::Null, managed_json);
    item
}

async fn read(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
    name: Option<&str>,
) -> Result<(Vec<Observation>, Vec<ManagedObject>), ApiError> {
    let (target, name) = (target.to_string(), name.map(str::to_owned));
    Ok(state
        .store
        .call(move |s| {
            s.read(|c| {
                Ok((
                    observation_list(c, &target, family, kind, name.as_deref())?,
                    managed_list(c, &target, family, kind, name.as_deref())?,
                ))
            })
        })
        .await?)
}

/// Every observed or managed object of `family`/`kind` on `target`, by name.
pub async fn list(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
) -> Result<ObservedList, ApiError> {
    let (seen, managed) = read(state, target, family, kind, None).await?;
    let managed: BTreeMap<String, ManagedObject> =
        managed.into_iter().map(|m| (m.name.clone(), m)).collect();
    let mut items = BTreeMap::new();
    for observation in seen {
        let name = observation.name.clone();
        let item = joined(
            &name,
            target.as_str(),
            Some(observation),
            managed.get(&name),
        );
        items.insert(name, item);
    }
    for (name, row) in &managed {
        items
            .entry(name.clone())
            .or_insert_with(|| joined(name, target.as_str(), None, Some(row)));
    }
    Ok(ObservedList {
        items: items.into_values().collect(),
    })
}

/// One object, or `404 not_found` saying how to observe it.
pub async fn one(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
    name: &str,
    how_to_observe: &str,
) -> Result<Value, ApiError> {
    let (seen, managed) = read(state, target, family, kind, Some(name)).await?;
    let (seen, managed) = (seen.into_iter().next(), managed.first());
    if seen.is_none() && managed.is_none() {
        return Err(ApiError::NotFound(format!(
            "opsqueue neither observed nor manages {family} {kind} {name:?} on {target}; {how_to_observe}"
        )));
    }
    Ok(joined(name, target.as_str(), seen, managed))
}

/// Whether opsqueue manages `name` on `target`.
pub async fn is_managed(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
    name: &str,
) -> Result<bool, ApiError> {
    let (target, name) = (target.to_string(), name.to_owned());
    let rows = state
        .store
        .call(move |s| s.read(|c| managed_list(c, &target, family, kind, Some(&name))))
        .await?;
    Ok(!rows.is_empty())
}

/// The spec of the object opsqueue manages as `name`, or `404 not_found`.
pub async fn spec(
    state: &AppState,
    target: &Label,
    family: &'static str,
    kind: &'static str,
    name: &str,
) -> Result<Value, ApiError> {
    let (target_text, name_text) = (target.to_string(), name.to_owned());
    let rows = state
        .store
        .call(move |s| s.read(|c| managed_list(c, &target_text, family, kind, Some(&name_text))))
        .await?;
    rows.into_iter().next().map(|row| row.spec).ok_or_else(|| {
        ApiError::NotFound(format!(
            "opsqueue manages no {family} {kind} {name:?} on {target}"
        ))
    })
}
