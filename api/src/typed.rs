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
//! (see [`crate::enqueue::enqueue_action`]). A read answers from the last
//! observation, joined with what opsqueue manages where the route says so.
//!
//! Every typed route also takes `?target=` (default `local`); any other
//! query field it does not declare is `400 invalid_query`.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, Resource, guard, web};
use chrono::{DateTime, Utc};
use opsqueue_shared::Action;
use opsqueue_shared::families::route::{
    Body, Enqueue, Kind, Method, Observed, QueryParam, QueryValue, Route, SchemaRefs, Serves, VERB,
};
use opsqueue_shared::families::{FAMILIES, Family, Reach};
use opsqueue_shared::names::Label;
use serde_json::{Map, Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type};

use crate::auth::Caller;
use crate::enqueue::enqueue_action;
use crate::managed;
use crate::observed;
use crate::params::target_label;
use crate::problem::{ApiError, PROBLEM_JSON};
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
        Serves::Observed(observed) => resource.to(
            move |state: web::Data<AppState>, req: HttpRequest, query: Query| async move {
                serve_observed(family, route, observed, &state, &req, query).await
            },
        ),
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
    if let Some(body) = &enqueue.body {
        for required in body.required {
            if payload.get(required.field).is_none_or(Value::is_null) {
                return Err(ApiError::invalid_field(required.field, required.message));
            }
        }
    }
    // A body that is not an object is the action parser's to refuse.
    if let Value::Object(fields) = &mut payload {
        for param in route.params {
            fields.insert(param.field.into(), json!(paths[param.name]));
        }
        fields.extend(query.fields);
    }
    let action = Action::parse(kind, payload)?;
    let target = target_label(query.target.as_deref())?;
    check_reach(state, &action, &target).await?;
    enqueue_action(state, caller, req, action, target).await
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
            for param in enqueue.query {
                let schema = match param.value {
                    QueryValue::Count { min, max } => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(min))
                        .maximum(Some(max)),
                    QueryValue::Time => ObjectBuilder::new().schema_type(Type::String).format(
                        Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::DateTime,
                        )),
                    ),
                };
                operation = operation.parameter(
                    ParameterBuilder::new()
                        .name(param.name)
                        .parameter_in(ParameterIn::Query)
                        .description(Some(param.description))
                        .schema(Some(schema)),
                );
            }
            if let Some(body) = &enqueue.body {
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

/// A route's body schema: its payload type's, without the fields its path
/// parameters fill, with the fields the route requires.
fn body_schema(route: &Route, body: &Body, refs: &mut SchemaRefs) -> RefOr<Schema> {
    let schema = (body.schema)(refs);
    let RefOr::T(Schema::Object(mut object)) = schema else {
        return schema;
    };
    for param in route.params {
        object.properties.remove(param.field);
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
