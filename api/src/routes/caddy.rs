//! `/api/v1/caddy`: reverse-proxy sites for deployed services. Changes
//! enqueue `caddy.*` operations (202 + the operation); the site list
//! answers at once from the last observation of Caddy's configuration,
//! joined with the sites opsqueue manages (their desired upstream).
//!
//! The managed sites are the desired state: `POST /api/v1/caddy/reload`
//! (and the monitor's `refresh-caddy` schedule) re-applies them, so they
//! survive a Caddy restart; `POST /api/v1/caddy/validate` reports drift
//! without changing anything.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use opsqueue_shared::actions::caddy::{FAMILY, SITE_KIND};
use opsqueue_shared::names::Domain;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::enqueue::{TypedQuery, enqueue_typed};
use crate::managed;
use crate::observed::{self, ObservedList};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn domain(text: &str) -> Result<Domain, ApiError> {
    Domain::parse(text).map_err(|e| ApiError::invalid_field("domain", e.to_string()))
}

/// The sites Caddy served when last observed, and those opsqueue manages.
#[utoipa::path(
    tag = "caddy",
    params(TypedQuery),
    responses(
        (status = 200, description = "Each site as observed (domain, server, upstreams, whether opsqueue added it) with observed_at, and `managed` (its desired upstream) for the sites opsqueue manages", body = ObservedList),
    ),
)]
#[get("/api/v1/caddy/sites")]
pub async fn caddy_list_sites(
    state: web::Data<AppState>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = observed::target(query.target.as_deref())?;
    let list = managed::list(&state, &target, FAMILY, SITE_KIND).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// One site as last observed, and its desired state if opsqueue manages it.
#[utoipa::path(
    tag = "caddy",
    params(("domain" = String, Path, description = "The site's domain"), TypedQuery),
    responses(
        (status = 200, description = "The site with observed_at and `managed`", body = Object),
        (status = 404, description = "Neither observed nor managed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid domain", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/caddy/sites/{domain}")]
pub async fn caddy_get_site(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let domain = domain(&path)?;
    let target = observed::target(query.target.as_deref())?;
    let how = "POST /api/v1/caddy/refresh observes every site";
    let site = managed::one(&state, &target, FAMILY, SITE_KIND, domain.as_str(), how).await?;
    Ok(HttpResponse::Ok().json(site))
}

/// Proxy a domain to a local upstream (`caddy.site.add`).
///
/// Body: `{domain, upstream}` with `upstream` as `host:port` on this host
/// or a private network (`127.0.0.1:8090`, `[::1]:8090`, `localhost:8090`,
/// `10.0.0.5:8080`). The same site again is `changed: false`; another
/// upstream replaces the old one in place.
#[utoipa::path(
    tag = "caddy",
    params(TypedQuery),
    request_body(content = Object, description = "{domain, upstream}"),
    responses(
        (status = 202, description = "Accepted: a caddy.site.add operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid domain or upstream, or the family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/caddy/sites")]
pub async fn caddy_add_site(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(
        &state,
        &caller,
        &req,
        &query,
        "caddy.site.add",
        body.into_inner(),
    )
    .await
}

/// Remove a site (`caddy.site.remove`); an absent one is `changed: false`.
#[utoipa::path(
    tag = "caddy",
    params(("domain" = String, Path, description = "The site's domain"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a caddy.site.remove operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid domain", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/caddy/sites/{domain}")]
pub async fn caddy_remove_site(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let domain = domain(&path)?;
    enqueue_typed(
        &state,
        &caller,
        &req,
        &query,
        "caddy.site.remove",
        json!({"domain": domain}),
    )
    .await
}

/// Re-apply every managed site to Caddy (`caddy.reload`), e.g. after a
/// restart; the result lists the sites that had to be re-applied.
#[utoipa::path(
    tag = "caddy",
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: a caddy.reload operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/caddy/reload")]
pub async fn caddy_reload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(&state, &caller, &req, &query, "caddy.reload", json!({})).await
}

/// Compare the managed sites with Caddy's live configuration
/// (`caddy.validate`): `{ok, checked, missing, drifted, duplicated}`.
#[utoipa::path(
    tag = "caddy",
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: a caddy.validate operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/caddy/validate")]
pub async fn caddy_validate(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(&state, &caller, &req, &query, "caddy.validate", json!({})).await
}

/// Observe the sites Caddy serves (`caddy.list`).
#[utoipa::path(
    tag = "caddy",
    params(TypedQuery),
    responses(
        (status = 202, description = "Accepted: a caddy.list operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The family is disabled", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/caddy/refresh")]
pub async fn caddy_refresh(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    enqueue_typed(&state, &caller, &req, &query, "caddy.list", json!({})).await
}
