//! Accepting an operation: the request body is parsed into an
//! [`OperationRequest`] (typed action, labels, ranges, idempotency key) before
//! anything is written, so a refusal stores nothing; then the
//! [`crate::enqueuer::Enqueuer`] commits it in a group commit.
//!
//! Durability: the 202 is sent only after the transaction holding the row
//! committed with `synchronous = FULL`, so an accepted operation survives a
//! power cut. Concurrent requests share one transaction (and one fsync).
//!
//! Idempotency: a key (the `idempotency_key` field or the `Idempotency-Key`
//! header, an RFC 8941 string or a bare token) is scoped to the source. A
//! replay of the same request answers `202` again with the first operation
//! and `Idempotent-Replayed: true`; the same key with a different request is
//! `422 idempotency_key_reused`. The batcher applies requests one after the
//! other inside its transaction (and every write transaction is `BEGIN
//! IMMEDIATE`), so concurrent duplicates, even from two API processes, find
//! the first row instead of inserting a second; the unique index on
//! `(source, idempotency_key)` is the backstop.
//!
//! Source: a key bound to a source label stamps it on its operations; naming
//! another source is `403 source_not_allowed` unless the key is admin.
//! Without either, the source is `api`.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use opsqueue_shared::names::Label;
use opsqueue_shared::operation::{MAX_IDEMPOTENCY_KEY_LEN, MAX_MAX_ATTEMPTS, MAX_TIMEOUT_SECS};
use opsqueue_shared::store::{ApiKey, Inserted, Scope};
use opsqueue_shared::{Action, OperationRequest};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::params::target_label;
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// `POST /api/v1/operations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// `family.verb`, e.g. `diag.noop`.
    #[serde(rename = "type")]
    #[schema(schema_with = operation_type_schema)]
    pub kind: String,
    /// The action's parameters; checked against the type.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Value,
    /// Who asks (default: the key's source, else `api`).
    #[schema(schema_with = optional_label)]
    pub source: Option<String>,
    /// Which host's worker runs it (default `local`).
    #[schema(schema_with = optional_label)]
    pub target: Option<String>,
    /// 0..=9, lower runs first (default 5).
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
    /// Not before this time (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// 1 to 604800 (a week); default: the action's.
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_secs: Option<i64>,
    /// 1 to 100; default 3.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i64>,
    /// Or the `Idempotency-Key` header: printable ASCII, 1 to 255 bytes.
    #[schema(schema_with = optional_idempotency_key)]
    pub idempotency_key: Option<String>,
}

/// Every operation type of the catalogue.
pub fn operation_type_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let kinds: Vec<&str> = opsqueue_shared::families::catalogue()
        .iter()
        .map(|info| info.kind)
        .collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(kinds))
        .into()
}

fn optional_label() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    opsqueue_shared::names::nullable(Label::schema())
}

/// An idempotency key: printable ASCII, 1 to 255 bytes.
pub fn idempotency_key_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some("^[ -~]+$"))
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY_LEN))
        .into()
}

fn optional_idempotency_key() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    opsqueue_shared::names::nullable(idempotency_key_schema())
}

/// Adds a field error unless `value` is absent or within `min..=max`.
pub fn check_range(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
) {
    if let Some(value) = value
        && !(min..=max).contains(&value)
    {
        errors.push(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
}

fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} bytes"));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("must be printable ASCII".into());
    }
    Ok(())
}

/// The `Idempotency-Key` header: an RFC 8941 string (`"abc"`) or, leniently,
/// a bare token (`abc`).
pub fn idempotency_key_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let refuse = |message: &str| ApiError::invalid_field("Idempotency-Key", message);
    let text = value
        .to_str()
        .map_err(|_| refuse("must be printable ASCII"))?
        .trim();
    let key = match text.strip_prefix('"') {
        Some(quoted) => {
            let inner = quoted
                .strip_suffix('"')
                .ok_or_else(|| refuse("a quoted key must end with a quote"))?;
            let mut key = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(escaped @ ('"' | '\\')) => key.push(escaped),
                        _ => return Err(refuse("only \\\" and \\\\ may be escaped")),
                    },
                    '"' => return Err(refuse("an inner quote must be escaped")),
                    c => key.push(c),
                }
            }
            key
        }
        None => text.to_owned(),
    };
    check_idempotency_key(&key).map_err(|m| refuse(&m))?;
    Ok(Some(key))
}

/// The key of a request: the header's or the body field's (both given must
/// agree).
pub(crate) fn idempotency_key(
    header: Option<String>,
    field: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (header, field) {
        (Some(header), Some(field)) if header != field => Err(ApiError::IdempotencyKeyMismatch),
        (header, field) => Ok(header.or(field)),
    }
}

/// The source an operation made by `key` gets.
pub(crate) fn resolve_source(requested: Option<Label>, key: &ApiKey) -> Result<Label, ApiError> {
    let bound = match &key.source {
        Some(text) => Some(Label::parse(text).map_err(ApiError::internal)?),
        None => None,
    };
    match (requested, bound) {
        (Some(asked), Some(bound)) if asked != bound && !key.allows(Scope::Admin) => {
            Err(ApiError::SourceNotAllowed(format!(
                "this API key may only create operations with source {bound:?}, not {asked:?}",
                bound = bound.as_str(),
                asked = asked.as_str()
            )))
        }
        (Some(asked), _) => Ok(asked),
        (None, Some(bound)) => Ok(bound),
        (None, None) => Ok(Label::api()),
    }
}

fn parse_label(errors: &mut Vec<FieldError>, field: &str, value: Option<&str>) -> Option<Label> {
    let value = value?;
    Label::parse(value)
        .map_err(|e| errors.push(FieldError::new(field, e.to_string())))
        .ok()
}

impl EnqueueBody {
    /// Everything checked, nothing stored: the request the store will take.
    pub fn parse(
        self,
        header_key: Option<String>,
        caller: &ApiKey,
    ) -> Result<OperationRequest, ApiError> {
        let idempotency_key = idempotency_key(header_key, self.idempotency_key)?;
        let mut errors = Vec::new();
        let source = parse_label(&mut errors, "source", self.source.as_deref());
        let target = parse_label(&mut errors, "target", self.target.as_deref());
        check_range(&mut errors, "priority", self.priority, 0, 9);
        check_range(
            &mut errors,
            "timeout_secs",
            self.timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        );
        check_range(
            &mut errors,
            "max_attempts",
            self.max_attempts,
            1,
            MAX_MAX_ATTEMPTS,
        );
        if let Some(key) = &idempotency_key
            && let Err(message) = check_idempotency_key(key)
        {
            errors.push(FieldError::new("idempotency_key", message));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(errors));
        }
        let source = resolve_source(source, caller)?;
        let action = Action::parse(&self.kind, self.payload)?;
        Ok(OperationRequest {
            source,
            target: target.unwrap_or_else(Label::local),
            priority: self.priority,
            run_at: self.run_at,
            timeout_secs: self.timeout_secs,
            max_attempts: self.max_attempts,
            idempotency_key,
            ..OperationRequest::new(action)
        })
    }
}

pub fn operation_location(id: impl std::fmt::Display) -> String {
    format!("/api/v1/operations/{id}")
}

/// The answer to an accepted (or replayed) operation: 202, `Location`,
/// `Retry-After`, the operation.
pub fn accepted(inserted: Inserted) -> Result<HttpResponse, ApiError> {
    let (operation, replayed) = match inserted {
        Inserted::Created(op) => (op, false),
        Inserted::Replayed(op) => (op, true),
        Inserted::KeyReused(op) => {
            return Err(ApiError::IdempotencyKeyReused(format!(
                "idempotency key {:?} was already used by operation {} for a different request",
                op.idempotency_key.as_deref().unwrap_or_default(),
                op.id
            )));
        }
    };
    let mut response = HttpResponse::Accepted();
    response
        .insert_header((header::LOCATION, operation_location(operation.id)))
        .insert_header((header::RETRY_AFTER, "1"));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED_HEADER, "true"));
    }
    Ok(response.json(operation))
}

/// Query parameters every typed route (`/api/v1/pm2/…`, …) takes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TypedQuery {
    /// Which host's worker runs it (default `local`).
    pub target: Option<String>,
}

/// Accepts an action a route built, as `POST /api/v1/operations` would:
/// checked against the configuration, tagged with the caller's source, for
/// `target`, the `Idempotency-Key` header honoured; 202 + the operation.
pub async fn enqueue_action(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    action: Action,
    target: Label,
) -> Result<HttpResponse, ApiError> {
    action.check_config(&state.config)?;
    let request = OperationRequest {
        source: resolve_source(None, caller.key())?,
        target,
        idempotency_key: idempotency_key_header(req.headers())?,
        ..OperationRequest::new(action)
    };
    accepted(state.enqueuer.enqueue(&request).await?)
}

/// [`enqueue_action`] of the action `kind` with `payload`, parsed here (a
/// refusal is the parser's 4xx, nothing stored), on `?target=`.
pub async fn enqueue_typed(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: &TypedQuery,
    kind: &str,
    payload: Value,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse(kind, payload)?;
    let target = target_label(query.target.as_deref())?;
    enqueue_action(state, caller, req, action, target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges the document states for the enqueue body are the ones
    /// `EnqueueBody::parse` checks.
    #[test]
    fn the_documented_ranges_are_the_checked_ones() {
        let schema =
            serde_json::to_value(<EnqueueBody as utoipa::PartialSchema>::schema()).unwrap();
        let range = |field: &str| {
            let p = &schema["properties"][field];
            (p["minimum"].as_i64(), p["maximum"].as_i64())
        };
        assert_eq!(range("priority"), (Some(0), Some(9)));
        assert_eq!(range("timeout_secs"), (Some(1), Some(MAX_TIMEOUT_SECS)));
        assert_eq!(range("max_attempts"), (Some(1), Some(MAX_MAX_ATTEMPTS)));
    }
    use actix_web::http::header::HeaderValue;
    use serde_json::json;

    fn key(scopes: &[Scope], source: Option<&str>) -> ApiKey {
        ApiKey {
            id: "k".into(),
            name: "k".into(),
            scopes: scopes.to_vec(),
            source: source.map(str::to_owned),
            targets: Vec::new(),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        }
    }

    fn body(value: Value) -> EnqueueBody {
        serde_json::from_value(value).unwrap()
    }

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HeaderName::from_static(IDEMPOTENCY_KEY_HEADER),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn the_idempotency_header_takes_a_structured_string_or_a_bare_token() {
        assert_eq!(
            idempotency_key_header(&header("\"abc-1\""))
                .unwrap()
                .unwrap(),
            "abc-1"
        );
        assert_eq!(
            idempotency_key_header(&header("abc-1")).unwrap().unwrap(),
            "abc-1"
        );
        assert_eq!(
            idempotency_key_header(&header(r#""a\"b\\c""#))
                .unwrap()
                .unwrap(),
            r#"a"b\c"#
        );
        for bad in ["\"open", "\"\"", "\"a\"b\"", r#""a\nb""#] {
            assert!(
                idempotency_key_header(&header(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(idempotency_key_header(&header(&"k".repeat(256))).is_err());
        assert_eq!(idempotency_key_header(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn every_field_out_of_range_is_reported_at_once() {
        let error =
            body(json!({"type": "diag.noop", "priority": 10, "max_attempts": 0, "target": "-x"}))
                .parse(None, &key(&[Scope::Write], None))
                .unwrap_err();
        let ApiError::InvalidRequest { errors, .. } = error else {
            panic!("expected invalid_request, got {error:?}");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["target", "priority", "max_attempts"]);
    }

    #[test]
    fn a_key_bound_to_a_source_stamps_it_and_may_not_claim_another() {
        let ui = key(&[Scope::Write], Some("ui"));
        let request = body(json!({"type": "diag.noop"})).parse(None, &ui).unwrap();
        assert_eq!(request.source.as_str(), "ui");
        let error = body(json!({"type": "diag.noop", "source": "cron"}))
            .parse(None, &ui)
            .unwrap_err();
        assert_eq!(error.code(), "source_not_allowed");
        let admin = key(&[Scope::Admin], Some("ui"));
        let request = body(json!({"type": "diag.noop", "source": "cron"}))
            .parse(None, &admin)
            .unwrap();
        assert_eq!(request.source.as_str(), "cron");
        let unbound = body(json!({"type": "diag.noop"}))
            .parse(None, &key(&[Scope::Write], None))
            .unwrap();
        assert_eq!(unbound.source.as_str(), "api");
    }

    #[test]
    fn a_header_key_and_a_different_field_key_conflict() {
        let write = key(&[Scope::Write], None);
        let error = body(json!({"type": "diag.noop", "idempotency_key": "a"}))
            .parse(Some("b".into()), &write)
            .unwrap_err();
        assert_eq!(error.code(), "idempotency_key_mismatch");
        let same = body(json!({"type": "diag.noop", "idempotency_key": "a"}))
            .parse(Some("a".into()), &write)
            .unwrap();
        assert_eq!(same.idempotency_key.as_deref(), Some("a"));
    }

    #[test]
    fn the_type_and_payload_are_checked_by_the_catalogue() {
        let write = key(&[Scope::Write], None);
        let unknown = body(json!({"type": "nope.never"}))
            .parse(None, &write)
            .unwrap_err();
        assert_eq!(unknown.code(), "unknown_operation_type");
        let invalid = body(json!({"type": "diag.sleep", "payload": {"seconds": "x"}}))
            .parse(None, &write)
            .unwrap_err();
        assert_eq!(invalid.code(), "invalid_payload");
    }
}
