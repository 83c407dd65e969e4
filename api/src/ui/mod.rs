//! The dashboard at `/ui`: server-rendered HTML (maud, checked at compile
//! time, escaped by default), one stylesheet and one small script of our
//! own, every byte compiled into this binary; nothing is loaded from
//! another origin, so it works on a host without internet.
//!
//! The dashboard is a client of the same API semantics: it reads through
//! the store functions the JSON routes use, and every change goes through
//! the same parse and enqueue as the API (firing an operation is
//! `POST /api/v1/operations`'s parse, cancel and retry are the routes' own
//! functions, a family's workflow is its typed route's handler), so a
//! refusal is the API's, shown field by field.
//!
//! Pages live one module each (`overview`, `operations`, `fire`,
//! `schedules`, `workers`, `workflows`, `families`, and `pocketbase` for
//! the forms its family page links to), over `layout` (the page shell, the
//! navigation, shared pieces) and `session` (sign-in, sign-out). Adding a
//! page: a module with its handlers, one line in [`configure`], and a
//! [`layout::Section`] if it belongs in the navigation. The auth middleware
//! decides who may see what (a session or a key; write scope to change
//! anything, with the CSRF token) before a handler runs; a handler only
//! hides what the caller's key could not do anyway.

mod assets;
mod families;
mod fire;
mod layout;
mod migrations;
mod operations;
mod overview;
mod pocketbase;
mod schedules;
mod session;
mod workers;
mod workflows;

use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder, web};
use maud::Markup;

use crate::problem::ApiError;

/// Registers every page of the dashboard.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(overview::page))
        .route("/ui/", web::get().to(overview::page))
        .route("/ui/overview/stats", web::get().to(overview::stats))
        .route("/ui/login", web::get().to(session::sign_in_page))
        .route("/ui/login", web::post().to(session::sign_in))
        .route("/ui/logout", web::post().to(session::sign_out))
        .route("/ui/assets/{name}", web::get().to(assets::serve))
        .route("/ui/operations", web::get().to(operations::list))
        .route("/ui/operations/{id}", web::get().to(operations::detail))
        .route("/ui/operations/{id}/row", web::get().to(operations::row))
        .route(
            "/ui/operations/{id}/summary",
            web::get().to(operations::summary),
        )
        .route(
            "/ui/operations/{id}/cancel",
            web::post().to(operations::cancel),
        )
        .route(
            "/ui/operations/{id}/retry",
            web::post().to(operations::retry),
        )
        .route("/ui/fire", web::get().to(fire::form))
        .route("/ui/fire", web::post().to(fire::fire))
        .route("/ui/schedules", web::get().to(schedules::list))
        .route("/ui/schedules/{name}", web::post().to(schedules::update))
        .route("/ui/workers", web::get().to(workers::list))
        .route("/ui/workflows/{id}", web::get().to(workflows::page))
        .route("/ui/migrations", web::get().to(migrations::page))
        .route(
            migrations::ROWS_PATH,
            web::get().to(migrations::rows_fragment),
        )
        .route("/ui/families/{family}", web::get().to(families::page))
        .route(pocketbase::CREATE_PATH, web::get().to(pocketbase::form))
        .route(pocketbase::CREATE_PATH, web::post().to(pocketbase::create))
        .route(
            "/ui/pocketbase/services/{name}/delete",
            web::post().to(pocketbase::delete),
        );
}

/// An HTML answer with the headers every page carries: no caching, no
/// framing, no script or style but our own.
fn html(mut response: HttpResponseBuilder, markup: Markup) -> HttpResponse {
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(markup.into_string())
}

fn ok(markup: Markup) -> HttpResponse {
    html(HttpResponse::Ok(), markup)
}

/// After a form that worked: to `location`, as a GET.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Where an accepted request (`202`) says its operation or workflow is:
/// `/api/v1/operations/{id}`, `/api/v1/workflows/{id}`.
fn accepted_location(accepted: &HttpResponse) -> Result<&str, ApiError> {
    accepted
        .headers()
        .get(header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .ok_or_else(|| ApiError::internal("an accepted request without its Location"))
}

/// After a form the API accepted: to the dashboard's page of what it made,
/// its `Location` under `/ui` (`/api/v1/operations/{id}` is
/// `/ui/operations/{id}`, a workflow's `/ui/workflows/{id}`).
fn see_accepted(accepted: &HttpResponse) -> Result<HttpResponse, ApiError> {
    let location = accepted_location(accepted)?;
    let rest = location
        .strip_prefix("/api/v1/")
        .ok_or_else(|| ApiError::internal(format!("an accepted request at {location}")))?;
    Ok(see_other(&format!("/ui/{rest}")))
}

/// `key=value&…` with both sides encoded; empty values left out.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if !value.is_empty() {
            serializer.append_pair(key, value);
        }
    }
    serializer.finish()
}

/// A form's text field: absent and blank are the same.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
