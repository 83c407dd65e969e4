//! The OpenAPI document, served at `/api/v1/openapi.json`: the
//! hand-written routes' paths (from their `#[utoipa::path]` annotations,
//! see `routes/mod.rs`) and the families' typed routes' paths (generated
//! from their route tables, see `typed.rs`), under one info block, one tag
//! per family and two security schemes, either of which works: `bearer`
//! (`Authorization: Bearer <token>`) and `api_key` (`X-API-Key`).
//!
//! The application builds it once at start ([`Document::build`]) from what
//! it registers, so the document lists exactly the routes it serves.

use opsqueue_shared::families::FAMILIES;
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

/// The document as JSON, rendered once per process.
#[derive(Debug, Clone)]
pub struct Document(pub String);

impl Document {
    /// `hand_written` (a document holding the hand-written paths and the
    /// schemas they use) and `typed` (the typed routes' paths) under the
    /// info, tags and security of the whole API.
    pub fn build(hand_written: utoipa::openapi::OpenApi, typed: Paths) -> Document {
        let mut doc = Base::openapi().merge_from(hand_written);
        doc.paths.paths.extend(typed.paths);
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
        Document(doc.to_json().expect("the OpenAPI document serializes"))
    }
}
