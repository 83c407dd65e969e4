//! The typed routes of every family (`/api/v1/pm2/…`, `/api/v1/systemd/…`),
//! served from the families' route tables (see
//! `opsqueue_shared::families::route`): one enqueue handler and one
//! observed-read handler for all of them, and their OpenAPI paths generated
//! from the same tables, so what is served and what is documented cannot
//! drift apart.
//!
//! An enqueue route builds the payload from its JSON body (if it takes
//! one), its path parameters and its query parameters, parses it into a
//! typed action (a refusal is the parser's 4xx and nothing is stored),
//! checks the action's reach for the typed routes (the systemd allow and
//! deny patterns) and then accepts it as `POST /api/v1/operations` would
//! (see [`crate::enqueue::enqueue_action`]). A workflow route hands the
//! same fields (and the record of the object it acts on, when it names
//! one) to its family's builder, then parses, checks (reach included) and
//! stores the steps exactly as `POST /api/v1/workflows` would (see
//! [`crate::routes::workflows::store_workflow`]). A read answers from the
//! last observation, joined with what opsqueue manages where the route
//! says so; a paged read also filters, and says the total.
//!
//! Every typed route also takes `?target=` (default `local`); any other
//! query field it does not declare is `400 invalid_query`. The dashboard's
//! forms for a family's routes (PocketBase's create and delete) run these
//! same handlers through [`serve_route`].

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, Resource, guard, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::Action;
use opsqueue_shared::families::route::{
    Body, Enqueue, Kind, Match, Method, Observed, ObservedPage, Plan, QueryParam, QueryValue,
    Route, SchemaRefs, Serves, VERB, Workflow, WorkflowInput,
};
use opsqueue_shared::families::{FAMILIES, Family, Reach};
use opsqueue_shared::names::Label;
use opsqueue_shared::workflow::{CompensateBody, OnFailure, StepBody, WorkflowBody};
use serde_json::{Map, Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type};

use crate::auth::Caller;
use crate::enqueue::{enqueue_action, idempotency_key_header, resolve_source};
use crate::managed;
use crate::observed;
use crate::params::target_label;
use crate::problem::{ApiError, FieldError, PROBLEM_JSON};
use crate::routes::workflows::store_workflow;
use crate::state::AppState;

/// The query string, in order, as sent.
type Query = web::Query<Vec<(String, String)>>;

/// Registers every family's typed routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for family in FAMILIES {
        for route in family.routes {
            cfg.service(resource(family, route));
        }
    }
}

fn http_method(method: Method) -> actix_web::http::Method {
    match method {
        Method::Get => actix_web::http::Method::GET,
        Method::Post => actix_web::http::Method::POST,
        Method::Put => actix_web::http::Method::PUT,
        Method::Patch => actix_web::http::Method::PATCH,
        Method::Delete => actix_web::http::Method::DELETE,
    }
}

fn resource(family: &'static Family, route: &'static Route) -> Resource {
    let resource = web::resource(route.path).guard(guard::Method(http_method(route.method)));
    match &route.serves {
        Serves::Enqueue(enqueue) if enqueue.body.is_some() => resource.to(
            move |state: web::Data<AppState>,
                  caller: Caller,
                  req: HttpRequest,
                  query: Query,
                  body: web::Json<Value>| async move {
                serve_enqueue(
                    route,
                    enqueue,
                    &state,
                    &caller,
                    &req,
                    query,
                    Some(body.into_inner()),
                )
                .await
            },
        ),
        Serves::Enqueue(enqueue) => {
            resource.to(
                move |state: web::Data<AppState>,
                      caller: Caller,
                      req: HttpRequest,
                      query: Query| async move {
                    serve_enqueue(route, enqueue, &state, &caller, &req, query, None).await
                },
            )
        }
        Serves::Workflow(workflow) if workflow.body.is_some() => resource.to(
            move |state: web::Data<AppState>,
                  caller: Caller,
                  req: HttpRequest,
                  query: Query,
                  body: web::Json<Value>| async move {
                serve_workflow(
                    family,
                    route,
                    workflow,
                    &state,
                    &caller,
                    &req,
                    query,
                    Some(body.into_inner()),
                )
                .await
            },
        ),
        Serves::Workflow(workflow) => {
            resource.to(
                move |state: web::Data<AppState>,
                      caller: Caller,
                      req: HttpRequest,
                      query: Query| async move {
                    serve_workflow(family, route, workflow, &state, &caller, &req, query, None)
                        .await
                },
            )
        }
        Serves::Observed(observed) => resource.to(
            move |state: web::Data<AppState>, req: HttpRequest, query: Query| async move {
                serve_observed(family, route, observed, &state, &req, query).await
            },
        ),
        Serves::ObservedPage(page) => {
            resource.to(move |state: web::Data<AppState>, query: Query| async move {
                serve_page(family, page, &state, query).await
            })
        }
    }
}

/// Serves the typed route `method path` of `family` (an enqueue or a
/// workflow route) as its handler serves it, for the dashboard's forms:
/// `req` carries the path parameters (the dashboard's route names them as
/// the API's does), `query` the query fields, `body` the JSON body.
#[allow(clippy::too_many_arguments)]
pub async fn serve_route(
    family: &str,
    method: Method,
    path: &str,
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: Vec<(String, String)>,
    body: Option<Value>,
) -> Result<HttpResponse, ApiError> {
    let (family, route) = FAMILIES
        .iter()
        .filter(|f| f.name == family)
        .flat_map(|f| f.routes.iter().map(move |route| (f, route)))
        .find(|(_, route)| route.method == method && route.path == path)
        .ok_or_else(|| ApiError::internal(format!("no typed route {method:?} {path}")))?;
    let query = web::Query(query);
    match &route.serves {
        Serves::Enqueue(enqueue) => {
            serve_enqueue(route, enqueue, state, caller, req, query, body).await
        }
        Serves::Workflow(workflow) => {
            serve_workflow(family, route, workflow, state, caller, req, query, body).await
        }
        Serves::Observed(_) | Serves::ObservedPage(_) => {
            Err(ApiError::internal(format!("{method:?} {path} only reads")))
        }
    }
}

/// `?target=` and the route's own query fields; anything else is refused.
struct QueryFields {
    target: Option<String>,
    fields: Map<String, Value>,
}

fn query_fields(declared: &[QueryParam], query: Query) -> Result<QueryFields, ApiError> {
    let mut parsed = QueryFields {
        target: None,
        fields: Map::new(),
    };
    for (name, text) in query.into_inner() {
        let duplicate = || ApiError::InvalidQuery(format!("duplicate field `{name}`"));
        if name == "target" {
            if parsed.target.replace(text).is_some() {
                return Err(duplicate());
            }
            continue;
        }
        let Some(param) = declared.iter().find(|p| p.name == name) else {
            let mut known = vec!["`target`".to_owned()];
            known.extend(declared.iter().map(|p| format!("`{}`", p.name)));
            return Err(ApiError::InvalidQuery(format!(
                "unknown field `{name}`, expected one of {}",
                known.join(", ")
            )));
        };
        let value = match param.value {
            QueryValue::Count { .. } => text
                .parse::<u32>()
                .map(|n| json!(n))
                .map_err(|e| ApiError::InvalidQuery(format!("{name}: {e}")))?,
            QueryValue::Time => text
                .parse::<DateTime<Utc>>()
                .map(|t| json!(t))
                .map_err(|e| ApiError::InvalidQuery(format!("{name}: {e}")))?,
            QueryValue::Flag => match text.as_str() {
                "true" => json!(true),
                "false" => json!(false),
                _ => {
                    return Err(ApiError::InvalidQuery(format!(
                        "{name}: expected true or false, got {text:?}"
                    )));
                }
            },
        };
        if parsed.fields.insert(name.clone(), value).is_some() {
            return Err(duplicate());
        }
    }
    Ok(parsed)
}

/// The route's path parameters, each in its normal form, by name.
fn path_values(
    route: &Route,
    req: &HttpRequest,
) -> Result<BTreeMap<&'static str, String>, ApiError> {
    let mut values = BTreeMap::new();
    for param in route.params {
        let text = req.match_info().get(param.name).unwrap_or_default();
        let value = match param.parse {
            Some(parse) => {
                parse(text).map_err(|e| ApiError::invalid_field(param.name, e.to_string()))?
            }
            None => text.to_owned(),
        };
        values.insert(param.name, value);
    }
    Ok(values)
}

async fn serve_enqueue(
    route: &'static Route,
    enqueue: &'static Enqueue,
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: Query,
    body: Option<Value>,
) -> Result<HttpResponse, ApiError> {
    let verb = req.match_info().get(VERB);
    let kind = enqueue.kind.for_verb(verb).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no action {:?} at {}; use {}",
            verb.unwrap_or_default(),
            route.path,
            verbs(&enqueue.kind).join(", ")
        ))
    })?;
    let query = query_fields(enqueue.query, query)?;
    let paths = path_values(route, req)?;
    let mut payload = body.unwrap_or_else(|| Value::Object(Map::new()));
    check_required(enqueue.body.as_ref(), &payload)?;
    // A body that is not an object is the action parser's to refuse.
    if let Value::Object(fields) = &mut payload {
        add_fields(route, &paths, query.fields, fields);
    }
    let action = Action::parse(kind, payload)?;
    let target = target_label(query.target.as_deref())?;
    check_reach(state, &action, &target).await?;
    enqueue_action(state, caller, req, action, target).await
}

/// `422` when the body lacks a field the route insists on.
fn check_required(body: Option<&Body>, payload: &Value) -> Result<(), ApiError> {
    for required in body.map_or(&[][..], |body| body.required) {
        if payload.get(required.field).is_none_or(Value::is_null) {
            return Err(ApiError::invalid_field(required.field, required.message));
        }
    }
    Ok(())
}

/// Adds the path parameters' fields and the query's to a request's fields.
fn add_fields(
    route: &Route,
    paths: &BTreeMap<&'static str, String>,
    query: Map<String, Value>,
    fields: &mut Map<String, Value>,
) {
    for param in route.params {
        fields.insert(param.field.into(), json!(paths[param.name]));
    }
    fields.extend(query);
}

#[allow(clippy::too_many_arguments)]
async fn serve_workflow(
    family: &'static Family,
    route: &'static Route,
    workflow: &'static Workflow,
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: Query,
    body: Option<Value>,
) -> Result<HttpResponse, ApiError> {
    let query = query_fields(workflow.query, query)?;
    let paths = path_values(route, req)?;
    let mut fields = match body {
        None => Map::new(),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(ApiError::invalid_field("body", "must be a JSON object")),
    };
    check_required(workflow.body.as_ref(), &Value::Object(fields.clone()))?;
    add_fields(route, &paths, query.fields, &mut fields);
    let target = target_label(query.target.as_deref())?;
    let subject = match (workflow.subject, route.params.first()) {
        (Some(kind), Some(param)) => {
            let name = &paths[param.name];
            Some(managed::spec(state, &target, family.name, kind, name).await?)
        }
        _ => None,
    };
    let config = serde_json::to_value(&state.config).map_err(ApiError::internal)?;
    let input = WorkflowInput {
        fields: &fields,
        section: &config[family.section],
        subject: subject.as_ref(),
    };
    let plan = (workflow.build)(&input).map_err(|refusals| {
        ApiError::invalid_fields(
            refusals
                .into_iter()
                .map(|r| FieldError::new(&r.field, r.message))
                .collect(),
        )
    })?;
    let idempotency_key = idempotency_key_header(req.headers())?;
    let source = resolve_source(None, caller.key())?;
    let request = workflow_body(plan, &target, idempotency_key)
        .parse(source)
        .map_err(ApiError::refused)?;
    // A step may act on what an earlier step creates (a unit the workflow
    // installs): only what is denied outright is refused here; whether a
    // step may touch an object is decided by the worker when it runs.
    for step in &request.steps {
        let at = step.request.target.as_str();
        if let Reach::Denied(message) = step.request.action.reach(&state.config, at) {
            return Err(ApiError::Forbidden(message));
        }
    }
    store_workflow(state, request).await
}

/// A family's plan as `POST /api/v1/workflows` would take it.
fn workflow_body(plan: Plan, target: &Label, idempotency_key: Option<String>) -> WorkflowBody {
    let steps = plan
        .steps
        .into_iter()
        .map(|step| StepBody {
            name: step.name.to_owned(),
            kind: step.kind.to_owned(),
            payload: step.payload,
            target: None,
            depends_on: step.depends_on.iter().map(|s| (*s).to_owned()).collect(),
            compensate: step.compensate.map(|(kind, payload)| CompensateBody {
                kind: kind.to_owned(),
                payload,
            }),
            timeout_secs: step.timeout_secs,
            max_attempts: None,
        })
        .collect();
    WorkflowBody {
        name: Some(plan.name),
        steps,
        on_failure: if plan.compensate {
            OnFailure::Compensate
        } else {
            OnFailure::Stop
        },
        target: Some(target.to_string()),
        source: None,
        priority: None,
        idempotency_key,
    }
}

/// The verbs a [`Kind::ByVerb`] route takes.
fn verbs(kind: &Kind) -> Vec<&'static str> {
    match kind {
        Kind::One(_) => Vec::new(),
        Kind::ByVerb(verbs) => verbs.iter().map(|(verb, _)| *verb).collect(),
    }
}

/// `403` for an action a typed route may not take (see [`Reach`]).
async fn check_reach(state: &AppState, action: &Action, target: &Label) -> Result<(), ApiError> {
    match action.reach(&state.config, target.as_str()) {
        Reach::Open => Ok(()),
        Reach::Denied(message) => Err(ApiError::Forbidden(message)),
        Reach::IfManaged {
            kind,
            name,
            refusal,
        } => {
            if managed::is_managed(state, target, action.family(), kind, &name).await? {
                Ok(())
            } else {
                Err(ApiError::Forbidden(refusal))
            }
        }
        Reach::IfExists {
            kind,
            name,
            missing,
        } => {
            if managed::is_managed(state, target, action.family(), kind, &name).await? {
                Ok(())
            } else {
                Err(ApiError::NotFound(missing))
            }
        }
    }
}

async fn serve_observed(
    family: &'static Family,
    route: &'static Route,
    observed: &'static Observed,
    state: &AppState,
    req: &HttpRequest,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    let query = query_fields(&[], query)?;
    let paths = path_values(route, req)?;
    let target = target_label(query.target.as_deref())?;
    let (family, kind) = (family.name, observed.kind);
    let Some(param) = route.params.first() else {
        let list = if observed.managed {
            managed::list(state, &target, family, kind).await?
        } else {
            observed::list(state, &target, family, kind).await?
        };
        return Ok(HttpResponse::Ok().json(list));
    };
    let name = &paths[param.name];
    let how = observed.how.replace(&format!("{{{}}}", param.name), name);
    let found = if observed.managed {
        managed::one(state, &target, family, kind, name, &how).await?
    } else {
        observed::one(state, &target, family, kind, name, &how).await?
    };
    Ok(HttpResponse::Ok().json(found))
}

/// The default and the largest page of a paged read.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

async fn serve_page(
    family: &'static Family,
    page: &'static ObservedPage,
    state: &AppState,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    let mut filters = Vec::new();
    let (mut limit, mut offset, mut target) = (PAGE_DEFAULT, 0, None);
    for (name, text) in query.into_inner() {
        let count = |text: &str| {
            text.parse::<usize>()
                .map_err(|e| ApiError::InvalidQuery(format!("{name}: {e}")))
        };
        match name.as_str() {
            "target" => target = Some(text),
            "limit" => limit = count(&text)?.clamp(1, PAGE_MAX),
            "offset" => offset = count(&text)?,
            _ => match page.filters.iter().find(|f| f.name == name) {
                Some(filter) => filters.push((filter, text)),
                None => {
                    let mut known = vec!["`target`", "`limit`", "`offset`"];
                    known.extend(page.filters.iter().map(|f| f.name));
                    return Err(ApiError::InvalidQuery(format!(
                        "unknown field `{name}`, expected one of {}",
                        known.join(", ")
                    )));
                }
            },
        }
    }
    let target = target_label(target.as_deref())?;
    let observed = &page.observed;
    let list = if observed.managed {
        managed::list(state, &target, family.name, observed.kind).await?
    } else {
        observed::list(state, &target, family.name, observed.kind).await?
    };
    let matching: Vec<Value> = list
        .items
        .into_iter()
        .filter(|item| {
            filters.iter().all(|(filter, wanted)| {
                let text = item.pointer(filter.pointer).and_then(Value::as_str);
                match filter.matches {
                    Match::Equals => text == Some(wanted.as_str()),
                    Match::Prefix => text.is_some_and(|t| t.starts_with(wanted.as_str())),
                }
            })
        })
        .collect();
    let total = matching.len();
    let items: Vec<Value> = matching.into_iter().skip(offset).take(limit).collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "total": total})))
}

/// The OpenAPI paths of every typed route, and the schemas their bodies
/// refer to (for the document's components).
pub fn openapi_paths() -> (Paths, SchemaRefs) {
    let mut paths = Paths::new();
    let mut refs = SchemaRefs::new();
    for family in FAMILIES {
        for route in family.routes {
            let method = match route.method {
                Method::Get => HttpMethod::Get,
                Method::Post => HttpMethod::Post,
                Method::Put => HttpMethod::Put,
                Method::Patch => HttpMethod::Patch,
                Method::Delete => HttpMethod::Delete,
            };
            paths.add_path_operation(
                route.path,
                vec![method],
                operation(family, route, &mut refs),
            );
        }
    }
    (paths, refs)
}

fn parameter(
    name: &str,
    place: ParameterIn,
    description: &str,
    schema: RefOr<Schema>,
) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .description(Some(description))
        .schema(Some(schema))
}

/// A problem+json answer, for the document.
pub(crate) fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

fn json_answer(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build(),
    )
}

/// A route's OpenAPI operation: what it takes, what it answers.
fn operation(family: &Family, route: &Route, refs: &mut SchemaRefs) -> OperationBuilder {
    let operation_id = format!(
        "{}{}",
        route.method.as_str().to_ascii_lowercase(),
        route
            .path
            .trim_start_matches("/api/v1")
            .replace(['/', '-'], "_")
            .replace(['{', '}'], "")
    );
    let description = (!route.description.is_empty()).then_some(route.description);
    let mut operation = OperationBuilder::new()
        .tag(family.name)
        .operation_id(Some(operation_id))
        .summary(Some(route.summary))
        .description(description);
    for param in route.params {
        operation = operation.parameter(
            parameter(
                param.name,
                ParameterIn::Path,
                param.description,
                (param.schema)(),
            )
            .required(Required::True),
        );
    }
    operation = operation.parameter(parameter(
        "target",
        ParameterIn::Query,
        "Which host's worker runs it (default `local`).",
        Label::schema(),
    ));
    let named: Vec<&str> = route.params.iter().map(|p| p.name).collect();
    match &route.serves {
        Serves::Enqueue(enqueue) => {
            let verbs = verbs(&enqueue.kind);
            if !verbs.is_empty() {
                operation = operation
                    .parameter(
                        ParameterBuilder::new()
                            .name(VERB)
                            .parameter_in(ParameterIn::Path)
                            .required(Required::True)
                            .description(Some(verbs.join(", ")))
                            .schema(Some(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .enum_values(Some(verbs.clone())),
                            )),
                    )
                    .response("404", problem("No such verb"));
            }
            operation =
                with_query_and_body(operation, route, enqueue.query, enqueue.body.as_ref(), refs);
            let mut invalid = named
                .iter()
                .map(|n| format!("invalid {n}, "))
                .collect::<String>();
            invalid.push_str(
                "an invalid target, the payload does not parse, or the family is disabled",
            );
            operation = operation
                .response(
                    "202",
                    json_answer(
                        &format!("Accepted: {}", accepted(&enqueue.kind)),
                        "Operation",
                    ),
                )
                .response("400", problem("An unknown or malformed query field"))
                .response("422", problem(&capitalized(&invalid)));
            if family.reach.is_some() {
                operation = operation.response("403", problem(family.reach.unwrap_or_default()));
            }
        }
        Serves::Workflow(workflow) => {
            operation = with_query_and_body(
                operation,
                route,
                workflow.query,
                workflow.body.as_ref(),
                refs,
            )
            .response(
                "202",
                json_answer(
                    &format!(
                        "Accepted: the workflow (steps: {}); Location: /api/v1/workflows/{{id}}",
                        workflow.steps
                    ),
                    "WorkflowView",
                ),
            )
            .response("400", problem("An unknown or malformed query field"))
            .response(
                "422",
                problem("A request field the workflow cannot be built from, or a step refused"),
            );
            if workflow.subject.is_some() {
                operation = operation.response("404", problem("opsqueue manages no such object"));
            }
        }
        Serves::ObservedPage(page) => {
            for filter in page.filters {
                operation = operation.parameter(parameter(
                    filter.name,
                    ParameterIn::Query,
                    filter.description,
                    ObjectBuilder::new().schema_type(Type::String).into(),
                ));
            }
            for (name, description) in [
                ("limit", "Page size (default 50, at most 500)."),
                ("offset", "Items to skip."),
            ] {
                operation = operation.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Query)
                        .description(Some(description))
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        )),
                );
            }
            operation = operation
                .response("400", problem("An unknown or malformed query field"))
                .response("422", problem("An invalid target"))
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description(format!(
                            "`{{items, total}}`: the page and how many matched. {}",
                            page.observed.answer
                        ))
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                                .build(),
                        ),
                );
        }
        Serves::Observed(observed) => {
            operation = operation
                .response("400", problem("An unknown or malformed query field"))
                .response("422", problem("An invalid target or path parameter"));
            if named.is_empty() {
                operation = operation.response("200", json_answer(observed.answer, "ObservedList"));
            } else {
                operation = operation
                    .response(
                        "200",
                        ResponseBuilder::new().description(observed.answer).content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                                .build(),
                        ),
                    )
                    .response("404", problem("Not observed (absent, or never refreshed)"));
            }
        }
    }
    operation
}

/// A route's query parameters and JSON body, for the OpenAPI document.
fn with_query_and_body(
    mut operation: OperationBuilder,
    route: &Route,
    query: &[QueryParam],
    body: Option<&Body>,
    refs: &mut SchemaRefs,
) -> OperationBuilder {
    for param in query {
        let schema = match param.value {
            QueryValue::Count { min, max } => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(min))
                .maximum(Some(max)),
            QueryValue::Time => ObjectBuilder::new().schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime),
            )),
            QueryValue::Flag => ObjectBuilder::new().schema_type(Type::Boolean),
        };
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(param.name)
                .parameter_in(ParameterIn::Query)
                .description(Some(param.description))
                .schema(Some(schema)),
        );
    }
    if let Some(body) = body {
        let schema = body_schema(route, body, refs);
        operation = operation
            .request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(body.description))
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .build(),
            ))
            .response(
                "400",
                problem("Malformed JSON, or an unknown or malformed query field"),
            )
            .response("413", problem("The body is over the limit"))
            .response("415", problem("The body is not JSON"));
    }
    operation
}

/// A route's body schema: its payload type's, without the fields its path
/// parameters fill, with the fields the route requires.
fn body_schema(route: &Route, body: &Body, refs: &mut SchemaRefs) -> RefOr<Schema> {
    let schema = (body.schema)(refs);
    let RefOr::T(Schema::Object(mut object)) = schema else {
        return schema;
    };
    for param in route.params {
        if object.properties.remove(param.field).is_some() {
            // The path gives the field: the body holds one property fewer.
            object.min_properties = object.min_properties.map(|n| n.saturating_sub(1));
        }
        object.required.retain(|field| field != param.field);
    }
    for required in body.required {
        if !object.required.iter().any(|field| field == required.field) {
            object.required.push(required.field.to_owned());
        }
    }
    RefOr::T(Schema::Object(object))
}

/// What a 202 of this route holds.
fn accepted(kind: &Kind) -> String {
    match kind {
        Kind::One(kind) => format!("a {kind} operation"),
        Kind::ByVerb(verbs) => {
            let kinds: Vec<&str> = verbs.iter().map(|(_, kind)| *kind).collect();
            format!("a {} operation, by the verb", kinds.join(" | "))
        }
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
