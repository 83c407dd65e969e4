//! Authentication and authorization, as one middleware that runs before
//! routing and before any body is read, so an unauthenticated caller learns
//! nothing but `401`, whatever else is wrong with its request.
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
//! Bearer`. Reads (`GET`, `HEAD`) need the `read` scope, everything else
//! `write`; scopes nest (admin ⊃ write ⊃ read). Only `/health` is open.
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
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use opsqueue_shared::Store;
use opsqueue_shared::store::rusqlite::Connection;
use opsqueue_shared::store::{ApiKey, Scope, api_key_find};

use crate::problem::ApiError;
use crate::state::AppState;

/// Paths served without a key.
pub const OPEN_PATHS: &[&str] = &["/health"];

/// The agent protocol's paths: agent keys only, and nothing else for them.
pub const AGENT_PREFIX: &str = "/api/v1/agent/";

pub const API_KEY_HEADER: &str = "x-api-key";

/// A key lookup on the event loop gives up this soon on a locked database
/// (only WAL recovery can lock out a reader) and goes through the pool.
const LOOKUP_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// The key a request was made with.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

impl Caller {
    pub fn key(&self) -> &ApiKey {
        &self.0
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

/// The scope a request needs, by its method.
pub fn required_scope(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Write
    }
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

/// Looks the token up on this thread's own connection, without leaving
/// the event loop; `None` if that connection cannot answer quickly.
fn find_key_here(database: &Path, token: &str) -> Option<Option<ApiKey>> {
    LOOKUP.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(path, _)| path != database) {
            let conn = Connection::open(database).ok()?;
            conn.busy_timeout(LOOKUP_BUSY_TIMEOUT).ok()?;
            *slot = Some((database.to_path_buf(), conn));
        }
        let (_, conn) = slot.as_ref()?;
        match api_key_find(conn, token) {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::debug!(error = %e, "key lookup on the worker thread failed; using the pool");
                *slot = None;
                None
            }
        }
    })
}

async fn find_key(store: &Store, token: String) -> Result<ApiKey, ApiError> {
    let key = match find_key_here(store.path(), &token) {
        Some(found) => found,
        None => {
            store
                .call(move |s| s.read(|c| api_key_find(c, &token)))
                .await?
        }
    };
    match key {
        Some(key) if key.revoked_at.is_none() => Ok(key),
        Some(_) => Err(ApiError::Unauthorized("this API key has been revoked")),
        None => Err(ApiError::Unauthorized("unknown API key")),
    }
}

/// The middleware: see the module header.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if OPEN_PATHS.contains(&req.path()) {
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
    let key = find_key(&state.store, presented_token(&req)?).await?;
    if !agent_protocol {
        state.limits.check_key(&key.id)?;
    }
    let needed = if agent_protocol {
        Scope::Agent
    } else {
        required_scope(req.method())
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
    state.key_touches.touch(&state.store, &key.id);
    req.extensions_mut().insert(Caller(key));
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
    fn reads_need_read_and_everything_else_needs_write() {
        assert_eq!(required_scope(&Method::GET), Scope::Read);
        assert_eq!(required_scope(&Method::HEAD), Scope::Read);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(required_scope(&method), Scope::Write);
        }
    }
}
