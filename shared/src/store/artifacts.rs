//! Artifacts: files that move between hosts through the API host (a
//! migration's state archive). The row says what the file must be (its
//! size and sha256, declared at creation) and how much of it is there
//! (`received`); the bytes are the file `<id>` in `[artifacts] dir`.
//!
//! Invariants:
//! - A chunk is written at `received` only, after its own sha256 checked;
//!   the file is cut to `received` first and synced after, and `received`
//!   moves in the same write transaction, so a crash mid-chunk leaves the
//!   artifact where its last recorded chunk ended and the upload resumes
//!   there. The transaction is also the lock: two chunks of one artifact
//!   are never written at once.
//! - The last chunk completes the artifact only when the whole file's
//!   sha256 is the declared one; otherwise the file is cut to nothing and
//!   the upload starts over.
//! - All artifacts together hold at most `[artifacts] max_bytes` (the
//!   declared sizes count from creation): a creation past it is refused.
//! - Whoever may read or write an artifact is decided by the caller (the
//!   API lets an agent touch only its running steps' workflows' artifacts);
//!   nothing here knows of keys.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};
use crate::OperationId;
use crate::time::{Timestamp, to_db};

/// One artifact as its row says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: String,
    pub workflow_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Bytes written and synced, from the start.
    pub received: u64,
    pub complete: bool,
}

/// Why an artifact request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    TooLarge(String),
    #[error("no artifact {0}")]
    NotFound(String),
    #[error("the artifact holds {received} bytes: send the chunk at offset {received}")]
    Offset { received: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the artifact file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ArtifactError {
    fn from(e: rusqlite::Error) -> Self {
        ArtifactError::Store(e.into())
    }
}

/// A sha256 as lowercase hex, checked.
pub fn parse_sha256(text: &str) -> std::result::Result<String, ArtifactError> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(ArtifactError::Invalid(
            "sha256 must be 64 hexadecimal digits".into(),
        ))
    }
}

/// The sha256 of a file, as hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(crate::operation::hex(&hasher.finalize()))
}

const COLUMNS: &str = "id, workflow_id, name, size, sha256, received, complete";

fn from_row(row: &rusqlite::Row) -> rusqlite::Result<Artifact> {
    Ok(Artifact {
        id: row.get(0)?,
        workflow_id: row.get(1)?,
        name: row.get(2)?,
        size: row.get::<_, i64>(3)? as u64,
        sha256: row.get(4)?,
        received: row.get::<_, i64>(5)? as u64,
        complete: row.get(6)?,
    })
}

pub fn artifact_get(conn: &Connection, id: &str) -> Result<Option<Artifact>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM artifacts WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

fn artifact_named(conn: &Connection, workflow_id: &str, name: &str) -> Result<Option<Artifact>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE workflow_id = ?1 AND name = ?2"
        ))?
        .query_row([workflow_id, name], from_row)
        .optional()?)
}

/// The bytes all artifacts declared.
pub fn artifact_total_bytes(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(sum(size), 0) FROM artifacts")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// Artifacts whose workflow ended before `before`: their rows are deleted
/// and their ids returned (the caller removes the files).
pub fn artifact_prune(conn: &Connection, before: Timestamp) -> Result<Vec<String>> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM artifacts WHERE workflow_id IN (
                 SELECT id FROM operations WHERE finished_at < :before
                 AND status IN ('completed', 'failed', 'cancelled'))
             RETURNING id",
        )?
        .query_map(named_params! {":before": to_db(before)}, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// What an operation's claim says of who holds it, for the API's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub target: String,
    pub workflow_id: Option<String>,
    /// The agent key that registered the worker holding it.
    pub agent_key_id: Option<String>,
}

/// Who holds operation `id` in its running attempt `attempt`, if
/// `worker_id` does.
pub fn artifact_holder(
    conn: &Connection,
    id: OperationId,
    attempt: i64,
    worker_id: &str,
) -> Result<Option<Holder>> {
    Ok(conn
        .prepare_cached(
            "SELECT o.target, o.parent_id, w.agent_key_id FROM operations o
             JOIN workers w ON w.id = o.worker_id
             WHERE o.id = :id AND o.attempt = :attempt AND o.worker_id = :worker
               AND o.status = 'running'",
        )?
        .query_row(
            named_params! {":id": id.to_string(), ":attempt": attempt, ":worker": worker_id},
            |r| {
                Ok(Holder {
                    target: r.get(0)?,
                    workflow_id: r.get(1)?,
                    agent_key_id: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// The artifacts of one store, with their directory and limit.
#[derive(Debug, Clone)]
pub struct Artifacts {
    store: Store,
    dir: PathBuf,
    max_bytes: u64,
}

/// An artifact to create: what the whole will be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewArtifact {
    pub workflow_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Artifacts {
    pub fn new(store: Store, config: &crate::config::Config) -> Self {
        Self {
            store,
            dir: config.artifacts.dir(&config.database),
            max_bytes: config.artifacts.max_bytes,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the artifact, or answers the one of that workflow and name
    /// if it declares the same whole (an upload resuming); one that
    /// declares another whole and is not complete starts over.
    pub fn create(&self, new: &NewArtifact) -> std::result::Result<Artifact, ArtifactError> {
        std::fs::create_dir_all(&self.dir)?;
        let sha256 = parse_sha256(&new.sha256)?;
        let now = to_db(crate::time::now());
        let max = self.max_bytes;
        let (artifact, stale) = self.store.write(|tx| {
            let mut stale = None;
            if let Some(found) = artifact_named(tx, &new.workflow_id, &new.name)? {
                if found.size == new.size && found.sha256 == sha256 {
                    return Ok((Ok(found), None));
                }
                if found.complete {
                    return Ok((
                        Err(ArtifactError::Conflict(format!(
                            "artifact {:?} of this workflow is already complete with another content",
                            new.name
                        ))),
                        None,
                    ));
                }
                tx.execute("DELETE FROM artifacts WHERE id = ?1", [&found.id])?;
                stale = Some(found.id);
            }
            let total = artifact_total_bytes(tx)?;
            if total.saturating_add(new.size) > max {
                let refusal = ArtifactError::TooLarge(format!(
                    "an artifact of {} bytes does not fit: artifacts hold {total} of at most \
                     {max} bytes ([artifacts] max_bytes)",
                    new.size
                ));
                return Ok((Err(refusal), None));
            }
            let id = OperationId::new().to_string();
            tx.prepare_cached(
                "INSERT INTO artifacts (id, workflow_id, name, size, sha256, created_at, updated_at)
                 VALUES (:id, :workflow, :name, :size, :sha256, :now, :now)",
            )?
            .execute(named_params! {
                ":id": id, ":workflow": new.workflow_id, ":name": new.name,
                ":size": new.size as i64, ":sha256": sha256, ":now": now,
            })?;
            Ok((Ok(artifact_get(tx, &id)?.expect("just inserted")), stale))
        })?;
        if let Some(stale) = stale {
            let _ = std::fs::remove_file(self.path(&stale));
        }
        artifact
    }

    pub fn get(&self, id: &str) -> std::result::Result<Artifact, ArtifactError> {
        self.store
            .read(|c| artifact_get(c, id))?
            .ok_or_else(|| ArtifactError::NotFound(id.to_owned()))
    }

    /// Writes one chunk at `offset` (which must be where the artifact
    /// stands) after checking its sha256; the last one checks the whole.
    pub fn put_chunk(
        &self,
        id: &str,
        offset: u64,
        sha256: &str,
        bytes: &[u8],
    ) -> std::result::Result<Artifact, ArtifactError> {
        let declared = parse_sha256(sha256)?;
        if crate::operation::hex(&Sha256::digest(bytes)) != declared {
            return Err(ArtifactError::Invalid(
                "the chunk's sha256 is not the one sent with it".into(),
            ));
        }
        let path = self.path(id);
        let now = to_db(crate::time::now());
        self.store.write(|tx| {
            let Some(artifact) = artifact_get(tx, id)? else {
                return Ok(Err(ArtifactError::NotFound(id.to_owned())));
            };
            if artifact.complete {
                return Ok(Ok(artifact));
            }
            if offset != artifact.received {
                return Ok(Err(ArtifactError::Offset {
                    received: artifact.received,
                }));
            }
            let end = offset + bytes.len() as u64;
            if end > artifact.size {
                return Ok(Err(ArtifactError::Invalid(format!(
                    "the chunk ends at {end}, past the declared size {}",
                    artifact.size
                ))));
            }
            let written = (|| -> std::io::Result<Option<String>> {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                file.set_len(offset)?;
                file.seek(SeekFrom::Start(offset))?;
                file.write_all(bytes)?;
                file.sync_data()?;
                if end == artifact.size {
                    return file_sha256(&path).map(Some);
                }
                Ok(None)
            })();
            let whole = match written {
                Ok(whole) => whole,
                Err(e) => return Ok(Err(ArtifactError::Io(e))),
            };
            let (received, complete, refusal) = match whole {
                Some(sum) if sum != artifact.sha256 => {
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(0));
                    (
                        0,
                        false,
                        Some(ArtifactError::Invalid(format!(
                            "the whole file's sha256 is {sum}, not the declared {}: \
                             the upload starts over",
                            artifact.sha256
                        ))),
                    )
                }
                Some(_) => (end, true, None),
                None => (end, false, None),
            };
            tx.prepare_cached(
                "UPDATE artifacts SET received = :received, complete = :complete,
                     updated_at = :now WHERE id = :id",
            )?
            .execute(named_params! {
                ":received": received as i64, ":complete": complete, ":now": now, ":id": id,
            })?;
            Ok(match refusal {
                Some(refusal) => Err(refusal),
                None => Ok(artifact_get(tx, id)?.expect("still there")),
            })
        })?
    }

    /// The complete artifact's file, positioned at `offset`.
    pub fn open(
        &self,
        id: &str,
        offset: u64,
    ) -> std::result::Result<(Artifact, std::fs::File), ArtifactError> {
        let artifact = self.get(id)?;
        if !artifact.complete {
            return Err(ArtifactError::Conflict(format!(
                "artifact {id} holds {} of {} bytes: not complete yet",
                artifact.received, artifact.size
            )));
        }
        if offset > artifact.size {
            return Err(ArtifactError::Invalid(format!(
                "offset {offset} is past the size {}",
                artifact.size
            )));
        }
        let mut file = std::fs::File::open(self.path(id))?;
        file.seek(SeekFrom::Start(offset))?;
        Ok((artifact, file))
    }

    /// Removes the artifacts whose workflow ended before `before`, rows
    /// and files; how many.
    pub fn prune(&self, before: Timestamp) -> std::result::Result<usize, ArtifactError> {
        let ids = self.store.write(|tx| artifact_prune(tx, before))?;
        for id in &ids {
            match std::fs::remove_file(self.path(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(ids.len())
    }
}
