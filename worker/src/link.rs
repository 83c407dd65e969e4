//! Where this worker's store is: the SQLite file beside it (local), or the
//! API over HTTPS (remote, `[worker] api_url`). The writer sends its
//! batches there, and the drivers read what they need of the store through
//! it (the objects opsqueue manages on their target) and move artifacts
//! through it (a local worker writes the API host's artifact directory
//! itself, a remote one goes through `/api/v1/agent/artifacts`), so a
//! driver runs the same on either.

use std::sync::Arc;

use opsqueue_shared::agent::{ArtifactDeclaration, ArtifactHolder, ManagedQuery};
use opsqueue_shared::store::{
    Artifact, Artifacts, ManagedObject, NewArtifact, StoreError, artifact_holder, managed_list,
};
use opsqueue_shared::{Config, Fence, Store};
use tokio::io::AsyncWriteExt as _;

use crate::remote::Agent;

/// The worker's store; cheap to clone.
#[derive(Clone, Debug)]
pub enum Link {
    /// The database beside the worker.
    Local(Store),
    /// The API, with this worker's agent key.
    Remote(Arc<Agent>),
}

impl From<Store> for Link {
    fn from(store: Store) -> Self {
        Link::Local(store)
    }
}

impl Link {
    pub fn is_remote(&self) -> bool {
        matches!(self, Link::Remote(_))
    }

    /// The database, when it is beside the worker.
    pub fn store(&self) -> Option<&Store> {
        match self {
            Link::Local(store) => Some(store),
            Link::Remote(_) => None,
        }
    }

    /// Objects opsqueue manages of one kind on `target`; `name` narrows to
    /// one.
    pub async fn managed_list(
        &self,
        target: &str,
        family: &str,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Vec<ManagedObject>, StoreError> {
        let query = ManagedQuery {
            target: target.to_owned(),
            family: family.to_owned(),
            kind: kind.to_owned(),
            name: name.map(str::to_owned),
        };
        match self {
            Link::Local(store) => {
                store
                    .call(move |s| {
                        s.read(|c| {
                            managed_list(
                                c,
                                &query.target,
                                &query.family,
                                &query.kind,
                                query.name.as_deref(),
                            )
                        })
                    })
                    .await
            }
            Link::Remote(agent) => agent.managed_list(&query).await,
        }
    }
}

/// Why an artifact request failed, and whether a later attempt may do
/// better (a transfer cut midway resumes; an artifact past
/// `[artifacts] max_bytes` stays refused).
#[derive(Debug)]
pub struct TransferError {
    pub message: String,
    pub retryable: bool,
}

impl TransferError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    fn from_artifact(error: opsqueue_shared::store::ArtifactError) -> Self {
        let retryable = !matches!(error, opsqueue_shared::store::ArtifactError::TooLarge(_));
        Self {
            message: error.to_string(),
            retryable,
        }
    }

    /// The API's refusal; its problem `code` says whether it will last.
    fn from_remote(error: StoreError) -> Self {
        let message = error.to_string();
        let retryable = !message.contains(" artifact_too_large:");
        Self { message, retryable }
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn holder(fence: &Fence, offset: Option<u64>, sha256: Option<String>) -> ArtifactHolder {
    ArtifactHolder {
        worker: fence.worker_id.clone(),
        operation: fence.id,
        attempt: fence.attempt,
        offset,
        sha256,
    }
}

/// Runs an artifact call on the blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, opsqueue_shared::store::ArtifactError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| TransferError::retryable(format!("artifact task: {e}")))?
        .map_err(TransferError::from_artifact)
}

/// Artifacts, for the step whose claim is `fence` (see the module header).
impl Link {
    /// Declares (or resumes) the artifact `declaration` names in the
    /// step's workflow.
    pub async fn artifact_declare(
        &self,
        config: &Config,
        fence: &Fence,
        declaration: ArtifactDeclaration,
    ) -> Result<Artifact, TransferError> {
        match self {
            Link::Local(store) => {
                let (artifacts, fence) = (Artifacts::new(store.clone(), config), fence.clone());
                blocking(move || {
                    let found = artifacts
                        .store()
                        .read(|c| artifact_holder(c, fence.id, fence.attempt, &fence.worker_id))?;
                    let workflow_id = found.and_then(|h| h.workflow_id).ok_or_else(|| {
                        opsqueue_shared::store::ArtifactError::Invalid(
                            "only a running workflow step has artifacts".into(),
                        )
                    })?;
                    artifacts.create(&NewArtifact {
                        workflow_id,
                        name: declaration.name,
                        size: declaration.size,
                        sha256: declaration.sha256,
                    })
                })
                .await
            }
            Link::Remote(agent) => agent
                .artifact_create(&holder(fence, None, None), &declaration)
                .await
                .map_err(TransferError::from_remote),
        }
    }

    pub async fn artifact_status(
        &self,
        config: &Config,
        fence: &Fence,
        id: &str,
    ) -> Result<Artifact, TransferError> {
        match self {
            Link::Local(store) => {
                let (artifacts, id) = (Artifacts::new(store.clone(), config), id.to_owned());
                blocking(move || artifacts.get(&id)).await
            }
            Link::Remote(agent) => agent
                .artifact_status(id, &holder(fence, None, None))
                .await
                .map_err(TransferError::from_remote),
        }
    }

    /// Sends the chunk at `offset`.
    pub async fn artifact_chunk(
        &self,
        config: &Config,
        fence: &Fence,
        id: &str,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<Artifact, TransferError> {
        use sha2::Digest as _;
        let sha256 = opsqueue_shared::operation::hex(&sha2::Sha256::digest(&bytes));
        match self {
            Link::Local(store) => {
                let (artifacts, id) = (Artifacts::new(store.clone(), config), id.to_owned());
                blocking(move || artifacts.put_chunk(&id, offset, &sha256, &bytes)).await
            }
            Link::Remote(agent) => agent
                .artifact_chunk(id, &holder(fence, Some(offset), Some(sha256)), bytes)
                .await
                .map_err(TransferError::from_remote),
        }
    }

    /// Appends the complete artifact's bytes from `offset` to `file`.
    pub async fn artifact_read_into(
        &self,
        config: &Config,
        fence: &Fence,
        id: &str,
        offset: u64,
        file: &mut tokio::fs::File,
    ) -> Result<(), TransferError> {
        match self {
            Link::Local(store) => {
                let (artifacts, id) = (Artifacts::new(store.clone(), config), id.to_owned());
                let (_, source) = blocking(move || artifacts.open(&id, offset)).await?;
                let mut source = tokio::fs::File::from_std(source);
                tokio::io::copy(&mut source, file)
                    .await
                    .map_err(|e| TransferError::retryable(format!("copying the artifact: {e}")))?;
            }
            Link::Remote(agent) => {
                let mut response = agent
                    .artifact_download(id, &holder(fence, Some(offset), None))
                    .await
                    .map_err(TransferError::from_remote)?;
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| TransferError::retryable(format!("reading the artifact: {e}")))?
                {
                    file.write_all(&chunk).await.map_err(|e| {
                        TransferError::retryable(format!("writing the artifact: {e}"))
                    })?;
                }
            }
        }
        file.sync_data()
            .await
            .map_err(|e| TransferError::retryable(format!("syncing the artifact: {e}")))
    }
}
