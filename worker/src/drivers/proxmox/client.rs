//! A thin client for the PVE REST API (`https://host:port/api2/json`): the
//! API token header, TLS as the node is configured (a pinned CA, the
//! built-in roots, or no verification), PVE's `{"data": …}` envelope, and
//! every failure classified for the executor.
//!
//! Classification: no answer (refused, reset, timed out) and 5xx are
//! retryable, except the 500s in which PVE refuses a request that will
//! never succeed as asked (a missing guest, a guest not running, a
//! migration PVE forbids), and 501 (no such method). 401 (the token),
//! 403 (its rights), 400 (parameters) and certificate failures are
//! permanent.
//!
//! The token secret goes into the `Authorization` header only (marked
//! sensitive, so reqwest keeps it out of its debug output); no error, log
//! line or result built here contains it.

use std::time::Duration;

use opsqueue_shared::families::proxmox::Connection;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::drivers::driver::DriverError;

/// Error codes of the proxmox driver.
pub mod codes {
    /// No answer from PVE (refused, reset, timed out): retryable.
    pub const UNREACHABLE: &str = "proxmox_unreachable";
    /// PVE answered 5xx: retryable.
    pub const SERVER_ERROR: &str = "proxmox_server_error";
    /// PVE refused the request in a way a retry cannot change.
    pub const REFUSED: &str = "proxmox_refused";
    /// 401: the token id or secret is wrong, or the token expired.
    pub const AUTH_FAILED: &str = "proxmox_auth_failed";
    /// 403: the token lacks a privilege.
    pub const FORBIDDEN: &str = "proxmox_forbidden";
    /// 400: PVE refused a parameter.
    pub const INVALID_PARAMETERS: &str = "proxmox_invalid_parameters";
    /// The certificate did not verify, or the CA certificate is unusable.
    pub const TLS: &str = "proxmox_tls";
    /// PVE's answer was not what its API documents.
    pub const BAD_RESPONSE: &str = "proxmox_bad_response";
    /// The registered node no longer exists.
    pub const NODE_NOT_FOUND: &str = "proxmox_node_not_found";
    /// No guest with this vmid in the node's cluster.
    pub const GUEST_NOT_FOUND: &str = "proxmox_guest_not_found";
    /// The guest is not of the type the operation named.
    pub const GUEST_TYPE_MISMATCH: &str = "proxmox_guest_type_mismatch";
    /// The action needs a running guest.
    pub const GUEST_NOT_RUNNING: &str = "proxmox_guest_not_running";
    /// The PVE task ended with an error.
    pub const TASK_FAILED: &str = "proxmox_task_failed";
    /// A migration task ended OK but the guest is not on the target.
    pub const MIGRATION_UNCONFIRMED: &str = "proxmox_migration_unconfirmed";
    /// The store could not be read.
    pub const STORE: &str = "proxmox_store";
}

/// 500 messages in which PVE refuses for good (pve-manager, qemu-server,
/// pve-container wording).
const PERMANENT_500: &[&str] = &[
    "does not exist",
    "not running",
    "already running",
    "can't migrate",
    "no such cluster node",
    "is a template",
    "not implemented",
];

/// One PVE endpoint, as a registered node or an unsaved test configures it.
#[derive(Clone)]
pub struct PveClient {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl PveClient {
    pub fn new(connection: &Connection) -> Result<Self, DriverError> {
        let base = Url::parse(&connection.base_url()).map_err(|e| {
            DriverError::permanent(codes::INVALID_PARAMETERS, format!("bad address: {e}"))
        })?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(u64::from(connection.timeout_secs)))
            .connect_timeout(Duration::from_secs(
                u64::from(connection.timeout_secs).min(10),
            ))
            .user_agent(concat!("opsqueue/", env!("CARGO_PKG_VERSION")));
        if !connection.verify_tls {
            builder = builder.danger_accept_invalid_certs(true);
        } else if let Some(ca) = &connection.ca_cert {
            let cert = reqwest::Certificate::from_pem(ca.as_str().as_bytes()).map_err(|e| {
                DriverError::permanent(codes::TLS, format!("the CA certificate is unusable: {e}"))
            })?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            DriverError::permanent(codes::TLS, format!("cannot set up the HTTP client: {e}"))
        })?;
        let mut authorization = HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            connection.token_id,
            connection.token_secret.expose()
        ))
        .map_err(|_| {
            DriverError::permanent(codes::AUTH_FAILED, "the token cannot go into a header")
        })?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            base,
            authorization,
        })
    }

    /// `base` plus `segments`, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an https URL has a path")
            .extend(segments);
        url
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, DriverError> {
        self.call(Method::GET, segments, query).await
    }

    /// POST with form parameters, as PVE's own clients send them.
    pub async fn post(
        &self,
        segments: &[&str],
        form: &[(&str, String)],
    ) -> Result<Value, DriverError> {
        self.call(Method::POST, segments, form).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, DriverError> {
        self.call(Method::DELETE, segments, &[]).await
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        params: &[(&str, String)],
    ) -> Result<Value, DriverError> {
        let url = self.url(segments);
        let path = format!("/{}", segments.join("/"));
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.authorization.clone());
        request = if method == Method::POST {
            request.form(params)
        } else {
            request.query(params)
        };
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&method, &path, &e))?;
        let status = response.status();
        let reason = status.canonical_reason().unwrap_or("").to_owned();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&method, &path, &e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return match json {
                Some(mut envelope) => Ok(envelope
                    .get_mut("data")
                    .map(Value::take)
                    .unwrap_or(Value::Null)),
                None => Err(DriverError::permanent(
                    codes::BAD_RESPONSE,
                    format!("{method} {path}: the answer is not JSON"),
                )),
            };
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or(reason);
        let errors = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .filter(|e| e.is_object())
            .map(|e| format!(" {e}"))
            .unwrap_or_default();
        Err(classify(
            status,
            &format!("{method} {path}: {} {message}{errors}", status.as_u16()),
            &message,
        ))
    }
}

/// A failed HTTP exchange: a certificate problem is permanent, anything
/// else (refused, reset, timed out) retryable.
fn transport_error(method: &Method, path: &str, error: &reqwest::Error) -> DriverError {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = format!("{method} {path}: {chain}");
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        DriverError::permanent(codes::TLS, message)
    } else {
        DriverError::retryable(codes::UNREACHABLE, message)
    }
}

fn classify(status: StatusCode, full: &str, message: &str) -> DriverError {
    match status.as_u16() {
        400 => DriverError::permanent(codes::INVALID_PARAMETERS, full),
        401 => DriverError::permanent(
            codes::AUTH_FAILED,
            format!("{full} (check the API token id and secret)"),
        ),
        403 => DriverError::permanent(codes::FORBIDDEN, full),
        404 | 501 => DriverError::permanent(codes::REFUSED, full),
        500 if PERMANENT_500.iter().any(|m| message.contains(m)) => {
            DriverError::permanent(codes::REFUSED, full)
        }
        500..=599 => DriverError::retryable(codes::SERVER_ERROR, full),
        _ => DriverError::permanent(codes::REFUSED, full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_answers_are_classified_by_whether_a_retry_can_help() {
        let retryable =
            |s: u16, m: &str| classify(StatusCode::from_u16(s).unwrap(), m, m).retryable;
        assert!(retryable(500, "fake failure"));
        assert!(retryable(500, "cluster not ready - no quorum?"));
        assert!(retryable(595, "No route to host"));
        assert!(retryable(503, "Service Unavailable"));
        assert!(!retryable(500, "VM 101 not running"));
        assert!(!retryable(
            500,
            "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
        ));
        assert!(!retryable(500, "can't migrate running VM without --online"));
        assert!(!retryable(400, "Parameter verification failed."));
        assert!(!retryable(401, "authentication failure"));
        assert!(!retryable(
            403,
            "Permission check failed (/vms/100, VM.PowerMgmt)"
        ));
        assert!(!retryable(
            501,
            "Method 'GET /nodes/pve1/foo' not implemented"
        ));
    }
}
