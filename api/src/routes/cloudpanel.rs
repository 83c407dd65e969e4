//! `/api/v1/cloudpanel`: the CloudPanel API's routes over `clpctl`. Each
//! enqueues a `cloudpanel.*` operation and answers 202 + the operation; the
//! body is the operation's payload. Passwords are secret fields: stored
//! apart and shown as `"***"` in every answer, including this one.

use actix_web::{HttpRequest, HttpResponse, delete, post, web};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::enqueue::{TypedQuery, enqueue_typed};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Add a site (`cloudpanel.site.add`).
///
/// Body: `{site_type: php|nodejs|static|python|reverse-proxy, domain,
/// site_user, site_user_password, php_version?, vhost_template?,
/// nodejs_version?, python_version?, app_port?, reverse_proxy_url?}` (each
/// type takes its own fields). A site whose htdocs already exists is
/// `changed: false`.
#[utoipa::path(
    tag = "cloudpanel",
    params(TypedQuery),
    request_body(content = Object, description = "The site"),
    responses(
        (status = 202, description = "Accepted: a cloudpanel.site.add operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The body does not parse", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/cloudpanel/sites")]
pub async fn add_site(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    enqueue_typed(&state, &caller, &req, &query, "cloudpanel.site.add", body).await
}

/// Delete a site (`cloudpanel.site.delete`, with `--force`); an absent site
/// is `changed: false`.
#[utoipa::path(
    tag = "cloudpanel",
    params(("domain" = String, Path, description = "The site's domain"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a cloudpanel.site.delete operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid domain", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/cloudpanel/sites/{domain}")]
pub async fn delete_site(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    domain: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let payload = json!({"domain": domain.into_inner()});
    enqueue_typed(
        &state,
        &caller,
        &req,
        &query,
        "cloudpanel.site.delete",
        payload,
    )
    .await
}

/// Add a database to a site (`cloudpanel.db.add`).
///
/// Body: `{domain, database_name, database_user_name,
/// database_user_password}`.
#[utoipa::path(
    tag = "cloudpanel",
    params(TypedQuery),
    request_body(content = Object, description = "The database"),
    responses(
        (status = 202, description = "Accepted: a cloudpanel.db.add operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The body does not parse", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/cloudpanel/databases")]
pub async fn add_database(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    enqueue_typed(&state, &caller, &req, &query, "cloudpanel.db.add", body).await
}

/// Add a panel user (`cloudpanel.user.add`).
///
/// Body: `{user_name, email, first_name, last_name, password, role:
/// admin|site-manager|user, sites?, timezone?, active?}`. A user that
/// `clpctl user:list` shows is `changed: false`.
#[utoipa::path(
    tag = "cloudpanel",
    params(TypedQuery),
    request_body(content = Object, description = "The user"),
    responses(
        (status = 202, description = "Accepted: a cloudpanel.user.add operation", body = opsqueue_shared::Operation),
        (status = 422, description = "The body does not parse", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/cloudpanel/users")]
pub async fn add_user(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<TypedQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    enqueue_typed(&state, &caller, &req, &query, "cloudpanel.user.add", body).await
}

/// Delete a panel user (`cloudpanel.user.delete`); an absent user is
/// `changed: false`.
#[utoipa::path(
    tag = "cloudpanel",
    params(("name" = String, Path, description = "The user name"), TypedQuery),
    responses(
        (status = 202, description = "Accepted: a cloudpanel.user.delete operation", body = opsqueue_shared::Operation),
        (status = 422, description = "Invalid user name", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/api/v1/cloudpanel/users/{name}")]
pub async fn delete_user(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<TypedQuery>,
) -> Result<HttpResponse, ApiError> {
    let payload = json!({"user_name": name.into_inner()});
    enqueue_typed(
        &state,
        &caller,
        &req,
        &query,
        "cloudpanel.user.delete",
        payload,
    )
    .await
}
