//! Typed routes as data. A family lists its routes (`/api/v1/pm2/…`) as a
//! table of [`Route`]s; the API serves every one with one generic enqueue
//! handler or one generic observed-read handler, and generates the OpenAPI
//! document from the same table, so a route cannot be served without being
//! documented, or the other way round.
//!
//! A route either enqueues one operation type ([`Enqueue`]: the payload is
//! the JSON body, if the route takes one, plus the fields its path and query
//! parameters fill), builds a workflow from its request ([`Workflow`]: the
//! family's builder makes the steps in code, and the API parses, checks and
//! stores them exactly as `POST /api/v1/workflows` would), or answers from
//! what a worker last observed ([`Observed`], [`ObservedPage`]). Routes
//! that do none of these (Proxmox node registration, history, schedules,
//! keys) are written by hand in the API.

use serde_json::{Map, Value};

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::names::NameError;

/// The JSON schema of a name type (its `schema()`), for the OpenAPI
/// document: the same type parses the value, so the two cannot drift.
pub type SchemaOf = fn() -> RefOr<Schema>;

/// The schemas a payload schema refers to, by name (for the document's
/// components).
pub type SchemaRefs = Vec<(String, RefOr<Schema>)>;

/// A payload type's JSON schema; the schemas it refers to go into `refs`.
pub type BodySchema = fn(refs: &mut SchemaRefs) -> RefOr<Schema>;

/// A [`BodySchema`] that says only "a JSON object": for a payload whose
/// rules the document does not state yet (the action's parser states them,
/// and its refusals are `422`).
pub fn any_object(_refs: &mut SchemaRefs) -> RefOr<Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .into()
}

/// The [`BodySchema`] of a payload type that derives `ToSchema`.
pub fn body_schema<T: utoipa::ToSchema>(refs: &mut SchemaRefs) -> RefOr<Schema> {
    T::schemas(refs);
    T::schema()
}

/// The HTTP methods typed routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Parses a path parameter into its normal form (`web` → `web.service`,
/// `Example.COM` → `example.com`), or refuses it.
pub type ParseName = fn(&str) -> Result<String, NameError>;

/// A `{name}` in a route's path (`{verb}` is not one: see [`Kind::ByVerb`]).
#[derive(Debug)]
pub struct PathParam {
    /// As written in the path, and the field a refusal names.
    pub name: &'static str,
    pub description: &'static str,
    /// The payload field it fills (an enqueue), or the observed name (a read).
    pub field: &'static str,
    /// Checked at the route (`422 invalid_request` naming `name`); `None`
    /// leaves the text to the action's own parser (`422 invalid_payload`).
    pub parse: Option<ParseName>,
    /// The schema of the type that parses it (the route's or the action's).
    pub schema: SchemaOf,
}

/// What a query parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryValue {
    /// A whole number from `min` to `max` (the action checks the range
    /// with the same constants; a value outside it is `422`).
    Count { min: u32, max: u32 },
    /// An RFC 3339 time.
    Time,
    /// `true` or `false`.
    Flag,
}

/// A query parameter that fills the payload field of the same name.
/// Every typed route also takes `?target=` (default `local`).
#[derive(Debug)]
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    pub value: QueryValue,
}

/// A body field a route needs although the action may do without it.
#[derive(Debug)]
pub struct Required {
    pub field: &'static str,
    pub message: &'static str,
}

/// The JSON object a route takes as the payload.
pub struct Body {
    pub description: &'static str,
    pub required: &'static [Required],
    /// The payload type's schema (its path parameters' fields are dropped
    /// from it, `required` added).
    pub schema: BodySchema,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("description", &self.description)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// Which operation type a route enqueues.
#[derive(Debug)]
pub enum Kind {
    One(&'static str),
    /// Chosen by the path parameter `{verb}`: `(verb, type)` pairs; another
    /// verb is `404 not_found`.
    ByVerb(&'static [(&'static str, &'static str)]),
}

impl Kind {
    /// The operation type for `verb` (any verb for [`Kind::One`]).
    pub fn for_verb(&self, verb: Option<&str>) -> Option<&'static str> {
        match self {
            Kind::One(kind) => Some(kind),
            Kind::ByVerb(verbs) => verbs
                .iter()
                .find(|(name, _)| Some(*name) == verb)
                .map(|(_, kind)| *kind),
        }
    }
}

/// The path parameter that chooses the type in [`Kind::ByVerb`].
pub const VERB: &str = "verb";

/// A route that enqueues an operation (202 + the operation).
#[derive(Debug)]
pub struct Enqueue {
    pub kind: Kind,
    pub body: Option<Body>,
    pub query: &'static [QueryParam],
}

/// A read of observed objects of `kind`: every one on the target (a route
/// without path parameters) or the one its path names (`404` until observed).
#[derive(Debug)]
pub struct Observed {
    pub kind: &'static str,
    /// Joined with what opsqueue manages of that kind (its desired state).
    pub managed: bool,
    /// What the 200 answer holds, for the OpenAPI document.
    pub answer: &'static str,
    /// How to observe it, told in a 404; `{param}` is replaced by the path
    /// parameter's normal form.
    pub how: &'static str,
}

/// How a filter of an [`ObservedPage`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Equals,
    Prefix,
}

/// A query parameter that narrows an [`ObservedPage`] to the items whose
/// text at `pointer` (a JSON pointer into the item, `/name`,
/// `/managed/spec/domain`) matches it.
#[derive(Debug)]
pub struct Filter {
    pub name: &'static str,
    pub description: &'static str,
    pub pointer: &'static str,
    pub matches: Match,
}

/// [`Observed`]'s list, filtered and paged: `?limit=` (default 50, at most
/// 500) and `?offset=`, and the answer says the `total` that matched.
#[derive(Debug)]
pub struct ObservedPage {
    pub observed: Observed,
    pub filters: &'static [Filter],
}

/// What a [`BuildWorkflow`] gets: the request's fields (the JSON body,
/// plus the fields its path and query parameters fill), the family's
/// configuration section as configured (as JSON), and the record of the
/// subject, when the route names one.
#[derive(Debug)]
pub struct WorkflowInput<'a> {
    pub fields: &'a Map<String, Value>,
    pub section: &'a Value,
    /// The managed object's spec (see [`Workflow::subject`]).
    pub subject: Option<&'a Value>,
}

/// One request field a builder refuses (`422`, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRefusal {
    pub field: String,
    pub message: String,
}

impl FieldRefusal {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One step of a [`Plan`], as `POST /api/v1/workflows` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    pub name: &'static str,
    pub kind: &'static str,
    pub payload: Value,
    pub depends_on: Vec<&'static str>,
    /// The action that undoes it: `(type, payload)`.
    pub compensate: Option<(&'static str, Value)>,
    pub timeout_secs: Option<i64>,
}

impl PlanStep {
    pub fn new(name: &'static str, kind: &'static str, payload: Value) -> Self {
        Self {
            name,
            kind,
            payload,
            depends_on: Vec::new(),
            compensate: None,
            timeout_secs: None,
        }
    }

    pub fn after(mut self, step: &'static str) -> Self {
        self.depends_on.push(step);
        self
    }

    pub fn undo(mut self, kind: &'static str, payload: Value) -> Self {
        self.compensate = Some((kind, payload));
        self
    }
}

/// The workflow a route builds: its name, its steps, and whether a step
/// that fails for good undoes the completed ones (`compensate`) or stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub compensate: bool,
    pub steps: Vec<PlanStep>,
}

/// Builds a route's workflow from its request, or refuses request fields.
pub type BuildWorkflow = fn(&WorkflowInput) -> Result<Plan, Vec<FieldRefusal>>;

/// A route that builds a workflow (202 + the workflow, `Location:
/// /api/v1/workflows/{id}`).
#[derive(Debug)]
pub struct Workflow {
    pub build: BuildWorkflow,
    pub body: Option<Body>,
    pub query: &'static [QueryParam],
    /// The managed kind of the object the route acts on, named by its
    /// first path parameter: its record is read before the build and
    /// handed to it; `404` when opsqueue manages no such object.
    pub subject: Option<&'static str>,
    /// What the workflow does, for the OpenAPI document.
    pub steps: &'static str,
}

#[derive(Debug)]
pub enum Serves {
    Enqueue(Enqueue),
    Workflow(Workflow),
    Observed(Observed),
    ObservedPage(ObservedPage),
}

/// One typed route.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// `/api/v1/<family>/…` with `{param}`s.
    pub path: &'static str,
    /// One line, for the OpenAPI document.
    pub summary: &'static str,
    /// More, or `""`.
    pub description: &'static str,
    pub params: &'static [PathParam],
    pub serves: Serves,
}

impl Route {
    /// An enqueue route without a body or query parameters.
    pub const fn enqueue(
        method: Method,
        path: &'static str,
        summary: &'static str,
        params: &'static [PathParam],
        kind: &'static str,
    ) -> Route {
        Route {
            method,
            path,
            summary,
            description: "",
            params,
            serves: Serves::Enqueue(Enqueue {
                kind: Kind::One(kind),
                body: None,
                query: &[],
            }),
        }
    }
}
