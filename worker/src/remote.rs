//! The remote worker's client of the API (`[worker] api_url`): the agent
//! protocol over HTTPS (`/api/v1/agent/…`, see `opsqueue_shared::agent`),
//! with the agent key from `token_file` and, with `ca_cert`, trust in only
//! the certificates of that file (a pinned self-signed control host).
//!
//! - Plain `http://` is refused unless the host is a loopback address: an
//!   agent key and the secrets in claimed operations cross the network
//!   only inside TLS.
//! - Connections only go out: the worker opens no port.
//! - Neither the key nor an answer that holds operations is ever logged
//!   (claimed operations carry their secrets).
//! - A request that fails is not retried here: the writer answers its
//!   writes with the error and their callers decide (a finish is sent again
//!   until the API answers; a heartbeat waits for the next).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use opsqueue_shared::agent::{
    AgentAnswers, AgentBatch, AgentClaim, ArtifactDeclaration, ArtifactHolder, ManagedQuery, paths,
};
use opsqueue_shared::config::WorkerConfig;
use opsqueue_shared::store::{Artifact, ManagedObject, StoreError, WorkerWritten};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

/// How long one batch of writes (or a read) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one artifact chunk may take to send.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// A waiting claim's answer may come this much after its wait.
const WAIT_MARGIN: Duration = Duration::from_secs(10);

/// The API, as a remote worker reaches it; cheap to share behind an `Arc`.
pub struct Agent {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Whether `url` may carry an agent key: HTTPS, or HTTP to loopback.
pub fn check_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(name)) => name == "localhost",
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "plain http:// to {} would send the agent key and operations' secrets \
                     unencrypted; use https:// (plain HTTP is allowed to loopback only)",
                    url.host_str().unwrap_or("?")
                ))
            }
        }
        other => Err(format!("unsupported scheme {other:?}: use https://")),
    }
}

impl Agent {
    /// Builds the client from `[worker] api_url`, `token_file` and
    /// `ca_cert`; reads the files now.
    pub fn from_config(config: &WorkerConfig) -> anyhow::Result<Self> {
        let url = config
            .api_url
            .as_deref()
            .context("worker.api_url is not set")?;
        let base = Url::parse(url).with_context(|| format!("worker.api_url {url:?}"))?;
        check_url(&base).map_err(|e| anyhow::anyhow!("worker.api_url: {e}"))?;
        let token_file = config
            .token_file
            .as_ref()
            .context("worker.token_file is not set")?;
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read worker.token_file {}", token_file.display()))?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!(
                "worker.token_file {} must hold one agent key",
                token_file.display()
            );
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the agent key is not a valid header value")?;
        authorization.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(format!("opsqueue-worker/{}", opsqueue_shared::VERSION));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read worker.ca_cert {}", ca.display()))?;
            let tls = opsqueue_tls::pinned_config(&pem)
                .map_err(|e| anyhow::anyhow!("worker.ca_cert {}: {e}", ca.display()))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        Ok(Self {
            http: builder.build().context("cannot build the HTTP client")?,
            base,
            authorization,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, StoreError> {
        self.base
            .join(path)
            .map_err(|e| StoreError::Remote(format!("bad URL for {path}: {e}")))
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, StoreError> {
        let response = request
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(|e| StoreError::Remote(format!("{what}: {}", without_url(&e))))?;
        let status = response.status();
        if status == StatusCode::OK {
            return response
                .json()
                .await
                .map_err(|e| StoreError::Remote(format!("{what}: unreadable answer: {e}")));
        }
        // A refusal is a problem document; say its code and detail.
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        Err(StoreError::Remote(format!(
            "{what} refused with {status} {}: {}",
            problem["code"].as_str().unwrap_or("?"),
            problem["detail"].as_str().unwrap_or("")
        )))
    }

    /// Applies a batch of writes; one answer per write, in order.
    pub async fn writes(&self, batch: &AgentBatch) -> Result<AgentAnswers, StoreError> {
        let request = self
            .http
            .post(self.url(paths::WRITES)?)
            .timeout(REQUEST_TIMEOUT)
            .json(batch);
        let answers: AgentAnswers = self.answer(request, "writes").await?;
        if answers.answers.len() != batch.writes.len() {
            return Err(StoreError::Remote(format!(
                "{} answers to {} writes",
                answers.answers.len(),
                batch.writes.len()
            )));
        }
        Ok(answers)
    }

    /// Claims, waiting up to `claim.wait_secs` for work or a new cancel
    /// request.
    pub async fn claim(&self, claim: &AgentClaim) -> Result<WorkerWritten, StoreError> {
        let wait = Duration::from_secs_f64(claim.wait_secs.max(0.0));
        let request = self
            .http
            .post(self.url(paths::CLAIM)?)
            .timeout(wait + WAIT_MARGIN)
            .json(claim);
        self.answer(request, "claim").await
    }

    /// Objects opsqueue manages on one of this agent's targets.
    pub async fn managed_list(
        &self,
        query: &ManagedQuery,
    ) -> Result<Vec<ManagedObject>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Items {
            items: Vec<ManagedObject>,
        }
        let request = self
            .http
            .get(self.url(paths::MANAGED)?)
            .timeout(REQUEST_TIMEOUT)
            .query(query);
        let items: Items = self.answer(request, "managed objects").await?;
        Ok(items.items)
    }
}

impl Agent {
    /// Declares (or resumes) an artifact of the workflow of the step
    /// `holder` names.
    pub async fn artifact_create(
        &self,
        holder: &ArtifactHolder,
        declaration: &ArtifactDeclaration,
    ) -> Result<Artifact, StoreError> {
        let request = self
            .http
            .post(self.url(paths::ARTIFACTS)?)
            .timeout(REQUEST_TIMEOUT)
            .query(holder)
            .json(declaration);
        self.answer(request, "artifact").await
    }

    /// Where artifact `id` stands.
    pub async fn artifact_status(
        &self,
        id: &str,
        holder: &ArtifactHolder,
    ) -> Result<Artifact, StoreError> {
        let request = self
            .http
            .get(self.url(&format!("{}/{id}", paths::ARTIFACTS))?)
            .timeout(REQUEST_TIMEOUT)
            .query(holder);
        self.answer(request, "artifact").await
    }

    /// Sends one chunk (`holder.offset`, `holder.sha256` say where and what).
    pub async fn artifact_chunk(
        &self,
        id: &str,
        holder: &ArtifactHolder,
        bytes: Vec<u8>,
    ) -> Result<Artifact, StoreError> {
        let request = self
            .http
            .put(self.url(&format!("{}/{id}", paths::ARTIFACTS))?)
            .timeout(CHUNK_TIMEOUT)
            .query(holder)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        self.answer(request, "artifact chunk").await
    }

    /// The complete artifact's bytes from `holder.offset`, as a response
    /// to read (its body streams).
    pub async fn artifact_download(
        &self,
        id: &str,
        holder: &ArtifactHolder,
    ) -> Result<reqwest::Response, StoreError> {
        let response = self
            .http
            .get(self.url(&format!("{}/{id}/content", paths::ARTIFACTS))?)
            .query(holder)
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(|e| StoreError::Remote(format!("artifact download: {}", without_url(&e))))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        Err(StoreError::Remote(format!(
            "artifact download refused with {status} {}: {}",
            problem["code"].as_str().unwrap_or("?"),
            problem["detail"].as_str().unwrap_or("")
        )))
    }
}

/// A reqwest error's text without its URL (which is harmless, but long).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        for ok in [
            "https://control:8443",
            "https://10.0.0.1",
            "http://127.0.0.1:8080",
            "http://127.9.0.1",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(check_url(&Url::parse(ok).unwrap()).is_ok(), "{ok} refused");
        }
        for bad in [
            "http://control:8080",
            "http://10.77.0.1:8080",
            "http://[2001:db8::1]/",
            "ftp://control/",
        ] {
            assert!(
                check_url(&Url::parse(bad).unwrap()).is_err(),
                "{bad} accepted"
            );
        }
    }
}
