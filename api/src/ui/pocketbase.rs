//! What the PocketBase page (a table in `families`) links to beyond the
//! fire form: the create form, which runs `pocketbase.validate` first, and
//! each service's delete button. Both are the family's typed routes,
//! served by the same handlers as `/api/v1/pocketbase/…`
//! ([`crate::typed::serve_route`]).
//!
//! Create posts the form's fields as the body of `POST
//! /api/v1/pocketbase/validate/service`, waits for that operation as a
//! long poll does (up to `[api] max_wait_secs`), and shows each finding
//! beside its field; only when the host found nothing wrong does it post
//! the same body to `POST /api/v1/pocketbase/services` and go to the
//! workflow's page. A refusal of either request's parse stores nothing and
//! is shown the same way. The superuser's password is never written back
//! into a page.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use opsqueue_shared::Status;
use opsqueue_shared::families::pocketbase::{FAMILY, ServiceName};
use opsqueue_shared::families::route::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::fire::{Refusal, field};
use super::layout::{self, Page, Section, button_form};
use super::{accepted_location, given, html, ok, see_accepted};
use crate::auth::Caller;
use crate::long_poll::wait_until_terminal;
use crate::params::operation_id;
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;
use crate::typed::serve_route;

/// The create form's page (`GET`) and where it posts (`POST`).
pub const CREATE_PATH: &str = "/ui/pocketbase/create";

const VALIDATE: &str = "/api/v1/pocketbase/validate/service";
const SERVICES: &str = "/api/v1/pocketbase/services";
const ONE_SERVICE: &str = "/api/v1/pocketbase/services/{name}";

/// The create form, as posted (every field text; blank is absent).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    name: Option<String>,
    port: Option<String>,
    version: Option<String>,
    domain: Option<String>,
    description: Option<String>,
    superuser_email: Option<String>,
    superuser_password: Option<String>,
    target: Option<String>,
}

/// The form's fields (a refusal about another is shown above it).
const FIELDS: &[&str] = &[
    "name",
    "port",
    "version",
    "domain",
    "description",
    "superuser_email",
    "superuser_password",
    "target",
];

/// The body of the create request the form stands for (validate takes the
/// same), or what is wrong with its text.
fn body(form: &CreateForm) -> Result<Value, Refusal> {
    let mut refusal = Refusal::default();
    let port = refusal.number("port", &form.port);
    let mut fields = Map::new();
    for (name, value) in [
        ("name", given(&form.name)),
        ("version", given(&form.version)),
        ("domain", given(&form.domain)),
        ("description", given(&form.description)),
        ("superuser_email", given(&form.superuser_email)),
        // A password is taken as typed, spaces and all.
        (
            "superuser_password",
            form.superuser_password.as_deref().filter(|p| !p.is_empty()),
        ),
    ] {
        if let Some(value) = value {
            fields.insert(name.into(), json!(value));
        }
    }
    if let Some(port) = port {
        fields.insert("port".into(), json!(port));
    }
    for required in ["name", "port", "version"] {
        if !fields.contains_key(required) && refusal.about(required).is_none() {
            refusal.refuse(required, "is required");
        }
    }
    if !refusal.is_empty() {
        return Err(refusal);
    }
    Ok(Value::Object(fields))
}

/// `?target=` of the typed routes, as the form gives it.
fn target_query(target: &Option<String>) -> Vec<(String, String)> {
    given(target)
        .map(|target| ("target".to_owned(), target.to_owned()))
        .into_iter()
        .collect()
}

/// A refusal about the whole request, shown above the form.
fn about_the_request(message: String) -> Refusal {
    Refusal::new(vec![FieldError::new("", message)])
}

/// An API refusal as the form shows it: by field when it names fields.
fn refusal_of(error: &ApiError) -> Refusal {
    match error {
        ApiError::InvalidRequest { errors, .. } | ApiError::InvalidPayload { errors, .. }
            if !errors.is_empty() =>
        {
            Refusal::new(errors.clone())
        }
        other => about_the_request(other.to_string()),
    }
}

/// `pocketbase.validate`'s result (`warnings` are not the form's concern:
/// the create workflow's check logs them).
#[derive(Debug, Deserialize)]
struct Findings {
    valid: bool,
    #[serde(default)]
    errors: Vec<Finding>,
}

#[derive(Debug, Deserialize)]
struct Finding {
    field: String,
    message: String,
}

/// What the host's check said of the form.
enum Validation {
    /// Nothing wrong: create.
    Valid,
    /// What is wrong, by field.
    Refused(Refusal),
}

/// `pocketbase.validate`'s answer, once the operation at `location` ended.
async fn validation(state: &AppState, location: &str) -> Result<Validation, ApiError> {
    let id = operation_id(location.rsplit('/').next().unwrap_or_default())?;
    let wait = Duration::from_secs(state.config.api.max_wait_secs);
    let operation = wait_until_terminal(&state.store, &state.notifier, id, wait, &state.stopping)
        .await?
        .ok_or_else(|| ApiError::internal(format!("the validation {id} is gone")))?;
    let refused = |message: String| Ok(Validation::Refused(about_the_request(message)));
    match operation.status {
        Status::Completed => {
            let result = operation.result.unwrap_or_default();
            match serde_json::from_value::<Findings>(result.clone()) {
                Ok(findings) if findings.valid => Ok(Validation::Valid),
                Ok(findings) if !findings.errors.is_empty() => {
                    Ok(Validation::Refused(Refusal::new(
                        findings
                            .errors
                            .into_iter()
                            .map(|f| FieldError::new(&f.field, f.message))
                            .collect(),
                    )))
                }
                _ => refused(format!(
                    "the validation did not say the service is valid: {result}; nothing was created"
                )),
            }
        }
        status if status.is_terminal() => refused(format!(
            "the validation ended {}: {}; nothing was created",
            status.as_str(),
            operation
                .error
                .map_or_else(|| "no error given".to_owned(), |e| e.message)
        )),
        _ => refused(format!(
            "no worker of this target finished the validation within {} s; nothing was created (it runs when one does: see its page)",
            wait.as_secs()
        )),
    }
}

fn page(
    state: &AppState,
    caller: &Caller,
    form: &CreateForm,
    refusal: &Refusal,
    validation: Option<&str>,
) -> Markup {
    let page = Page {
        title: "Create a PocketBase service",
        section: Section::Family(FAMILY),
        caller,
        events: None,
    };
    let content = html! {
        @for error in refusal.general(FIELDS) {
            (layout::notice(&error.message, true))
        }
        @if let Some(location) = validation {
            p.hint #validation {
                "Checked on the host by "
                a href={"/ui/" (location.trim_start_matches("/api/v1/"))} { "pocketbase.validate" }
                "."
            }
        }
        div.panel {
            form.stack #create method="post" action=(CREATE_PATH) novalidate {
                (layout::csrf_field(caller))
                p.hint {
                    "The target's worker checks it first (pocketbase.validate: the name unused, the port free, "
                    "the domain served by no other site, the version cached); only then is it created, "
                    "by a workflow that undoes itself if a step fails."
                }
                div.row {
                    (field("Name", "name", "a-z, 0-9 and -", given(&form.name), refusal, "text"))
                    (field("Port", "port", "1024–65535, on 127.0.0.1", given(&form.port), refusal, "text"))
                    (field("Version", "version", "from the version cache", given(&form.version), refusal, "text"))
                }
                div.row {
                    (field("Domain", "domain", "optional: a Caddy site for it", given(&form.domain), refusal, "text"))
                    (field("Target", "target", "default local", given(&form.target), refusal, "text"))
                }
                (field("Description", "description", "optional", given(&form.description), refusal, "text"))
                div.row {
                    (field("Superuser email", "superuser_email", "optional", given(&form.superuser_email), refusal, "email"))
                    (field("Superuser password", "superuser_password", "with the email; a secret, never shown again", None, refusal, "password"))
                }
                div { button type="submit" { "Validate and create" } }
            }
        }
    };
    layout::shell(state, &page, content)
}

#[derive(Debug, Deserialize)]
pub struct FormQuery {
    target: Option<String>,
}

pub async fn form(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<FormQuery>,
) -> HttpResponse {
    let form = CreateForm {
        target: query.into_inner().target,
        ..CreateForm::default()
    };
    ok(page(&state, &caller, &form, &Refusal::default(), None))
}

pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let refused = |refusal: Refusal, validation: Option<&str>| {
        html(
            HttpResponse::UnprocessableEntity(),
            page(&state, &caller, &form, &refusal, validation),
        )
    };
    let body = match body(&form) {
        Ok(body) => body,
        Err(refusal) => return Ok(refused(refusal, None)),
    };
    let serve = |path: &'static str| {
        serve_route(
            FAMILY,
            Method::Post,
            path,
            &state,
            &caller,
            &req,
            target_query(&form.target),
            Some(body.clone()),
        )
    };
    let validate = match serve(VALIDATE).await {
        Ok(accepted) => accepted,
        Err(error @ (ApiError::StoreBusy | ApiError::Internal)) => return Err(error),
        Err(error) => return Ok(refused(refusal_of(&error), None)),
    };
    let location = accepted_location(&validate)?;
    if let Validation::Refused(refusal) = validation(&state, location).await? {
        return Ok(refused(refusal, Some(location)));
    }
    match serve(SERVICES).await {
        Ok(accepted) => see_accepted(&accepted),
        Err(error @ (ApiError::StoreBusy | ApiError::Internal)) => Err(error),
        Err(error) => Ok(refused(refusal_of(&error), Some(location))),
    }
}

/// The delete button's form.
#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    target: Option<String>,
}

/// `DELETE /api/v1/pocketbase/services/{name}` (its pb_data kept in the
/// trash), then the workflow's page.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    form: web::Form<DeleteForm>,
) -> Result<HttpResponse, ApiError> {
    let mut query = target_query(&form.target);
    query.push(("keep_data".to_owned(), "true".to_owned()));
    let accepted = serve_route(
        FAMILY,
        Method::Delete,
        ONE_SERVICE,
        &state,
        &caller,
        &req,
        query,
        None,
    )
    .await?;
    see_accepted(&accepted)
}

/// A service's delete button, asking first (none for a name that is not
/// a service's).
pub fn delete_button(caller: &Caller, name: &str, target: &str) -> Markup {
    let Ok(name) = ServiceName::parse(name) else {
        return html! {};
    };
    button_form(
        caller,
        &format!("/ui/pocketbase/services/{name}/delete"),
        &[("target", target)],
        "Delete",
        Some(&format!(
            "Delete PocketBase service {name}? Its unit, its site and its user go; its pb_data is kept in the trash."
        )),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_s_text_becomes_the_create_body_or_says_which_field_is_wrong() {
        let form = CreateForm {
            name: Some(" my-app ".into()),
            port: Some("8090".into()),
            version: Some("0.40.6".into()),
            domain: Some(String::new()),
            superuser_password: Some(" spaced ".into()),
            ..CreateForm::default()
        };
        assert_eq!(
            body(&form).unwrap(),
            json!({"name": "my-app", "port": 8090, "version": "0.40.6", "superuser_password": " spaced "})
        );

        let refusal = body(&CreateForm {
            port: Some("eighty".into()),
            ..CreateForm::default()
        })
        .unwrap_err();
        assert_eq!(refusal.about("port"), Some("must be a whole number"));
        assert_eq!(refusal.about("name"), Some("is required"));
        assert_eq!(refusal.about("version"), Some("is required"));
    }

    #[test]
    fn a_refusal_that_names_fields_lands_on_them_and_any_other_above_the_form() {
        let refusal = refusal_of(&ApiError::InvalidPayload {
            detail: "pocketbase.validate: port: must be between 1024 and 65535".into(),
            errors: vec![FieldError::new("port", "must be between 1024 and 65535")],
        });
        assert_eq!(
            refusal.about("port"),
            Some("must be between 1024 and 65535")
        );
        assert!(refusal.general(FIELDS).is_empty());
        let refusal = refusal_of(&ApiError::Forbidden("no".into()));
        assert_eq!(refusal.general(FIELDS).len(), 1);
    }
}
