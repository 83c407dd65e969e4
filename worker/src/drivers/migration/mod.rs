//! The `migration` driver: the steps of a migration that run on the source
//! (inspect, copy, upload) or the target (preflight, restore, start,
//! health), and the discard that undoes what a migration left on either.
//! Stopping and starting the source are `pm2` steps of the workflow; this
//! driver reaches pm2 through the `pm2` driver.
//!
//! Paths travel relative to `[pm2] base_dir`: the source says where the
//! app's script, working directory and state lie inside its base
//! directory, and the target puts them at the same place inside its own.
//! A step reads what earlier steps found through its inputs (`inspect`'s
//! spec, `final`'s manifest, `upload`'s artifact).
//!
//! Each worker keeps a migration's files in `[migration] staging_dir/<id>/`:
//! the staged copy and the archive on the source (removed once uploaded),
//! the downloaded archive and the record of the state directory restored on
//! the target (what discard removes). The source's state directory is only
//! ever read.

mod files;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opsqueue_shared::Config;
use opsqueue_shared::agent::ArtifactDeclaration;
use opsqueue_shared::families::FamilyAction as _;
use opsqueue_shared::families::migration::{
    Copy, CopyPhase, Inspect, MigrationAction, MigrationConfig, Probe, Step,
};
use opsqueue_shared::families::pm2::{Named, Pm2Action, ProcessName};
use serde_json::{Value, json};

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome};
use crate::drivers::pm2::Pm2;
use crate::link::{Link, TransferError};
use files::Manifest;

/// Error codes of this driver.
pub mod codes {
    /// The app, its record or its state directory is not as a migration needs.
    pub const NOT_MIGRATABLE: &str = "not_migratable";
    /// The target cannot take the app (already there, port taken, no room).
    pub const PREFLIGHT_FAILED: &str = "preflight_failed";
    /// Reading or writing the state, the staging folder or the archive failed.
    pub const STATE_IO: &str = "state_io";
    /// The API did not take or give the artifact; a retry resumes.
    pub const TRANSFER_FAILED: &str = "transfer_failed";
    /// The restored files are not the source's.
    pub const VERIFY_FAILED: &str = "verify_failed";
    /// The app on the target did not come up healthy in time.
    pub const HEALTH_FAILED: &str = "health_failed";
    /// An earlier step's result is missing or unreadable.
    pub const BAD_INPUT: &str = "bad_input";
    /// What opsqueue manages could not be read: retryable.
    pub const STORE: &str = "store_unavailable";
}

/// The artifact's name inside its workflow.
const ARTIFACT: &str = "state";

pub struct Migration {
    config: MigrationConfig,
    base_dir: PathBuf,
    pm2: Pm2,
    link: Link,
}

pub fn driver(config: &Config, link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::plain(Migration {
        config: config.migration.clone(),
        base_dir: config.pm2.base_dir.clone(),
        pm2: Pm2::new(config),
        link: link.clone(),
    }))
}

fn state_io(message: String) -> DriverError {
    DriverError::retryable(codes::STATE_IO, message)
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| state_io(format!("the file task failed: {e}")))?
        .map_err(state_io)
}

/// An earlier step's result field.
fn input<'a>(ctx: &'a Context, step: &str, field: &str) -> Result<&'a Value, DriverError> {
    ctx.inputs()
        .get(step)
        .map(|result| &result[field])
        .filter(|value| !value.is_null())
        .ok_or_else(|| {
            DriverError::permanent(
                codes::BAD_INPUT,
                format!("the {step} step's result has no {field}"),
            )
        })
}

fn input_as<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    step: &str,
    field: &str,
) -> Result<T, DriverError> {
    serde_json::from_value(input(ctx, step, field)?.clone()).map_err(|e| {
        DriverError::permanent(codes::BAD_INPUT, format!("the {step} step's {field}: {e}"))
    })
}

/// Field `field` of `inspect`'s relative spec, checked (plain components
/// only; `.` for the base directory itself, except for the state
/// directory) and put under `base`.
fn under_base(base: &Path, spec: &Value, field: &str) -> Result<PathBuf, DriverError> {
    let text = spec[field].as_str().unwrap_or_default();
    if text == "." && field != "state_dir" {
        return Ok(base.to_path_buf());
    }
    let path = PathBuf::from(text);
    let plain = !text.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(DriverError::permanent(
            codes::BAD_INPUT,
            format!("spec.{field} {text:?} is not a plain relative path"),
        ));
    }
    Ok(base.join(path))
}

impl Migration {
    fn staging(&self, migration: impl std::fmt::Display) -> PathBuf {
        self.config.staging_dir.join(migration.to_string())
    }

    fn base(&self) -> Result<PathBuf, DriverError> {
        std::fs::canonicalize(&self.base_dir).map_err(|e| {
            DriverError::permanent(
                codes::NOT_MIGRATABLE,
                format!("[pm2] base_dir {}: {e}", self.base_dir.display()),
            )
        })
    }

    /// `path` relative to the base directory (`.` for the directory
    /// itself, which the state directory may not be), or a refusal.
    fn relative(&self, field: &str, path: &str) -> Result<String, DriverError> {
        let base = self.base()?;
        let inside = Path::new(path)
            .strip_prefix(&base)
            .or_else(|_| Path::new(path).strip_prefix(&self.base_dir))
            .ok()
            .filter(|rest| field != "state_dir" || !rest.as_os_str().is_empty());
        inside
            .map(|rest| match rest.to_string_lossy() {
                text if text.is_empty() => ".".to_owned(),
                text => text.into_owned(),
            })
            .ok_or_else(|| {
                DriverError::permanent(
                    codes::NOT_MIGRATABLE,
                    format!(
                        "{field} {path} is not inside [pm2] base_dir {}",
                        base.display()
                    ),
                )
            })
    }

    async fn pm2_status(&self, ctx: &Context, name: &ProcessName) -> Result<Outcome, DriverError> {
        let describe = Pm2Action::Describe(Named { name: name.clone() });
        self.pm2.execute(&describe, ctx).await
    }

    async fn inspect(&self, inspect: &Inspect, ctx: &Context) -> Result<Outcome, DriverError> {
        let records = self
            .link
            .managed_list(ctx.target(), "pm2", "process", Some(inspect.name.as_str()))
            .await
            .map_err(|e| DriverError::retryable(codes::STORE, e.to_string()))?;
        let spec = records.into_iter().next().map(|r| r.spec).ok_or_else(|| {
            DriverError::permanent(
                codes::NOT_MIGRATABLE,
                format!("opsqueue manages no pm2 app {} here", inspect.name),
            )
        })?;
        if spec["state_dir"].as_str() != Some(inspect.state_dir.as_str()) {
            return Err(DriverError::permanent(
                codes::NOT_MIGRATABLE,
                format!(
                    "the app's recorded state_dir is {}, not {}",
                    spec["state_dir"], inspect.state_dir
                ),
            ));
        }
        let text = |field: &str| -> Result<String, DriverError> {
            let path = spec[field].as_str().ok_or_else(|| {
                DriverError::permanent(codes::NOT_MIGRATABLE, format!("the record has no {field}"))
            })?;
            self.relative(field, path)
        };
        let relative = json!({
            "script": text("script")?,
            "cwd": text("cwd")?,
            "state_dir": text("state_dir")?,
            "interpreter": spec["interpreter"],
            "args": spec["args"],
            "instances": spec["instances"],
            "wait_ready": spec["wait_ready"],
        });
        let status = self.pm2_status(ctx, &inspect.name).await?;
        let state_dir = inspect.state_dir.as_path().to_path_buf();
        let (bytes, count) = blocking(move || files::measure(&state_dir)).await?;
        ctx.step(format!(
            "{}: {count} files, {bytes} bytes in {}",
            inspect.name, inspect.state_dir
        ));
        Ok(Outcome::unchanged()
            .with("spec", relative)
            .with("env_names", &spec["env_names"])
            .with("status", &status.result["status"])
            .with("state_bytes", bytes)
            .with("state_files", count))
    }

    async fn preflight(&self, probe: &Probe, ctx: &Context) -> Result<Outcome, DriverError> {
        let refuse = |message: String| DriverError::permanent(codes::PREFLIGHT_FAILED, message);
        let base = self.base()?;
        let status = self.pm2_status(ctx, &probe.name).await?;
        if status.result["status"] != "absent" {
            return Err(refuse(format!(
                "pm2 here already has an app named {} ({})",
                probe.name, status.result["status"]
            )));
        }
        let spec = input(ctx, "inspect", "spec")?;
        let script = under_base(&base, spec, "script")?;
        if !script.is_file() {
            return Err(refuse(format!(
                "the app's script {} is not deployed here",
                script.display()
            )));
        }
        let state_dir = under_base(&base, spec, "state_dir")?;
        let occupied = std::fs::read_dir(&state_dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            return Err(refuse(format!(
                "the state directory {} already holds files here",
                state_dir.display()
            )));
        }
        if let Some(port) = probe.port {
            std::net::TcpListener::bind(("127.0.0.1", port.get())).map_err(|e| {
                refuse(format!(
                    "port {port} is not free here: {e}",
                    port = port.get()
                ))
            })?;
        }
        let needed = 2 * input_as::<u64>(ctx, "inspect", "state_bytes")?;
        let mut existing = state_dir.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let free = crate::facts::free_bytes(existing).unwrap_or(u64::MAX);
        if free < needed {
            return Err(refuse(format!(
                "{} has {free} bytes free; the state needs twice its size, {needed}",
                existing.display()
            )));
        }
        Ok(Outcome::unchanged()
            .with("state_dir", &state_dir)
            .with("free_bytes", free)
            .with("needed_bytes", needed))
    }

    async fn copy(&self, copy: &Copy, ctx: &Context) -> Result<Outcome, DriverError> {
        let staging = self.staging(copy.migration);
        let (state, stage_dir) = (
            copy.state_dir.as_path().to_path_buf(),
            staging.join("stage"),
        );
        let started = Instant::now();
        let phase = copy.phase;
        let archive = staging.join("state.tar");
        let (staged, manifest) = blocking(move || {
            let staged = files::stage(&state, &stage_dir)?;
            let manifest = match phase {
                CopyPhase::Warm => None,
                CopyPhase::Final => Some(files::pack(&stage_dir, &archive)?),
            };
            Ok((staged, manifest))
        })
        .await?;
        ctx.step(format!(
            "{phase:?} copy: {} files ({} copied, {} databases), {} bytes",
            staged.files, staged.copied, staged.databases, staged.bytes
        ));
        let mut outcome = Outcome::changed()
            .with("files", staged.files)
            .with("copied", staged.copied)
            .with("databases", staged.databases)
            .with("bytes", staged.bytes)
            .with("seconds", started.elapsed().as_secs_f64());
        if let Some(manifest) = manifest {
            let archive = staging.join("state.tar");
            let path = archive.clone();
            let sha256 = blocking(move || files::sha256_file(&path)).await?;
            let size = std::fs::metadata(&archive)
                .map_err(|e| state_io(format!("{}: {e}", archive.display())))?
                .len();
            outcome = outcome
                .with("manifest", manifest)
                .with("archive_bytes", size)
                .with("archive_sha256", sha256)
                .with(
                    "state_dir",
                    self.relative("state_dir", copy.state_dir.as_str())?,
                );
        }
        Ok(outcome)
    }

    async fn upload(&self, step: &Step, ctx: &Context) -> Result<Outcome, DriverError> {
        let staging = self.staging(step.migration);
        let archive = staging.join("state.tar");
        let size: u64 = input_as(ctx, "final", "archive_bytes")?;
        let sha256: String = input_as(ctx, "final", "archive_sha256")?;
        let manifest: Manifest = input_as(ctx, "final", "manifest")?;
        let transfer = |e: TransferError| {
            if e.retryable {
                DriverError::retryable(codes::TRANSFER_FAILED, e.message)
            } else {
                DriverError::permanent(codes::TRANSFER_FAILED, e.message)
            }
        };
        let started = Instant::now();
        let mut artifact = self
            .link
            .artifact_declare(
                ctx.config(),
                ctx.fence(),
                ArtifactDeclaration {
                    name: ARTIFACT.into(),
                    size,
                    sha256: sha256.clone(),
                },
            )
            .await
            .map_err(transfer)?;
        if !artifact.complete {
            let mut file = tokio::fs::File::open(&archive).await.map_err(|e| {
                DriverError::permanent(
                    codes::STATE_IO,
                    format!("the final copy's archive {}: {e}", archive.display()),
                )
            })?;
            if artifact.received > 0 {
                ctx.step(format!("resuming the upload at byte {}", artifact.received));
            }
            while !artifact.complete {
                use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
                let offset = artifact.received;
                let length = (size - offset).min(self.config.chunk_bytes) as usize;
                let mut chunk = vec![0; length];
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| state_io(e.to_string()))?;
                file.read_exact(&mut chunk)
                    .await
                    .map_err(|e| state_io(e.to_string()))?;
                let sent = self
                    .link
                    .artifact_chunk(ctx.config(), ctx.fence(), &artifact.id, offset, chunk)
                    .await;
                artifact = match sent {
                    Ok(artifact) => artifact,
                    // Where does the API stand? Resume there, or give up
                    // for this attempt (the retry resumes).
                    Err(e) => {
                        ctx.step(format!("a chunk at {offset} was refused: {e}"));
                        let found = self
                            .link
                            .artifact_status(ctx.config(), ctx.fence(), &artifact.id)
                            .await
                            .map_err(transfer)?;
                        if found.received == offset && !found.complete {
                            return Err(transfer(e));
                        }
                        found
                    }
                };
                if ctx.is_cancelled() {
                    return Err(DriverError::retryable(
                        codes::TRANSFER_FAILED,
                        "stopped mid-upload",
                    ));
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        ctx.step(format!("uploaded {size} bytes in {seconds:.2} s"));
        let stage = staging.join("stage");
        let _ = tokio::fs::remove_dir_all(&stage).await;
        let _ = tokio::fs::remove_file(&archive).await;
        Ok(Outcome::changed()
            .with("artifact", &artifact.id)
            .with("bytes", size)
            .with("sha256", sha256)
            .with("manifest", manifest)
            .with("seconds", seconds))
    }

    async fn restore(&self, step: &Step, ctx: &Context) -> Result<Outcome, DriverError> {
        let base = self.base()?;
        let state_dir = under_base(&base, input(ctx, "inspect", "spec")?, "state_dir")?;
        let artifact: String = input_as(ctx, "upload", "artifact")?;
        let size: u64 = input_as(ctx, "upload", "bytes")?;
        let sha256: String = input_as(ctx, "upload", "sha256")?;
        let manifest: Manifest = input_as(ctx, "upload", "manifest")?;
        let staging = self.staging(step.migration);
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| state_io(format!("{}: {e}", staging.display())))?;
        let record = staging.join("restored.json");
        // A re-run after the files were moved into place.
        if state_dir.exists() {
            let (dir, wanted) = (state_dir.clone(), manifest.clone());
            if tokio::fs::metadata(&record).await.is_ok()
                && blocking(move || files::verify(&dir, &wanted)).await.is_ok()
            {
                return Ok(Outcome::unchanged()
                    .with("state_dir", &state_dir)
                    .with("files", manifest.files.len())
                    .with("bytes", manifest.bytes()));
            }
            let empty = std::fs::read_dir(&state_dir).is_ok_and(|mut d| d.next().is_none());
            if !empty {
                return Err(DriverError::permanent(
                    codes::PREFLIGHT_FAILED,
                    format!("{} already holds files here", state_dir.display()),
                ));
            }
        }
        let download = staging.join("download.tar");
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&download)
            .await
            .map_err(|e| state_io(format!("{}: {e}", download.display())))?;
        let mut have = file
            .metadata()
            .await
            .map_err(|e| state_io(e.to_string()))?
            .len();
        if have > size {
            file.set_len(0).await.map_err(|e| state_io(e.to_string()))?;
            have = 0;
        }
        let started = Instant::now();
        if have < size {
            if have > 0 {
                ctx.step(format!("resuming the download at byte {have}"));
            }
            self.link
                .artifact_read_into(ctx.config(), ctx.fence(), &artifact, have, &mut file)
                .await
                .map_err(|e| DriverError::retryable(codes::TRANSFER_FAILED, e.message))?;
        }
        drop(file);
        let path = download.clone();
        let found = blocking(move || files::sha256_file(&path)).await?;
        if found != sha256 {
            let _ = tokio::fs::remove_file(&download).await;
            return Err(DriverError::retryable(
                codes::TRANSFER_FAILED,
                format!("the downloaded archive's sha256 is {found}, not the source's {sha256}"),
            ));
        }
        ctx.step(format!(
            "downloaded {size} bytes in {:.2} s, sha256 verified",
            started.elapsed().as_secs_f64()
        ));
        let parent = state_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| base.clone());
        let needed = 2 * manifest.bytes();
        std::fs::create_dir_all(&parent)
            .map_err(|e| state_io(format!("{}: {e}", parent.display())))?;
        let free = crate::facts::free_bytes(&parent).unwrap_or(u64::MAX);
        if free < needed {
            return Err(DriverError::permanent(
                codes::PREFLIGHT_FAILED,
                format!(
                    "{} has {free} bytes free; restoring needs {needed}",
                    parent.display()
                ),
            ));
        }
        let temporary = parent.join(format!(
            ".{}.opsqueue-{}",
            state_dir.file_name().unwrap_or_default().to_string_lossy(),
            step.migration
        ));
        let (archive, into, wanted, target) = (
            download.clone(),
            temporary.clone(),
            manifest.clone(),
            state_dir.clone(),
        );
        let record_text = json!({"state_dir": state_dir}).to_string();
        let record_path = record.clone();
        let unpacked = blocking(move || {
            let _ = std::fs::remove_dir_all(&into);
            if let Err(e) = files::unpack(&archive, &into, &wanted) {
                let _ = std::fs::remove_dir_all(&into);
                return Err(e);
            }
            // Recorded first, so a discard finds what this made.
            std::fs::write(&record_path, record_text).map_err(|e| e.to_string())?;
            if target.exists() {
                std::fs::remove_dir(&target).map_err(|e| e.to_string())?;
            }
            std::fs::rename(&into, &target).map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = unpacked {
            return Err(DriverError::permanent(codes::VERIFY_FAILED, e.message));
        }
        let _ = tokio::fs::remove_file(&download).await;
        ctx.step(format!(
            "restored {} files into {}, each checked against the source's manifest",
            manifest.files.len(),
            state_dir.display()
        ));
        Ok(Outcome::changed()
            .with("state_dir", &state_dir)
            .with("files", manifest.files.len())
            .with("bytes", manifest.bytes()))
    }

    async fn discard(&self, step: &Step, ctx: &Context) -> Result<Outcome, DriverError> {
        let staging = self.staging(step.migration);
        let mut outcome = Outcome::unchanged();
        let record = staging.join("restored.json");
        if let Ok(text) = tokio::fs::read_to_string(&record).await {
            let restored: Value = serde_json::from_str(&text).unwrap_or_default();
            let dir = PathBuf::from(restored["state_dir"].as_str().unwrap_or_default());
            let base = self.base()?;
            if dir.starts_with(&base) && dir != base {
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => {
                        ctx.step(format!("removed the restored copy {}", dir.display()));
                        outcome = Outcome::changed().with("removed", &dir);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(state_io(format!("{}: {e}", dir.display()))),
                }
            }
        }
        match tokio::fs::remove_dir_all(&staging).await {
            Ok(()) => Ok(Outcome {
                changed: true,
                ..outcome
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(outcome),
            Err(e) => Err(state_io(format!("{}: {e}", staging.display()))),
        }
    }

    async fn start(&self, step: &Step, ctx: &Context) -> Result<Outcome, DriverError> {
        let base = self.base()?;
        let spec: Value = input_as(ctx, "inspect", "spec")?;
        let absolute = |field: &str| -> Result<String, DriverError> {
            Ok(under_base(&base, &spec, field)?
                .to_string_lossy()
                .into_owned())
        };
        let mut payload = json!({
            "name": step.name,
            "script": absolute("script")?,
            "cwd": absolute("cwd")?,
            "state_dir": absolute("state_dir")?,
        });
        for field in ["interpreter", "args", "instances"] {
            if !spec[field].is_null() {
                payload[field] = spec[field].clone();
            }
        }
        if spec["wait_ready"] == true {
            payload["wait_ready"] = json!(true);
        }
        let action = Pm2Action::parse("pm2.start", payload)
            .map_err(|e| DriverError::permanent(codes::BAD_INPUT, e.to_string()))?;
        action
            .check_config(&ctx.config().pm2)
            .map_err(|e| DriverError::permanent(codes::NOT_MIGRATABLE, e.to_string()))?;
        self.pm2.execute(&action, ctx).await
    }

    async fn health(&self, probe: &Probe, ctx: &Context) -> Result<Outcome, DriverError> {
        let deadline = Instant::now() + Duration::from_secs(self.config.health_timeout_secs);
        let settle = Duration::from_secs(self.config.settle_secs);
        let mut last = String::from("not checked yet");
        while Instant::now() < deadline && !ctx.is_cancelled() {
            match self.healthy_once(probe, ctx).await? {
                Ok(pid) => {
                    tokio::time::sleep(settle).await;
                    match self.healthy_once(probe, ctx).await? {
                        Ok(again) if again == pid => {
                            ctx.step(format!(
                                "{} is online (pid {pid:?}) and stayed up",
                                probe.name
                            ));
                            return Ok(Outcome::unchanged().with("pid", pid).with("healthy", true));
                        }
                        Ok(again) => {
                            last = format!("restarted meanwhile (pid {pid:?} → {again:?})")
                        }
                        Err(why) => last = why,
                    }
                }
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(DriverError::permanent(
            codes::HEALTH_FAILED,
            format!(
                "{} did not become healthy within {} s: {last}",
                probe.name, self.config.health_timeout_secs
            ),
        ))
    }

    /// The app's pid when it is online (and its port answers), or why not.
    async fn healthy_once(
        &self,
        probe: &Probe,
        ctx: &Context,
    ) -> Result<Result<Option<i64>, String>, DriverError> {
        let status = self.pm2_status(ctx, &probe.name).await?;
        if status.result["status"] != "online" {
            return Ok(Err(format!("pm2 says {}", status.result["status"])));
        }
        let pid = status.result["process"]["instances"][0]["pid"].as_i64();
        if let Some(port) = probe.port {
            let address = ("127.0.0.1", port.get());
            if let Err(e) = tokio::net::TcpStream::connect(address).await {
                return Ok(Err(format!("port {} does not answer: {e}", port.get())));
            }
        }
        Ok(Ok(pid))
    }
}

impl Driver for Migration {
    type Action = MigrationAction;

    async fn execute(
        &self,
        action: &MigrationAction,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        match action {
            MigrationAction::Inspect(inspect) => self.inspect(inspect, ctx).await,
            MigrationAction::Preflight(probe) => self.preflight(probe, ctx).await,
            MigrationAction::Copy(copy) => self.copy(copy, ctx).await,
            MigrationAction::Upload(step) => self.upload(step, ctx).await,
            MigrationAction::Restore(step) => self.restore(step, ctx).await,
            MigrationAction::Discard(step) => self.discard(step, ctx).await,
            MigrationAction::Start(step) => self.start(step, ctx).await,
            MigrationAction::Health(probe) => self.health(probe, ctx).await,
        }
    }
}
