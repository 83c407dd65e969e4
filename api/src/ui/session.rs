//! Signing in and out. Sign-in takes an API key (the one secret a person
//! already has) and makes a server-side session: the cookie holds only a
//! random id, HttpOnly (no script reads it), SameSite=Strict (no other site
//! sends it), Secure when the request came over TLS (directly, or through a
//! proxy that says so with `X-Forwarded-Proto`/`Forwarded`), for
//! `api.session_secs`. The key itself is never stored in the browser.
//!
//! A sign-in form posted from another site is refused (`Sec-Fetch-Site`,
//! else `Origin`), so nobody can sign a browser in with their own key.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{DOCTYPE, Markup, html};
use opsqueue_shared::store::{api_key_find, session_delete, session_insert};
use serde::Deserialize;

use super::{html, see_other};
use crate::auth::{Caller, LOGIN_PATH, SESSION_COOKIE, UI_PREFIX};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    key: String,
    next: Option<String>,
}

/// Where to go after signing in: a dashboard path of this server, never
/// another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if (next == UI_PREFIX || next.starts_with("/ui/") || next.starts_with("/ui?"))
                && !next.contains("//")
                && !next.contains('\\') =>
        {
            next
        }
        _ => UI_PREFIX,
    }
}

fn sign_in_document(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · opsqueue" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href={"/ui/assets/app.css?v=" (opsqueue_shared::VERSION)};
            }
            body {
                main.login {
                    h1 { "opsqueue" }
                    div.panel {
                        form.stack method="post" action=(LOGIN_PATH) {
                            input type="hidden" name="next" value=(next);
                            label.field {
                                "API key"
                                span.hint { "A key made with " code { "opsqueue-api keys create" } "; the first admin key is in the file the API's log names." }
                                input #key type="password" name="key" autocomplete="current-password"
                                    required autofocus aria-invalid=[error.map(|_| "true")];
                            }
                            @if let Some(error) = error {
                                p.field-error role="alert" { (error) }
                            }
                            div { button type="submit" { "Sign in" } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn sign_in_page(query: web::Query<NextQuery>) -> HttpResponse {
    super::ok(sign_in_document(safe_next(query.next.as_deref()), None))
}

/// Whether the browser says the form came from another site.
fn cross_site(req: &HttpRequest) -> bool {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), req.connection_info().host()) {
        (Some(origin), host) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        }
        (None, _) => false,
    }
}

pub async fn sign_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref()).to_owned();
    if cross_site(&req) {
        return Err(ApiError::Forbidden(
            "a sign-in must come from this dashboard's own page".into(),
        ));
    }
    let token = form.key.trim().to_owned();
    let key = state
        .store
        .call(move |s| s.read(|c| api_key_find(c, &token)))
        .await?
        .filter(|key| key.revoked_at.is_none());
    let Some(key) = key else {
        return Ok(html(
            HttpResponse::Unauthorized(),
            sign_in_document(&next, Some("This key is unknown or revoked.")),
        ));
    };
    if key.is_agent() {
        return Ok(html(
            HttpResponse::Forbidden(),
            sign_in_document(
                &next,
                Some("An agent key only runs its hosts' work; sign in with a read or write key."),
            ),
        ));
    }
    let now = opsqueue_shared::time::now();
    let lasts = chrono::Duration::seconds(state.config.api.session_secs as i64);
    let (cookie, _) = state
        .store
        .call(move |s| s.write(|tx| session_insert(tx, &key, now, now + lasts)))
        .await?;
    let secure = req.connection_info().scheme() == "https";
    let cookie = Cookie::build(SESSION_COOKIE, cookie)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            state.config.api.session_secs as i64,
        ))
        .finish();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .cookie(cookie)
        .finish())
}

pub async fn sign_out(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    if let Some(session) = caller.session() {
        let id_hash = session.id_hash.clone();
        state
            .store
            .call(move |s| s.write(|tx| session_delete(tx, &id_hash)))
            .await?;
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    let mut response = see_other(LOGIN_PATH);
    response.add_cookie(&gone).map_err(ApiError::internal)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_only_a_dashboard_path_of_this_server_is_followed() {
        assert_eq!(
            safe_next(Some("/ui/operations?status=failed")),
            "/ui/operations?status=failed"
        );
        assert_eq!(safe_next(Some("/ui")), "/ui");
        for bad in [
            "https://evil.example",
            "//evil.example/ui",
            "/api/v1/operations",
            "/ui/..//x",
            "/uix",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui");
    }
}
