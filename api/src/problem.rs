//! The API's one error type, [`ApiError`], and its wire form: an RFC 9457
//! `application/problem+json` document with `type`, `title`, `status`,
//! `detail`, a stable machine-readable `code` and, for field-level
//! refusals, `errors`. Every refusal the server makes goes through here,
//! including those of actix's own extractors (see [`json_config`],
//! [`query_config`], [`path_config`]), so a client only ever has to parse
//! one error shape.
//!
//! Caller errors (4xx) say what was wrong; server errors (5xx) never leak
//! internals: the cause is logged and the body says only that it happened.
//! A busy database becomes `503 store_busy` with `Retry-After`, never a raw
//! "database is locked"; a full one `503 storage_full` with `Retry-After`.

use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use opsqueue_shared::store::rusqlite;
use opsqueue_shared::workflow::Refusal;
use opsqueue_shared::{ActionError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// When a caller refused with `storage_full` should come back: freeing
/// space is an operator's job, seconds at best.
pub const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 10;

/// Problem `type`s are `urn:opsqueue:problem:<code>`: stable identifiers,
/// not links.
const TYPE_PREFIX: &str = "urn:opsqueue:problem:";

/// One field a request got wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The request field (or header) at fault.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:opsqueue:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable: branch on this.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{detail}")]
    InvalidRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("the Idempotency-Key header and the idempotency_key field differ")]
    IdempotencyKeyMismatch,
    #[error("{0}")]
    UnknownOperationType(String),
    #[error("{detail}")]
    InvalidPayload {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(
        "this request changes something for a dashboard session and must carry the session's CSRF token (X-CSRF-Token or the csrf form field)"
    )]
    CsrfFailed,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    SourceNotAllowed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotCancellable(String),
    #[error("{0}")]
    NotRetryable(String),
    #[error("a schedule named {0:?} already exists")]
    ScheduleExists(String),
    #[error("{0}")]
    NameTaken(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// A state that does not allow the request now (`409`), with its code.
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{0}")]
    ArtifactTooLarge(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the database is busy; retry shortly")]
    StoreBusy,
    #[error(
        "the database's filesystem is full: nothing can be stored until space is freed; retry later"
    )]
    StorageFull,
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
    #[error("{method} is not served at {path}; it takes {}", .allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<String>,
    },
    /// A refusal actix made on its own, before or outside a handler (an
    /// extractor without an error handler of ours), given its problem form
    /// by [`as_problem`].
    #[error("{detail}")]
    Refused { status: StatusCode, detail: String },
    #[error("an internal error occurred; it has been logged")]
    Internal,
}

impl ApiError {
    /// A 422 for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldError::new(field, message)])
    }

    /// A 422 listing every field at fault.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::InvalidRequest { detail, errors }
    }

    /// A 422 for a workflow's refusals: `invalid_payload` when every one is
    /// inside a step's payload, else `invalid_request`; each names its field.
    pub fn refused(refusals: Vec<Refusal>) -> Self {
        let payload_only = refusals.iter().all(|r| r.payload);
        let errors: Vec<FieldError> = refusals
            .into_iter()
            .map(|r| FieldError::new(&r.field, r.message))
            .collect();
        match Self::invalid_fields(errors) {
            ApiError::InvalidRequest { detail, errors } if payload_only => {
                ApiError::InvalidPayload { detail, errors }
            }
            other => other,
        }
    }

    /// Logs `cause` and answers 500 without repeating it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::Internal
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::IdempotencyKeyMismatch => "idempotency_key_mismatch",
            ApiError::UnknownOperationType(_) => "unknown_operation_type",
            ApiError::InvalidPayload { .. } => "invalid_payload",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::CsrfFailed => "csrf_failed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::SourceNotAllowed(_) => "source_not_allowed",
            ApiError::NotFound(_) => "not_found",
            ApiError::NotCancellable(_) => "not_cancellable",
            ApiError::NotRetryable(_) => "not_retryable",
            ApiError::ScheduleExists(_) => "schedule_exists",
            ApiError::NameTaken(_) => "name_taken",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::Conflict(code, _) => code,
            ApiError::ArtifactTooLarge(_) => "artifact_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::StoreBusy => "store_busy",
            ApiError::StorageFull => "storage_full",
            ApiError::NotReady(_) => "not_ready",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Refused { status, .. } => refused_code(*status),
            ApiError::Internal => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "Malformed JSON",
            ApiError::InvalidRequest { .. } => "Invalid request",
            ApiError::InvalidQuery(_) => "Invalid query string",
            ApiError::InvalidId(_) => "Invalid id",
            ApiError::IdempotencyKeyMismatch => "Conflicting idempotency keys",
            ApiError::UnknownOperationType(_) => "Unknown operation type",
            ApiError::InvalidPayload { .. } => "Invalid payload",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::CsrfFailed => "CSRF token missing or wrong",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::SourceNotAllowed(_) => "Source not allowed",
            ApiError::NotFound(_) => "Not found",
            ApiError::NotCancellable(_) => "Not cancellable",
            ApiError::NotRetryable(_) => "Not retryable",
            ApiError::ScheduleExists(_) => "Schedule exists",
            ApiError::NameTaken(_) => "Name taken",
            ApiError::IdempotencyKeyReused(_) => "Idempotency key reused",
            ApiError::Conflict(..) => "Conflict",
            ApiError::ArtifactTooLarge(_) => "Artifact too large",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::StoreBusy => "Store busy",
            ApiError::StorageFull => "Storage full",
            ApiError::NotReady(_) => "Not ready",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::Refused { status, .. } => status.canonical_reason().unwrap_or("Refused"),
            ApiError::Internal => "Internal error",
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("{TYPE_PREFIX}{}", self.code()),
            title: self.title().to_owned(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            code: self.code().to_owned(),
            errors: match self {
                ApiError::InvalidRequest { errors, .. }
                | ApiError::InvalidPayload { errors, .. } => errors.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidId(_)
            | ApiError::IdempotencyKeyMismatch => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::SourceNotAllowed(_) | ApiError::CsrfFailed => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotCancellable(_)
            | ApiError::NotRetryable(_)
            | ApiError::ScheduleExists(_)
            | ApiError::NameTaken(_)
            | ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } | ApiError::ArtifactTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidRequest { .. }
            | ApiError::UnknownOperationType(_)
            | ApiError::InvalidPayload { .. }
            | ApiError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreBusy | ApiError::StorageFull | ApiError::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Refused { status, .. } => *status,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self {
            ApiError::RateLimited { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::StoreBusy => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::StorageFull => {
                response.insert_header((
                    header::RETRY_AFTER,
                    STORAGE_FULL_RETRY_AFTER_SECS.to_string(),
                ));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.join(", ")));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&self.problem()).expect("a problem always serializes"))
    }
}

/// The code of a refusal actix made on its own, by its status.
fn refused_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        431 => "header_fields_too_large",
        500..=599 => "internal",
        _ => "refused",
    }
}

/// The [`ErrorHandlers`](actix_web::middleware::ErrorHandlers) handler for
/// every 4xx and 5xx answer: one that is already problem+json, or a
/// dashboard page (HTML: a refused sign-in, a form shown again with its
/// errors), passes unchanged; any other (a refusal actix made on its own: a
/// payload over the limit of a raw-bytes extractor, a malformed header, …)
/// is replaced by its problem form, its headers (`Allow`, `Retry-After`)
/// kept.
pub fn as_problem<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let answered = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            value.as_bytes() == PROBLEM_JSON.as_bytes()
                || value.as_bytes().starts_with(b"text/html")
        });
    if answered {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let detail = match response.response().error() {
        Some(error) if status.is_client_error() => error.to_string(),
        Some(error) => {
            tracing::error!(error = %error, %status, "internal error");
            ApiError::Internal.to_string()
        }
        None => status.canonical_reason().unwrap_or("refused").to_owned(),
    };
    let mut problem = ApiError::Refused { status, detail }.error_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ErrorHandlerResponse::Response(
        response.into_response(problem).map_into_right_body(),
    ))
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if matches!(error, StoreError::Full) {
            return ApiError::StorageFull;
        }
        let busy = match &error {
            StoreError::Busy | StoreError::Pool(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        };
        if busy {
            tracing::warn!(error = %error, "store busy; answering 503");
            ApiError::StoreBusy
        } else {
            ApiError::internal(error)
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        match error {
            ActionError::UnknownType(_) => ApiError::UnknownOperationType(error.to_string()),
            ActionError::InvalidPayload { ref message, .. } => ApiError::InvalidPayload {
                errors: error
                    .field()
                    .map(|field| vec![FieldError::new(field, message.clone())])
                    .unwrap_or_default(),
                detail: error.to_string(),
            },
        }
    }
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidRequest {
            detail: e.to_string(),
            errors: Vec::new(),
        },
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        JsonPayloadError::Payload(e) => {
            ApiError::MalformedJson(format!("cannot read the body: {e}"))
        }
        other => ApiError::internal(other),
    }
}

/// JSON bodies: size limit, content type and errors as problems.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|error, _req: &HttpRequest| json_error(error).into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _req: &HttpRequest| {
        let QueryPayloadError::Deserialize(e) = &error else {
            return ApiError::InvalidQuery(error.to_string()).into();
        };
        ApiError::InvalidQuery(e.to_string()).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error, _req: &HttpRequest| {
        let PathError::Deserialize(e) = &error else {
            return ApiError::InvalidId(error.to_string()).into();
        };
        ApiError::InvalidId(format!("invalid path: {e}")).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn every_problem_carries_its_code_in_type_and_code() {
        let error = ApiError::invalid_field("priority", "must be between 0 and 9");
        let problem = error.problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "invalid_request");
        assert_eq!(problem.kind, "urn:opsqueue:problem:invalid_request");
        assert_eq!(problem.detail, "priority: must be between 0 and 9");
        assert_eq!(problem.errors.len(), 1);
    }

    #[test]
    fn a_rate_limited_answer_says_when_to_come_back() {
        let response = ApiError::RateLimited {
            retry_after_secs: 2,
        }
        .error_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
    }

    #[test]
    fn an_internal_error_does_not_leak_its_cause() {
        let error: ApiError = StoreError::Corrupt("secret row detail".into()).into();
        let body = error.error_response().into_body().try_into_bytes().unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");
    }

    #[test]
    fn a_busy_store_is_a_503_never_a_raw_lock_message() {
        let error: ApiError = StoreError::Busy.into();
        let response = error.error_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let text =
            String::from_utf8(response.into_body().try_into_bytes().unwrap().to_vec()).unwrap();
        assert!(!text.contains("locked"), "{text}");
    }
}
