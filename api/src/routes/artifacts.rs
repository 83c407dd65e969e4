//! `/api/v1/agent/artifacts`: files a remote worker moves through the API
//! host (a migration's state archive; see the store's `artifacts.rs`).
//!
//! Only agent keys get here (the middleware sees to it), and an agent key
//! may touch only the artifacts of operations it holds: every request
//! names the worker and the running attempt of a step (`?worker=`,
//! `operation=`, `attempt=`); that step must be running under that worker,
//! the worker registered with this key, its target one of the key's, and
//! the artifact must belong to the step's workflow. Otherwise `403`.
//!
//! An upload is resumable: `POST` declares the whole (size and sha256) and
//! answers where the artifact stands (`received`); each `PUT` sends the
//! chunk at `received` with its own sha256; the last one completes the
//! artifact only if the whole file's sha256 is the declared one.

use actix_web::{HttpResponse, get, post, put, web};
use futures_util::StreamExt as _;
use opsqueue_shared::agent::{ArtifactDeclaration, ArtifactHolder};
use opsqueue_shared::families::migration::MAX_CHUNK_BYTES;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{
    Artifact, ArtifactError, Artifacts, Holder, NewArtifact, artifact_holder,
};
use tokio::io::AsyncReadExt as _;

use super::agent::WorkerId;
use crate::auth::Caller;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// The header of a download that carries the whole file's sha256.
pub const SHA256_HEADER: &str = "X-Artifact-Sha256";

fn artifacts(state: &AppState) -> Artifacts {
    Artifacts::new(state.store.clone(), &state.config)
}

impl From<ArtifactError> for ApiError {
    fn from(error: ArtifactError) -> Self {
        match error {
            ArtifactError::TooLarge(detail) => ApiError::ArtifactTooLarge(detail),
            ArtifactError::NotFound(id) => ApiError::NotFound(format!("no artifact {id}")),
            offset @ ArtifactError::Offset { .. } => {
                ApiError::Conflict("artifact_offset", offset.to_string())
            }
            ArtifactError::Invalid(detail) => ApiError::invalid_field("artifact", detail),
            ArtifactError::Conflict(detail) => ApiError::Conflict("artifact_conflict", detail),
            ArtifactError::Io(e) => ApiError::internal(format!("artifact file: {e}")),
            ArtifactError::Store(e) => e.into(),
        }
    }
}

/// The step `holder` names, checked against the caller's key (see the
/// module header): its claim and its workflow.
async fn held(
    state: &AppState,
    caller: &Caller,
    holder: &ArtifactHolder,
) -> Result<String, ApiError> {
    WorkerId::parse(&holder.worker)
        .map_err(|e| ApiError::invalid_field("worker", e.to_string()))?;
    let (id, attempt, worker) = (holder.operation, holder.attempt, holder.worker.clone());
    let found: Option<Holder> = state
        .store
        .call(move |s| s.read(|c| artifact_holder(c, id, attempt, &worker)))
        .await?;
    let key = caller.key();
    let refused = || {
        ApiError::Forbidden(format!(
            "operation {id} (attempt {attempt}) is not running under worker {:?} of this agent key",
            holder.worker
        ))
    };
    let found = found.ok_or_else(refused)?;
    if found.agent_key_id.as_deref() != Some(key.id.as_str()) || !key.serves(&found.target) {
        return Err(refused());
    }
    found.workflow_id.ok_or_else(|| {
        ApiError::invalid_field("operation", "only a workflow's steps have artifacts")
    })
}

/// The artifact `id` if it belongs to `workflow`.
async fn owned(state: &AppState, id: &str, workflow: &str) -> Result<Artifact, ApiError> {
    let (store, wanted) = (artifacts(state), id.to_owned());
    let artifact = web::block(move || store.get(&wanted))
        .await
        .map_err(ApiError::internal)??;
    if artifact.workflow_id != workflow {
        return Err(ApiError::Forbidden(format!(
            "artifact {id} belongs to another workflow than operation's"
        )));
    }
    Ok(artifact)
}

fn artifact_id(id: &str) -> Result<String, ApiError> {
    id.parse::<opsqueue_shared::OperationId>()
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid_field("id", "an artifact id is a UUID"))
}

/// Declare an artifact of the step's workflow (or resume it).
///
/// Answers the artifact: `received` says from where to send chunks. One of
/// the same name and whole is the same artifact (an upload resuming);
/// another whole starts over unless it is complete (`409`).
#[utoipa::path(
    tag = "agent",
    params(ArtifactHolder),
    request_body = ArtifactDeclaration,
    responses(
        (status = 200, description = "The artifact: `{id, workflow_id, name, size, sha256, received, complete}`", body = Object),
        (status = 403, description = "The step is not held by this agent's worker", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A complete artifact of that name holds another content", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Past `[artifacts] max_bytes`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name, size or sha256 out of bounds", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/api/v1/agent/artifacts")]
pub async fn artifact_create(
    state: web::Data<AppState>,
    caller: Caller,
    holder: web::Query<ArtifactHolder>,
    body: web::Json<ArtifactDeclaration>,
) -> Result<HttpResponse, ApiError> {
    let workflow_id = held(&state, &caller, &holder).await?;
    let body = body.into_inner();
    Label::parse(&body.name).map_err(|e| ApiError::invalid_field("name", e.to_string()))?;
    let new = NewArtifact {
        workflow_id,
        name: body.name,
        size: body.size,
        sha256: body.sha256,
    };
    let store = artifacts(&state);
    let artifact = web::block(move || store.create(&new))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(artifact))
}

/// Where an artifact stands.
#[utoipa::path(
    tag = "agent",
    params(("id" = String, Path, description = "The artifact"), ArtifactHolder),
    responses(
        (status = 200, description = "The artifact", body = Object),
        (status = 403, description = "Not an artifact of a step this agent's worker holds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such artifact", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/agent/artifacts/{id}")]
pub async fn artifact_status(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    holder: web::Query<ArtifactHolder>,
) -> Result<HttpResponse, ApiError> {
    let id = artifact_id(&id)?;
    let workflow_id = held(&state, &caller, &holder).await?;
    Ok(HttpResponse::Ok().json(owned(&state, &id, &workflow_id).await?))
}

/// Send one chunk (`?offset=` where the artifact stands, `?sha256=` the
/// chunk's), the raw bytes as the body.
#[utoipa::path(
    tag = "agent",
    params(("id" = String, Path, description = "The artifact"), ArtifactHolder),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The artifact after the chunk (`complete` after the last)", body = Object),
        (status = 403, description = "Not an artifact of a step this agent's worker holds", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`artifact_offset`: the artifact stands elsewhere (read it and resume there)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A chunk over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The chunk's or the whole's sha256 differs (the whole: the upload starts over)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/api/v1/agent/artifacts/{id}")]
pub async fn artifact_chunk(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    holder: web::Query<ArtifactHolder>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = artifact_id(&id)?;
    let workflow_id = held(&state, &caller, &holder).await?;
    owned(&state, &id, &workflow_id).await?;
    let offset = holder
        .offset
        .ok_or_else(|| ApiError::invalid_field("offset", "a chunk says where it starts"))?;
    let sha256 = holder
        .sha256
        .clone()
        .ok_or_else(|| ApiError::invalid_field("sha256", "a chunk carries its sha256"))?;
    let mut bytes = web::BytesMut::new();
    while let Some(part) = payload.next().await {
        let part = part.map_err(|e| ApiError::invalid_field("body", e.to_string()))?;
        if (bytes.len() + part.len()) as u64 > MAX_CHUNK_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_CHUNK_BYTES as usize,
            });
        }
        bytes.extend_from_slice(&part);
    }
    let store = artifacts(&state);
    let artifact = web::block(move || store.put_chunk(&id, offset, &sha256, &bytes))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(artifact))
}

/// Read a complete artifact from `?offset=` (default 0) to its end.
#[utoipa::path(
    tag = "agent",
    params(("id" = String, Path, description = "The artifact"), ArtifactHolder),
    responses(
        (status = 200, description = "The bytes; `X-Artifact-Sha256` is the whole file's", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 403, description = "Not an artifact of a step this agent's worker holds", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not complete yet", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/api/v1/agent/artifacts/{id}/content")]
pub async fn artifact_content(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    holder: web::Query<ArtifactHolder>,
) -> Result<HttpResponse, ApiError> {
    let id = artifact_id(&id)?;
    let workflow_id = held(&state, &caller, &holder).await?;
    owned(&state, &id, &workflow_id).await?;
    let offset = holder.offset.unwrap_or(0);
    let store = artifacts(&state);
    let (artifact, file) = web::block(move || store.open(&id, offset))
        .await
        .map_err(ApiError::internal)??;
    let file = Some(tokio::fs::File::from_std(file));
    let body = futures_util::stream::unfold(file, |file| async move {
        let mut file = file?;
        let mut buffer = vec![0; 1 << 20];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(web::Bytes::from(buffer)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((SHA256_HEADER, artifact.sha256))
        .no_chunking(artifact.size - offset)
        .streaming(body))
}
