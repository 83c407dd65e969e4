//! The version cache, `{versions_dir}/{version}/pocketbase`, and
//! `pocketbase.version.install`: a binary (or a release `.zip` holding one)
//! from an `https://` URL or a path on the host, kept only when its sha256
//! is the one given. Nothing is ever fetched without a checksum.
//!
//! The binary is written to a temporary name beside its place, synced and
//! renamed, so a cached version is whole or absent; `source.sha256` beside
//! it remembers what was installed, so the same install again is a no-op.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use opsqueue_shared::families::pocketbase::{FAMILY, VERSION_KIND, VersionSource};
use opsqueue_shared::store::StateEffect;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Pocketbase, codes, file_error, files};
use crate::context::Context;
use crate::drivers::driver::{DriverError, Outcome, Probe};

/// The largest download or file accepted (PocketBase's binary is ~35 MB).
const MAX_BYTES: usize = 256 * 1024 * 1024;

/// The versions in the cache, sorted.
pub fn cached(versions_dir: &Path) -> Vec<String> {
    let mut versions: Vec<String> = std::fs::read_dir(versions_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("pocketbase").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The binary in `bytes`: the `pocketbase` entry of a zip archive, or the
/// bytes themselves.
fn binary_of(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Ok(bytes);
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut entry = archive
        .by_name("pocketbase")
        .map_err(|_| "the archive holds no `pocketbase` at its top".to_owned())?;
    let mut binary = Vec::new();
    entry
        .by_ref()
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut binary)
        .map_err(|e| format!("cannot unpack `pocketbase`: {e}"))?;
    if binary.len() > MAX_BYTES {
        return Err("`pocketbase` in the archive is too large".into());
    }
    Ok(binary)
}

impl Pocketbase {
    async fn download(&self, ctx: &Context, url: &str) -> Result<Vec<u8>, DriverError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.config.command_timeout_secs))
            .https_only(true)
            .build()
            .map_err(|e| DriverError::permanent(codes::DOWNLOAD, e.to_string()))?;
        let fetch = async {
            let response = client.get(url).send().await?.error_for_status()?;
            if response
                .content_length()
                .is_some_and(|n| n > MAX_BYTES as u64)
            {
                return Ok(None);
            }
            response.bytes().await.map(|b| Some(b.to_vec()))
        };
        let bytes = tokio::select! {
            result = fetch => result.map_err(|e| DriverError::retryable(codes::DOWNLOAD, format!("{url}: {e}")))?,
            () = ctx.cancelled() => return Err(DriverError::cancelled()),
        };
        bytes.filter(|b| b.len() <= MAX_BYTES).ok_or_else(|| {
            DriverError::permanent(
                codes::DOWNLOAD,
                format!("{url} is larger than {MAX_BYTES} bytes"),
            )
        })
    }

    /// `pocketbase.version.install`.
    pub(super) async fn version_install(
        &self,
        ctx: &Context,
        source: &VersionSource,
    ) -> Result<Outcome, DriverError> {
        let dir = self.config.versions_dir.join(source.version.as_str());
        let binary = source.version.binary(&self.config.versions_dir);
        let stamp = dir.join("source.sha256");
        let origin = source
            .url
            .as_ref()
            .map(|u| u.as_str().to_owned())
            .or_else(|| source.path.as_ref().map(|p| p.to_string()))
            .unwrap_or_default();
        if binary.is_file()
            && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == source.sha256.as_str())
        {
            return Ok(Outcome::unchanged()
                .with("version", &source.version)
                .with("path", binary.display().to_string()));
        }
        let bytes = match (&source.url, &source.path) {
            (Some(url), _) => {
                ctx.step(format!("downloading {}", url.as_str()));
                self.download(ctx, url.as_str()).await?
            }
            (None, Some(path)) => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| file_error("cannot read", path.as_path(), e))?;
                if meta.len() > MAX_BYTES as u64 {
                    return Err(DriverError::permanent(
                        codes::DOWNLOAD,
                        format!("{path} is too large"),
                    ));
                }
                std::fs::read(path).map_err(|e| file_error("cannot read", path.as_path(), e))?
            }
            (None, None) => unreachable!("the parser wants a url or a path"),
        };
        let digest = hex(&Sha256::digest(&bytes));
        if digest != source.sha256.as_str() {
            return Err(DriverError::permanent(
                codes::CHECKSUM_MISMATCH,
                format!(
                    "{origin} has sha256 {digest}, not {}: nothing was kept",
                    source.sha256.as_str()
                ),
            ));
        }
        let program = binary_of(bytes)
            .map_err(|m| DriverError::permanent(codes::DOWNLOAD, format!("{origin}: {m}")))?;
        std::fs::create_dir_all(&dir).map_err(|e| file_error("cannot create", &dir, e))?;
        files::write_atomically(&binary, &program, 0o755)
            .map_err(|e| file_error("cannot write", &binary, e))?;
        files::write_atomically(
            &stamp,
            format!("{}\n", source.sha256.as_str()).as_bytes(),
            0o644,
        )
        .map_err(|e| file_error("cannot write", &stamp, e))?;
        ctx.step(format!(
            "cached version {} as {}",
            source.version,
            binary.display()
        ));
        ctx.record(StateEffect::Managed {
            family: FAMILY.into(),
            kind: VERSION_KIND.into(),
            name: source.version.to_string(),
            spec: json!({
                "version": source.version,
                "sha256": source.sha256,
                "source": origin,
                "path": binary,
                "installed_at": opsqueue_shared::time::now(),
            }),
        });
        Ok(Outcome::changed()
            .with("version", &source.version)
            .with("path", binary.display().to_string()))
    }
}

impl Probe for Pocketbase {
    /// The worker's start-up look at the family: the versions in the cache.
    async fn probe(&self, _ctx: &Context) -> Result<String, DriverError> {
        let versions = cached(&self.config.versions_dir);
        Ok(format!(
            "{} cached version(s) in {}: {}",
            versions.len(),
            self.config.versions_dir.display(),
            versions.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn a_release_zip_gives_its_top_level_pocketbase_and_a_plain_file_is_the_binary() {
        let release = archive(&[
            ("CHANGELOG.md", b"notes"),
            ("LICENSE.md", b"MIT"),
            ("pocketbase", b"\x7fELF the binary"),
        ]);
        assert_eq!(binary_of(release).unwrap(), b"\x7fELF the binary");
        assert_eq!(
            binary_of(b"\x7fELF plain".to_vec()).unwrap(),
            b"\x7fELF plain"
        );
        let nested = archive(&[("dir/pocketbase", b"x")]);
        assert!(binary_of(nested).unwrap_err().contains("no `pocketbase`"));
        let broken = b"PK\x03\x04 not really a zip".to_vec();
        assert!(
            binary_of(broken)
                .unwrap_err()
                .contains("not a readable zip")
        );
    }
}
