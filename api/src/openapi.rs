//! The OpenAPI document, served at `/api/v1/openapi.json`: the
//! hand-written routes' paths (from their `#[utoipa::path]` annotations,
//! see `routes/mod.rs`) and the families' typed routes' paths (generated
//! from their route tables, see `typed.rs`), under one info block, one tag
//! per family and two security schemes, either of which works: `bearer`
//! (`Authorization: Bearer <token>`) and `api_key` (`X-API-Key`).
//!
//! The application builds it once at start ([`Document::build`]) from what
//! it registers, so the document lists exactly the routes it serves; the
//! same paths answer which methods a served path takes ([`Document::allowed`],
//! the `Allow` of a `405`).

use actix_web::dev::ResourceDef;
use opsqueue_shared::families::FAMILIES;
use opsqueue_shared::families::route::SchemaRefs;
use utoipa::openapi::path::Paths;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsqueue",
        description = "A durable queue of operations that change a Linux host. Errors are RFC 9457 \
                       application/problem+json documents with a stable `code`."
    ),
    components(schemas(
        crate::problem::Problem,
        crate::problem::FieldError,
        opsqueue_shared::Operation,
        crate::observed::ObservedList,
    )),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "operations", description = "Accept, read, follow, cancel and retry operations"),
        (name = "events", description = "The event stream (Server-Sent Events)"),
        (name = "schedules", description = "Operations enqueued on a cron schedule"),
        (name = "workers", description = "The worker processes"),
        (name = "workflows", description = "Operations composed into a graph: steps with dependencies, compensation, cancel and retry of the whole"),
        (name = "health", description = "Probes, metrics and this document"),
    )
)]
struct Base;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The answers every route can give besides its own: `401` (a route that
/// needs a key), `429` (the rate limits), `503` (a busy or full store) on
/// every route but `/health`, `400 invalid_id` on a route with an `{id}`
/// (always a UUID), `400 invalid_query` on a route with query fields
/// (unknown ones are refused).
fn add_common_responses(path: &str, operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    let open = crate::auth::OPEN_PATHS.contains(&path);
    use utoipa::openapi::RefOr;
    let params: Vec<_> = operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p),
            RefOr::Ref(_) => None,
        })
        .collect();
    let has_id = params
        .iter()
        .any(|p| p.name == "id" && p.parameter_in == ParameterIn::Path);
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = operation.request_body.is_some();
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| crate::typed::problem(description).build().into());
    };
    if !open {
        add("401", "No key, or an unknown or revoked one (unauthorized)");
        add("403", "The key's scope does not allow it (forbidden)");
        add(
            "503",
            "The store is busy (store_busy) or its filesystem full (storage_full); see Retry-After",
        );
    }
    add("429", "Over a rate limit (rate_limited); see Retry-After");
    if has_id {
        add("400", "The id is not a UUID (invalid_id)");
    }
    if has_query {
        add("400", "An unknown or malformed query field (invalid_query)");
    }
    if has_body {
        add("400", "The body is not JSON (malformed_json)");
        add("413", "The body is over the limit (payload_too_large)");
        add(
            "415",
            "The body is not application/json (unsupported_media_type)",
        );
    }
}

/// The document as JSON, rendered once per process, and the methods of
/// each documented (so served) path.
#[derive(Debug, Clone)]
pub struct Document {
    pub json: String,
    served: Vec<(ResourceDef, Vec<&'static str>)>,
}

impl Document {
    /// `hand_written` (a document holding the hand-written paths and the
    /// schemas they use) and `typed` (the typed routes' paths) under the
    /// info, tags and security of the whole API.
    pub fn build(
        hand_written: utoipa::openapi::OpenApi,
        typed: Paths,
        typed_schemas: SchemaRefs,
    ) -> Document {
        let mut doc = Base::openapi().merge_from(hand_written);
        doc.paths.paths.extend(typed.paths);
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, schema) in typed_schemas {
            components.schemas.entry(name).or_insert(schema);
        }
        doc.info.version = opsqueue_shared::VERSION.to_owned();
        let tags: Vec<_> = FAMILIES
            .iter()
            .filter(|family| {
                let prefix = format!("/api/v1/{}/", family.name);
                doc.paths.paths.keys().any(|path| path.starts_with(&prefix))
            })
            .map(|family| {
                TagBuilder::new()
                    .name(family.name)
                    .description(Some(family.description))
                    .build()
            })
            .collect();
        doc.tags.get_or_insert_with(Vec::new).extend(tags);
        for (path, item) in doc.paths.paths.iter_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common_responses(path, operation);
            }
        }
        let served = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("OPTIONS", item.options.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("TRACE", item.trace.is_some()),
                ];
                let methods = methods
                    .into_iter()
                    .filter_map(|(method, served)| served.then_some(method))
                    .collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        Document {
            json: doc.to_json().expect("the OpenAPI document serializes"),
            served,
        }
    }

    /// The methods served at `path`, in a stable order; empty when no
    /// route serves it. Of the patterns that match, the most specific ones
    /// count (fewest parameters: `…/{vmid}/metrics` over `…/{vmid}/{action}`).
    pub fn allowed(&self, path: &str) -> Vec<String> {
        let matching: Vec<_> = self
            .served
            .iter()
            .filter(|(pattern, _)| pattern.is_match(path))
            .collect();
        let fewest = matching
            .iter()
            .map(|(pattern, _)| pattern.pattern().unwrap_or_default().matches('{').count())
            .min();
        let mut methods: Vec<String> = Vec::new();
        for (pattern, served) in matching {
            let params = pattern.pattern().unwrap_or_default().matches('{').count();
            if Some(params) == fewest {
                for method in served {
                    if !methods.iter().any(|m| m == method) {
                        methods.push((*method).to_owned());
                    }
                }
            }
        }
        methods
    }
}
