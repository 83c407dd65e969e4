//! The HTTP client: the public API only, JSON in and out, the key as
//! `Authorization: Bearer`. Paths are built segment by segment, so a name
//! such as `my app` or `a/b` is percent-encoded rather than changing the
//! route; a base URL with a path prefix (`https://host/opsqueue`) keeps it.
//!
//! Every answer becomes either its JSON body or a [`CliError`]: 4xx is
//! `Refused`, 5xx is `Server`, no answer is `Unreachable`. Reads (GET)
//! that meet `429` or `503` with `Retry-After` are tried again a few times,
//! so a long wait is not ended by a busy moment; writes are never repeated
//! here.
//!
//! TLS is rustls with the built-in web roots; `--ca-cert` trusts the
//! certificates of one PEM file instead (see `opsqueue-tls`).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::config::Connection;
use crate::error::{CliError, Problem};

/// How long an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a GET is tried again after `429`/`503`.
const READ_RETRIES: u32 = 3;

pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// One request to the API.
pub struct Request<'a> {
    pub method: Method,
    pub path: Vec<String>,
    pub query: Vec<(&'a str, String)>,
    pub body: Option<Value>,
    pub idempotency_key: Option<&'a str>,
    /// How long the server may hold it (a long-poll), on top of the usual.
    pub hold: Duration,
}

impl<'a> Request<'a> {
    /// `method` on `/api/v1/<segments…>`.
    pub fn api(method: Method, segments: &[&str]) -> Self {
        let mut path = vec!["api".to_owned(), "v1".to_owned()];
        path.extend(segments.iter().map(|s| (*s).to_owned()));
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            hold: Duration::ZERO,
        }
    }

    pub fn get(segments: &[&str]) -> Self {
        Self::api(Method::GET, segments)
    }

    pub fn post(segments: &[&str]) -> Self {
        Self::api(Method::POST, segments)
    }

    pub fn delete(segments: &[&str]) -> Self {
        Self::api(Method::DELETE, segments)
    }

    pub fn patch(segments: &[&str]) -> Self {
        Self::api(Method::PATCH, segments)
    }

    pub fn query(mut self, key: &'a str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub fn query_opt(self, key: &'a str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.query(key, value),
            None => self,
        }
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn idempotency_key(mut self, key: Option<&'a str>) -> Self {
        self.idempotency_key = key;
        self
    }

    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Value,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Self, CliError> {
        let base = Url::parse(&connection.url).map_err(|e| {
            CliError::usage(format!("--url {:?} is not a URL: {e}", connection.url))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::usage(format!(
                "--url {:?} must be an http:// or https:// URL",
                connection.url
            )));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("opsqueue-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = &connection.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?;
            let tls = opsqueue_tls::pinned_config(&pem)
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            base,
            token: connection.token.clone(),
            http,
        })
    }

    /// The base URL, for messages.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, request: &Request<'_>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL has a path")
            .pop_if_empty()
            .extend(&request.path);
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        url
    }

    /// Sends `request`; the answer's JSON, or the error it amounts to.
    pub async fn send(&self, request: &Request<'_>) -> Result<Answer, CliError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.send_once(request).await {
                Err(Retry::After(wait, _))
                    if request.method == Method::GET && tries <= READ_RETRIES =>
                {
                    tokio::time::sleep(wait).await;
                }
                Err(Retry::After(_, error) | Retry::No(error)) => return Err(error),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    /// Opens a long-lived stream (Server-Sent Events): the answer once its
    /// headers arrived, or the error it amounts to. No overall timeout: the
    /// caller decides how long it reads.
    pub async fn open_stream(&self, request: &Request<'_>) -> Result<reqwest::Response, CliError> {
        let url = self.url(request);
        let mut builder = self
            .http
            .request(request.method.clone(), url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        let shown = without_query(&url);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, builder.send())
            .await
            .map_err(|_| CliError::Unreachable {
                url: shown.clone(),
                cause: "no answer in time".into(),
            })?
            .map_err(|e| CliError::Unreachable {
                url: shown.clone(),
                cause: error_chain(&e.without_url()),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let problem = Box::new(Problem::from_answer(status.as_u16(), &text));
        let body = serde_json::from_str(&text).ok();
        Err(if status.is_client_error() {
            CliError::Refused { problem, body }
        } else {
            CliError::Server { problem, body }
        })
    }

    /// [`Client::send`], the body only.
    pub async fn json(&self, request: &Request<'_>) -> Result<Value, CliError> {
        Ok(self.send(request).await?.body)
    }

    async fn send_once(&self, request: &Request<'_>) -> Result<Answer, Retry> {
        let url = self.url(request);
        let mut builder = self
            .http
            .request(request.method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT + request.hold);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(key) = request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let shown = without_query(&url);
        let response = builder.send().await.map_err(|e| {
            Retry::No(CliError::Unreachable {
                url: shown.clone(),
                cause: error_chain(&e.without_url()),
            })
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| {
            Retry::No(CliError::Unreachable {
                url: shown.clone(),
                cause: error_chain(&e),
            })
        })?;
        if status.is_success() {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    Retry::No(CliError::BadAnswer {
                        url: shown.clone(),
                        cause: format!("{status} with a body that is not JSON ({e})"),
                    })
                })?
            };
            return Ok(Answer { headers, body });
        }
        let problem = Box::new(Problem::from_answer(status.as_u16(), &text));
        let body = serde_json::from_str(&text).ok();
        let error = if status.is_client_error() {
            CliError::Refused { problem, body }
        } else {
            CliError::Server { problem, body }
        };
        match retry_after(&headers) {
            Some(wait) if matches!(status.as_u16(), 429 | 503) => Err(Retry::After(wait, error)),
            _ => Err(Retry::No(error)),
        }
    }
}

enum Retry {
    After(Duration, CliError),
    No(CliError),
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.clamp(1, 30)))
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// The error and its causes, `: `-joined (reqwest's own Display is terse:
/// "error sending request" hides "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Client {
        Client::new(&Connection {
            url: url.into(),
            token: None,
            ca_cert: None,
        })
        .unwrap()
    }

    #[test]
    fn path_segments_are_encoded_and_a_base_prefix_is_kept() {
        let request = Request::get(&["pm2", "processes", "my app/x"]).query("target", "web 2");
        assert_eq!(
            client("http://127.0.0.1:8080").url(&request).as_str(),
            "http://127.0.0.1:8080/api/v1/pm2/processes/my%20app%2Fx?target=web+2"
        );
        assert_eq!(
            client("https://ops.example.com/opsqueue/")
                .url(&Request::get(&["operations"]))
                .as_str(),
            "https://ops.example.com/opsqueue/api/v1/operations"
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_a_usage_error() {
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url"] {
            let result = Client::new(&Connection {
                url: bad.into(),
                token: None,
                ca_cert: None,
            });
            assert!(matches!(result, Err(CliError::Usage(_))), "{bad}");
        }
    }
}
