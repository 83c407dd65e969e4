//! Firing an operation from the dashboard: the type chosen from the
//! catalogue (the enabled families only), the payload as JSON, the
//! optional fields of `POST /api/v1/operations`. The form is parsed into the
//! same [`EnqueueBody`] and goes through the same parse, configuration
//! check and group commit as the API, so what the API refuses is refused
//! here, and each refusal is shown beside the field it names. The buttons
//! of the family pages post here too.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use opsqueue_shared::families::{ActionInfo, catalogue};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, Page, Section};
use super::{given, html, ok, see_accepted};
use crate::auth::Caller;
use crate::enqueue::{EnqueueBody, accepted};
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;

/// The form, as posted (every field text; blank is absent).
#[derive(Debug, Default, Deserialize)]
pub struct FireForm {
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<String>,
    target: Option<String>,
    priority: Option<String>,
    max_attempts: Option<String>,
    timeout_secs: Option<String>,
    idempotency_key: Option<String>,
}

/// What a refusal says, by field (`""`: about the whole request).
#[derive(Debug, Default)]
pub(super) struct Refusal {
    fields: Vec<FieldError>,
}

/// The fire form's fields (a refusal about another is shown above it).
const FIELDS: &[&str] = &[
    "type",
    "payload",
    "target",
    "priority",
    "max_attempts",
    "timeout_secs",
    "idempotency_key",
];

impl Refusal {
    pub(super) fn new(fields: Vec<FieldError>) -> Self {
        Self { fields }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub(super) fn about(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// What is about none of the form's `shown` fields.
    pub(super) fn general(&self, shown: &[&str]) -> Vec<&FieldError> {
        self.fields
            .iter()
            .filter(|e| !shown.contains(&e.field.as_str()))
            .collect()
    }

    pub(super) fn refuse(&mut self, field: &str, message: impl Into<String>) {
        self.fields.push(FieldError::new(field, message));
    }

    /// A form's whole-number field, or a refusal of its text.
    pub(super) fn number(&mut self, field: &str, value: &Option<String>) -> Option<i64> {
        let text = given(value)?;
        match text.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.refuse(field, "must be a whole number");
                None
            }
        }
    }
}

/// The request body the form stands for, or what is wrong with its text.
fn body(form: &FireForm) -> Result<EnqueueBody, Refusal> {
    let mut refusal = Refusal::default();
    let priority = refusal.number("priority", &form.priority);
    let max_attempts = refusal.number("max_attempts", &form.max_attempts);
    let timeout_secs = refusal.number("timeout_secs", &form.timeout_secs);
    let payload = match given(&form.payload) {
        None => Value::Object(Default::default()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) => value,
            Err(e) => {
                refusal.refuse("payload", format!("is not JSON: {e}"));
                Value::Null
            }
        },
    };
    let Some(kind) = given(&form.kind) else {
        refusal.refuse("type", "choose an operation type");
        return Err(refusal);
    };
    if !refusal.is_empty() {
        return Err(refusal);
    }
    Ok(EnqueueBody {
        kind: kind.to_owned(),
        payload,
        source: None,
        target: given(&form.target).map(str::to_owned),
        priority,
        run_at: None,
        timeout_secs,
        max_attempts,
        idempotency_key: given(&form.idempotency_key).map(str::to_owned),
    })
}

/// An API refusal as the form shows it.
fn refusal_of(error: &ApiError) -> Refusal {
    let field = match error {
        ApiError::InvalidRequest { errors, .. } => {
            return Refusal {
                fields: errors.clone(),
            };
        }
        ApiError::UnknownOperationType(_) => "type",
        ApiError::InvalidPayload { .. } => "payload",
        ApiError::IdempotencyKeyReused(_) | ApiError::IdempotencyKeyMismatch => "idempotency_key",
        _ => "",
    };
    Refusal {
        fields: vec![FieldError::new(field, error.to_string())],
    }
}

/// The enabled families' operation types.
fn choices(state: &AppState) -> Vec<ActionInfo> {
    catalogue()
        .into_iter()
        .filter(|info| {
            let family = info.kind.split('.').next().unwrap_or_default();
            layout::family_enabled(state, family)
        })
        .collect()
}

/// A labelled input with its refusal beside it.
pub(super) fn field(
    label: &str,
    name: &str,
    hint: &str,
    value: Option<&str>,
    refusal: &Refusal,
    kind: &str,
) -> Markup {
    let error = refusal.about(name);
    let id = format!("{name}-error");
    html! {
        label.field {
            (label)
            @if !hint.is_empty() { span.hint { (hint) } }
            input name=(name) type=(kind) value=[value] aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| id.as_str())];
            @if let Some(error) = error { span.field-error id=(id) role="alert" { (error) } }
        }
    }
}

fn form_markup(state: &AppState, caller: &Caller, form: &FireForm, refusal: &Refusal) -> Markup {
    let types = choices(state);
    let chosen = given(&form.kind);
    let summary = types
        .iter()
        .find(|info| Some(info.kind) == chosen)
        .map_or("", |info| info.summary);
    let type_error = refusal.about("type");
    let payload_error = refusal.about("payload");
    html! {
        @for error in refusal.general(FIELDS) {
            (layout::notice(&error.message, true))
        }
        div.panel {
            form.stack #fire method="post" action="/ui/fire" novalidate {
                (layout::csrf_field(caller))
                label.field {
                    "Type"
                    select #type name="type" aria-invalid=[type_error.map(|_| "true")] {
                        option value="" { "choose…" }
                        @for info in &types {
                            option value=(info.kind) data-summary=(info.summary) selected[chosen == Some(info.kind)] { (info.kind) }
                        }
                    }
                    span.hint #type-hint { (summary) }
                    @if let Some(error) = type_error { span.field-error role="alert" { (error) } }
                }
                label.field {
                    "Payload"
                    span.hint { "JSON, checked against the type (its fields are in the hint above and in the README)." }
                    textarea #payload name="payload" spellcheck="false" aria-invalid=[payload_error.map(|_| "true")] {
                        (given(&form.payload).unwrap_or("{}"))
                    }
                    @if let Some(error) = payload_error { span.field-error #payload-error role="alert" { (error) } }
                }
                div.row {
                    (field("Target", "target", "default local", given(&form.target), refusal, "text"))
                    (field("Priority", "priority", "0–9, lower first", given(&form.priority), refusal, "text"))
                    (field("Attempts", "max_attempts", "default 3", given(&form.max_attempts), refusal, "text"))
                    (field("Timeout (s)", "timeout_secs", "default: the type's", given(&form.timeout_secs), refusal, "text"))
                }
                (field("Idempotency key", "idempotency_key", "optional: the same key again returns the first operation", given(&form.idempotency_key), refusal, "text"))
                div { button type="submit" { "Fire" } }
            }
        }
    }
}

fn page(state: &AppState, caller: &Caller, form: &FireForm, refusal: &Refusal) -> Markup {
    let page = Page {
        title: "Fire an operation",
        section: Section::Fire,
        caller,
        events: None,
    };
    layout::shell(state, &page, form_markup(state, caller, form, refusal))
}

#[derive(Debug, Deserialize)]
pub struct FormQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn form(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<FormQuery>,
) -> HttpResponse {
    let form = FireForm {
        kind: query.into_inner().kind,
        ..FireForm::default()
    };
    ok(page(&state, &caller, &form, &Refusal::default()))
}

pub async fn fire(
    state: web::Data<AppState>,
    caller: Caller,
    form: web::Form<FireForm>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let refused = |refusal: Refusal| {
        html(
            HttpResponse::UnprocessableEntity(),
            page(&state, &caller, &form, &refusal),
        )
    };
    let body = match body(&form) {
        Ok(body) => body,
        Err(refusal) => return Ok(refused(refusal)),
    };
    let outcome = async {
        let request = body.parse(None, caller.key())?;
        request.action.check_config(&state.config)?;
        accepted(state.enqueuer.enqueue(&request).await?)
    }
    .await;
    match outcome {
        Ok(accepted) => see_accepted(&accepted),
        Err(error @ (ApiError::StoreBusy | ApiError::Internal)) => Err(error),
        Err(error) => Ok(refused(refusal_of(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_s_text_becomes_the_api_s_body_or_says_which_field_is_wrong() {
        let form = FireForm {
            kind: Some("diag.sleep".into()),
            payload: Some(r#"{"seconds": 2}"#.into()),
            priority: Some(" 3 ".into()),
            target: Some(String::new()),
            ..FireForm::default()
        };
        let body = body(&form).unwrap();
        assert_eq!(body.kind, "diag.sleep");
        assert_eq!(body.payload, serde_json::json!({"seconds": 2}));
        assert_eq!((body.priority, body.target), (Some(3), None));

        let bad = FireForm {
            kind: Some("diag.sleep".into()),
            payload: Some("{seconds: 2".into()),
            max_attempts: Some("many".into()),
            ..FireForm::default()
        };
        let refusal = body_refusal(&bad);
        assert!(refusal.about("payload").unwrap().starts_with("is not JSON"));
        assert_eq!(
            refusal.about("max_attempts"),
            Some("must be a whole number")
        );
    }

    fn body_refusal(form: &FireForm) -> Refusal {
        body(form).unwrap_err()
    }

    #[test]
    fn an_api_refusal_lands_on_the_field_it_names() {
        let refusal = refusal_of(&ApiError::InvalidPayload {
            detail: "seconds: missing".into(),
            errors: vec![FieldError::new("seconds", "missing")],
        });
        assert_eq!(refusal.about("payload"), Some("seconds: missing"));
        let refusal = refusal_of(&ApiError::invalid_field(
            "priority",
            "must be between 0 and 9",
        ));
        assert_eq!(refusal.about("priority"), Some("must be between 0 and 9"));
        let refusal = refusal_of(&ApiError::SourceNotAllowed("no".into()));
        assert_eq!(refusal.general(FIELDS).len(), 1);
    }
}
