//! Authentication and authorization, as one middleware that runs before
//! routing and before any body is read, so an unauthenticated caller learns
//! nothing but `401`, whatever else is wrong with its request.
//!
//! Two credentials: a key, and the dashboard's session cookie. The cookie
//! (HttpOnly, SameSite=Strict, see `ui/session.rs`) names a session that acts
//! with the key it was signed in with, for the dashboard's pages and for the
//! API calls and event stream the dashboard makes (an EventSource cannot
//! send a header). A request carrying a key header is judged by the key
//! alone. Every request that changes something on a session's behalf must
//! repeat the session's CSRF token, in `X-CSRF-Token` or as the `csrf`
//! field of a form (read here, then handed on to the handler), else it is
//! `403 csrf_failed`; SameSite=Strict already keeps other sites' requests
//! from carrying the cookie, the token is the second lock. A page of the
//! dashboard asked for without a session redirects to its sign-in page.
//!
//! A key is sent as `Authorization: Bearer <token>` or `X-API-Key: <token>`
//! and looked up by its sha256 in the store on every request (so a revoke,
//! even by `opsqueue-api keys revoke` in another process, takes effect at
//! once). The lookup is the one store read that does not go through
//! `Store::call`: each HTTP worker thread keeps its own connection and reads
//! the key on the event loop (one indexed row, microseconds; WAL readers do
//! not wait for writers). Handing every request to the blocking pool cost a
//! third of the API's CPU under load. If that connection cannot answer
//! within a few milliseconds, the lookup falls back to the pool. Missing, unknown or revoked → `401` with `WWW-Authenticate:
//! Bearer`. Reads (`GET`, `HEAD`) and signing out need the `read` scope,
//! everything else `write`; scopes nest (admin ⊃ write ⊃ read). Only
//! `/health`, the dashboard's sign-in page and its assets are open.
//!
//! The agent protocol (`/api/v1/agent/…`) needs the `agent` scope, and an
//! agent key may use nothing else (`403`): it cannot enqueue, read
//! operations or manage anything. Which targets it may act on is checked
//! by the agent routes, write by write. Agent requests are not rate
//! limited: a remote worker already batches its writes, and a limit would
//! only slow the work it was given.
//!
//! Order of checks: per-address rate limit, token, per-key rate limit,
//! scope (for the agent protocol: token, scope). The authenticated key is
//! left in the request's extensions for handlers to take as a [`Caller`].
//! `last_used_at` is written at most once a minute per key, off the
//! request's path.

use std::cell::RefCell;
use std::future::{Ready, ready};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use opsqueue_shared::Store;
use opsqueue_shared::store::rusqlite::Connection;
use opsqueue_shared::store::{ApiKey, Scope, Session, api_key_find, session_get, session_id_hash};

use crate::events::Credential;
use crate::problem::ApiError;
use crate::state::AppState;

/// Paths served without a key.
pub const OPEN_PATHS: &[&str] = &["/health", LOGIN_PATH];

/// Path prefixes served without a key (the dashboard's CSS and script).
pub const OPEN_PREFIXES: &[&str] = &["/ui/assets/"];

/// The dashboard's pages.
pub const UI_PREFIX: &str = "/ui";
pub const LOGIN_PATH: &str = "/ui/login";
pub const LOGOUT_PATH: &str = "/ui/logout";

/// The agent protocol's paths: agent keys only, and nothing else for them.
pub const AGENT_PREFIX: &str = "/api/v1/agent/";

pub const API_KEY_HEADER: &str = "x-api-key";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const SESSION_COOKIE: &str = "opsqueue_session";

/// A key lookup on the event loop gives up this soon on a locked database
/// (only WAL recovery can lock out a reader) and goes through the pool.
const LOOKUP_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// The key a request was made with, and how it was presented.
#[derive(Debug, Clone)]
pub struct Caller {
    key: ApiKey,
    via: Via,
}

#[derive(Debug, Clone)]
enum Via {
    /// A key header, with the token (to look it up again).
    Token(String),
    /// The dashboard's session cookie.
    Session(Box<Session>),
}

impl Caller {
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// The dashboard session the request came with, if any.
    pub fn session(&self) -> Option<&Session> {
        match &self.via {
            Via::Session(session) => Some(session.as_ref()),
            Via::Token(_) => None,
        }
    }

    /// What an event stream checks again now and then: whether this key
    /// (or session) may still read.
    pub fn credential(&self, store: &Store) -> CallerCredential {
        CallerCredential {
            store: store.clone(),
            via: self.via.clone(),
        }
    }
}

/// A caller's credential, looked up again on demand (see [`Credential`]).
pub struct CallerCredential {
    store: Store,
    via: Via,
}

impl Credential for CallerCredential {
    async fn still_valid(&self) -> bool {
        match &self.via {
            Via::Token(token) => find_key(&self.store, token.clone()).await.is_ok(),
            Via::Session(session) => find_session_by_hash(&self.store, session.id_hash.clone())
                .await
                .is_ok_and(|found| found.is_some()),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or(ApiError::Unauthorized("an API key is required")),
        )
    }
}

/// The scope a request needs, by its method (and signing out, which any
/// session may do).
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if method == Method::GET || method == Method::HEAD || path == LOGOUT_PATH {
        Scope::Read
    } else {
        Scope::Write
    }
}

fn has_key_header(req: &ServiceRequest) -> bool {
    req.headers().contains_key(header::AUTHORIZATION) || req.headers().contains_key(API_KEY_HEADER)
}

/// The token from `Authorization: Bearer` or `X-API-Key`.
fn presented_token(req: &ServiceRequest) -> Result<String, ApiError> {
    let headers = req.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not readable"))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>",
        ))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized(
                "expected Authorization: Bearer <token>",
            ));
        }
        return Ok(token.trim().to_owned());
    }
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let token = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the X-API-Key header is not readable"))?
            .trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    Err(ApiError::Unauthorized(
        "an API key is required: Authorization: Bearer <token> or X-API-Key: <token>",
    ))
}

thread_local! {
    /// This HTTP worker thread's own connection for key lookups.
    static LOOKUP: RefCell<Option<(PathBuf, Connection)>> = const { RefCell::new(None) };
}

/// Runs a lookup on this thread's own connection, without leaving the
/// event loop; `None` if that connection cannot answer quickly.
fn read_here<T>(
    database: &Path,
    lookup: impl FnOnce(&Connection) -> opsqueue_shared::store::Result<T>,
) -> Option<T> {
    LOOKUP.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(path, _)| path != database) {
            let conn = Connection::open(database).ok()?;
            conn.busy_timeout(LOOKUP_BUSY_TIMEOUT).ok()?;
            *slot = Some((database.to_path_buf(), conn));
        }
        let (_, conn) = slot.as_ref()?;
        match lookup(conn) {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::debug!(error = %e, "lookup on the worker thread failed; using the pool");
                *slot = None;
                None
            }
        }
    })
}

/// Runs a lookup here (see [`read_here`]), else on the pool.
async fn read<T: Send + 'static>(
    store: &Store,
    lookup: impl Fn(&Connection) -> opsqueue_shared::store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match read_here(store.path(), &lookup) {
        Some(found) => Ok(found),
        None => Ok(store.call(move |s| s.read(|c| lookup(c))).await?),
    }
}

async fn find_key(store: &Store, token: String) -> Result<ApiKey, ApiError> {
    let key = read(store, move |c| api_key_find(c, &token)).await?;
    match key {
        Some(key) if key.revoked_at.is_none() => Ok(key),
        Some(_) => Err(ApiError::Unauthorized("this API key has been revoked")),
        None => Err(ApiError::Unauthorized("unknown API key")),
    }
}

/// The live session with this id hash, if any.
async fn find_session_by_hash(store: &Store, id_hash: String) -> Result<Option<Session>, ApiError> {
    read(store, move |c| {
        session_get(c, &id_hash, opsqueue_shared::time::now())
    })
    .await
}

/// The session the request's cookie names, if it is live.
async fn find_session(store: &Store, req: &ServiceRequest) -> Result<Option<Session>, ApiError> {
    match req.cookie(SESSION_COOKIE) {
        Some(cookie) => find_session_by_hash(store, session_id_hash(cookie.value())).await,
        None => Ok(None),
    }
}

fn is_open(path: &str) -> bool {
    OPEN_PATHS.contains(&path) || OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

fn is_ui(path: &str) -> bool {
    path == UI_PREFIX || path.starts_with("/ui/")
}

/// A dashboard page asked for without a session: to the sign-in page, and
/// back here afterwards.
fn to_sign_in(req: &ServiceRequest) -> actix_web::Error {
    let back = req.uri().path_and_query().map_or(UI_PREFIX, |p| p.as_str());
    let location = format!(
        "{LOGIN_PATH}?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("next", back)
            .finish()
    );
    actix_web::error::InternalError::from_response(
        "sign in first",
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .finish(),
    )
    .into()
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks the CSRF token of a session's request that changes something:
/// the header, or the `csrf` field of a form body (which is read here and
/// handed on unchanged).
async fn check_csrf(req: &mut ServiceRequest, session: &Session) -> Result<(), actix_web::Error> {
    let refuse = || ApiError::CsrfFailed.into();
    if let Some(value) = req.headers().get(CSRF_HEADER) {
        return match value.to_str() {
            Ok(token) if same_secret(token, &session.csrf_token) => Ok(()),
            _ => Err(refuse()),
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refuse());
    }
    let body = req.extract::<web::Bytes>().await?;
    let fields = web::Query::<Vec<(String, String)>>::from_query(
        std::str::from_utf8(&body).map_err(|_| refuse())?,
    )
    .map_err(|_| refuse())?;
    let presented = fields
        .iter()
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.as_str());
    req.set_payload(actix_web::dev::Payload::from(body));
    match presented {
        Some(token) if same_secret(token, &session.csrf_token) => Ok(()),
        _ => Err(refuse()),
    }
}

/// The middleware: see the module header.
pub async fn authenticate(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path() == "/health" {
        return next.call(req).await;
    }
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("the app state is registered")
        .clone();
    let agent_protocol = req.path().starts_with(AGENT_PREFIX);
    if !agent_protocol && let Some(peer) = req.peer_addr() {
        state.limits.check_address(peer.ip())?;
    }
    if is_open(req.path()) {
        return next.call(req).await;
    }
    let caller = if has_key_header(&req) {
        let token = presented_token(&req)?;
        Caller {
            key: find_key(&state.store, token.clone()).await?,
            via: Via::Token(token),
        }
    } else {
        match find_session(&state.store, &req).await? {
            Some(session) => Caller {
                key: session.key.clone(),
                via: Via::Session(Box::new(session)),
            },
            None if is_ui(req.path())
                && required_scope(req.method(), req.path()) == Scope::Read =>
            {
                return Err(to_sign_in(&req));
            }
            None if req.cookie(SESSION_COOKIE).is_some() => {
                return Err(ApiError::Unauthorized(
                    "the dashboard session has ended; sign in again",
                )
                .into());
            }
            None => {
                return Err(presented_token(&req)
                    .err()
                    .unwrap_or(ApiError::Unauthorized("an API key is required"))
                    .into());
            }
        }
    };
    let key = caller.key();
    if !agent_protocol {
        state.limits.check_key(&key.id)?;
    }
    let needed = if agent_protocol {
        Scope::Agent
    } else {
        required_scope(req.method(), req.path())
    };
    if !key.allows(needed) {
        let detail = if key.is_agent() {
            format!(
                "an agent key can only run its targets' work through {AGENT_PREFIX} \
                 (claim, heartbeat, log, progress, finish); {} {} is not for it",
                req.method(),
                req.path()
            )
        } else if agent_protocol {
            format!("only an agent key (scope agent) can use {AGENT_PREFIX}")
        } else {
            format!(
                "this API key lacks the {needed} scope that {} requests need",
                req.method()
            )
        };
        return Err(ApiError::Forbidden(detail).into());
    }
    if let Some(session) = caller.session()
        && !matches!(*req.method(), Method::GET | Method::HEAD)
    {
        check_csrf(&mut req, session).await?;
    }
    state.key_touches.touch(&state.store, &key.id);
    req.extensions_mut().insert(caller);
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn both_key_headers_are_accepted_and_anything_else_is_refused() {
        let bearer = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer oq_abc"))
            .to_srv_request();
        assert_eq!(presented_token(&bearer).unwrap(), "oq_abc");
        let lower = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "bearer oq_abc"))
            .to_srv_request();
        assert_eq!(presented_token(&lower).unwrap(), "oq_abc");
        let api_key = TestRequest::default()
            .insert_header((API_KEY_HEADER, "oq_def"))
            .to_srv_request();
        assert_eq!(presented_token(&api_key).unwrap(), "oq_def");
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "oq_abc"] {
            let req = TestRequest::default()
                .insert_header((header::AUTHORIZATION, bad))
                .to_srv_request();
            assert!(presented_token(&req).is_err(), "{bad:?} was accepted");
        }
        assert!(presented_token(&TestRequest::default().to_srv_request()).is_err());
    }

    #[test]
    fn reads_and_signing_out_need_read_and_everything_else_needs_write() {
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/operations"),
            Scope::Read
        );
        assert_eq!(required_scope(&Method::HEAD, "/ui"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, LOGOUT_PATH), Scope::Read);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(required_scope(&method, "/api/v1/operations"), Scope::Write);
        }
    }

    #[test]
    fn a_secret_is_equal_only_to_itself() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
