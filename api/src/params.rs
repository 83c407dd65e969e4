//! Path and query parameters the routes share: an operation's id and the
//! `?target=` of typed routes and reads.

use opsqueue_shared::OperationId;
use opsqueue_shared::names::Label;

use crate::problem::ApiError;

/// An operation's (or a workflow's) id in a path: `400 invalid_id` if it
/// is not a UUID.
pub fn operation_id(text: &str) -> Result<OperationId, ApiError> {
    text.parse()
        .map_err(|e: opsqueue_shared::operation::InvalidOperationId| {
            ApiError::InvalidId(e.to_string())
        })
}

/// The `?target=` of a typed route or read (default `local`).
pub fn target_label(text: Option<&str>) -> Result<Label, ApiError> {
    match text {
        Some(text) => {
            Label::parse(text).map_err(|e| ApiError::invalid_field("target", e.to_string()))
        }
        None => Ok(Label::local()),
    }
}
