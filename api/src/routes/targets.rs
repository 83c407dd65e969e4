//! `/api/v1/targets`: the servers operations run on (the registry). Each
//! target with its status (`online` while a worker serving it heartbeats
//! within its lease, `offline` after, `unknown` if none ever did), the
//! workers serving it, the host facts of the newest heartbeat, its pending
//! and running counts, and what people said of it (`PUT`: description,
//! labels, role). A target is known once a worker served it, someone
//! described it, or an operation names it.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, put, web};
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{Target, TargetDescription, target_describe, target_get, target_list};
use opsqueue_shared::time;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Longest description.
pub const MAX_DESCRIPTION: usize = 1000;
/// Most labels on one target.
pub const MAX_LABELS: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 255;

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    pub items: Vec<Target>,
}

fn parse_name(name: &str) -> Result<Label, ApiError> {
    Label::parse(name).map_err(|e| ApiError::InvalidId(e.to_string()))
}

/// List targets.
#[utoipa::path(
    tag = "targets",
    responses((status = 200, description = "Every known target, by name", body = TargetList)),
)]
#[get("/api/v1/targets")]
pub async fn list_targets(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state
        .store
        .call(|s| s.read(|c| target_list(c, None, time::now())))
        .await?;
    Ok(HttpResponse::Ok().json(TargetList { items }))
}

/// Read one target.
#[utoipa::path(
    tag = "targets",
    params(("name" = inline(Label), Path, description = "Target name")),
    responses(
        (status = 200, description = "The target", body = Target),
        (status = 400, description = "Malformed name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing knows of this target", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/targets/{name}")]
pub async fn get_target(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let wanted = name.to_string();
    let target = state
        .store
        .call(move |s| s.read(|c| target_get(c, &wanted, time::now())))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no target {name}")))?;
    Ok(HttpResponse::Ok().json(target))
}

/// What a person says of a target; replaces what was said before.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeBody {
    /// Free text, at most 1000 bytes.
    pub description: Option<String>,
    /// `{name: value}`: names are labels, values at most 255 bytes; at
    /// most 64.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A label such as `app`, `db`, `edge`.
    pub role: Option<String>,
}

impl DescribeBody {
    fn parse(self) -> Result<TargetDescription, ApiError> {
        let mut errors = Vec::new();
        if let Some(description) = &self.description
            && (description.len() > MAX_DESCRIPTION || description.chars().any(char::is_control))
        {
            errors.push(crate::problem::FieldError::new(
                "description",
                format!("at most {MAX_DESCRIPTION} bytes, no control characters"),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            errors.push(crate::problem::FieldError::new(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for (name, value) in &self.labels {
            if let Err(e) = Label::parse(name) {
                errors.push(crate::problem::FieldError::new("labels", e.to_string()));
            }
            if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
                errors.push(crate::problem::FieldError::new(
                    "labels",
                    format!(
                        "the value of {name:?}: at most {MAX_LABEL_VALUE} bytes, no control characters"
                    ),
                ));
            }
        }
        if let Some(role) = &self.role
            && let Err(e) = Label::parse(role)
        {
            errors.push(crate::problem::FieldError::new("role", e.to_string()));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(errors));
        }
        Ok(TargetDescription {
            description: self.description,
            labels: self.labels,
            role: self.role,
        })
    }
}

/// Describe a target.
///
/// Stores its description, labels and role (replacing what was said
/// before); the target need not have been seen yet.
#[utoipa::path(
    tag = "targets",
    params(("name" = inline(Label), Path, description = "Target name")),
    request_body = DescribeBody,
    responses(
        (status = 200, description = "The target as it is now", body = Target),
        (status = 400, description = "Malformed name or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field out of bounds", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/api/v1/targets/{name}")]
pub async fn describe_target(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<DescribeBody>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?.to_string();
    let description = body.into_inner().parse()?;
    let target = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = time::now();
                target_describe(tx, &name, &description, now)?;
                target_get(tx, &name, now)
            })
        })
        .await?
        .ok_or(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(target))
}
