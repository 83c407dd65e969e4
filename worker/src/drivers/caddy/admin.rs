//! A small client for Caddy's admin API (https://caddyserver.com/docs/api),
//! one per driver, over `[caddy] admin_url`.
//!
//! Only `/config/…` and `/id/…` are used, never `POST /load`: a failed
//! `/load` of a config without an `admin` block can move the admin listener
//! (HOST-PROGRAMS §3.3, trap 2), and opsqueue never needs a whole config.
//!
//! Classification: no answer (connection refused, reset, timeout) is
//! retryable (`caddy_unreachable`); an answer is final: 4xx is
//! `caddy_rejected`, 5xx `caddy_error` (Caddy 2.6 answers 500 for "key
//! already exists" and for an unknown module alike: neither heals by
//! itself), each with Caddy's own `{"error": …}` message.
//!
//! Bounds: every request stops at once when the operation is stopped:
//! cancelled, shut down, or past its deadline (the executor stops it at
//! `timeout_secs`, through the same token), and a hung admin API is
//! dropped mid-request. On its own, each request is also capped by
//! `[caddy] request_timeout_secs`, after which it is `caddy_unreachable`.
//! The cap is not shortened to the deadline: the deadline belongs to the
//! executor, which fails the operation `timeout` instead of retrying it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::context::Context;
use crate::drivers::driver::DriverError;

pub mod codes {
    /// Caddy's admin endpoint did not answer: retryable.
    pub const CADDY_UNREACHABLE: &str = "caddy_unreachable";
    /// Caddy refused the request (4xx).
    pub const CADDY_REJECTED: &str = "caddy_rejected";
    /// Caddy failed the request (5xx).
    pub const CADDY_ERROR: &str = "caddy_error";
}

/// An answer: the status and the body parsed as JSON (`null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

pub struct Admin {
    http: reqwest::Client,
    base: String,
}

/// Caddy's error message out of a body, or the body itself.
fn caddy_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().chars().take(500).collect())
}

impl Admin {
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // The admin API is on loopback: never through a proxy.
            .no_proxy()
            // Caddy restarts its admin server on every config change and
            // drops the old one's connections: a pooled keep-alive
            // connection would fail the next request. A fresh connection
            // per request (loopback, cheap) never meets a closed one.
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; `Ok` for any answer (the caller decides about 404),
    /// `Err` when there is none or the operation stopped.
    pub async fn request(
        &self,
        ctx: &Context,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, DriverError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        };
        let (status, text) = tokio::select! {
            result = exchange => result.map_err(|e| {
                DriverError::retryable(
                    codes::CADDY_UNREACHABLE,
                    format!("Caddy's admin API at {} did not answer {method} {path}: {e}", self.base),
                )
            })?,
            () = ctx.cancelled() => return Err(DriverError::cancelled()),
        };
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// A request whose answer must be a success (2xx).
    pub async fn expect_ok(
        &self,
        ctx: &Context,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DriverError> {
        let answer = self.request(ctx, method.clone(), path, body).await?;
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        Err(refusal(&method, path, &answer))
    }
}

/// The error for an unsuccessful answer.
pub fn refusal(method: &Method, path: &str, answer: &Answer) -> DriverError {
    let text = match &answer.body {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let message = format!(
        "Caddy answered {} to {method} {path}: {}",
        answer.status,
        caddy_message(&text)
    );
    if answer.status.is_client_error() {
        DriverError::permanent(codes::CADDY_REJECTED, message)
    } else {
        DriverError::permanent(codes::CADDY_ERROR, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caddy_s_own_message_is_quoted_and_4xx_is_told_from_5xx() {
        let rejected = refusal(
            &Method::POST,
            "/config/x",
            &Answer {
                status: StatusCode::BAD_REQUEST,
                body: json!({"error": "unacceptable content-type"}),
            },
        );
        assert_eq!(rejected.code, codes::CADDY_REJECTED);
        assert!(!rejected.retryable);
        assert!(rejected.message.ends_with(": unacceptable content-type"));
        let failed = refusal(
            &Method::PUT,
            "/config/x",
            &Answer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: json!({"error": "key already exists: x"}),
            },
        );
        assert_eq!(failed.code, codes::CADDY_ERROR);
        assert!(!failed.retryable);
    }
}
