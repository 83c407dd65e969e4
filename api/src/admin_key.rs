//! The first admin key. On a start that finds no API key at all, the API
//! creates one admin key and writes its token to `admin_key_file` (default
//! `<database dir>/admin.key`), readable by the owner only, and logs the
//! file's path, never the token. Later starts leave keys and file alone.
//!
//! The token goes to a temporary file created with mode 0600 first, and is
//! renamed into place only after the key committed; the insert re-counts
//! the keys inside its write transaction, so two API processes starting at
//! once create one key.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use opsqueue_shared::Store;
use opsqueue_shared::store::{NewKey, Scope, api_key_count, api_key_insert, token_generate};

pub const FIRST_KEY_NAME: &str = "admin";

/// Creates the first admin key if there is no key; returns the file its
/// token was written to, if it did.
pub fn ensure_first_admin_key(store: &Store, file: &Path) -> anyhow::Result<Option<PathBuf>> {
    if store.read(api_key_count)? > 0 {
        return Ok(None);
    }
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = file
        .file_name()
        .with_context(|| format!("admin_key_file {} names no file", file.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let token = token_generate();
    let write_temp = || -> std::io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        writeln!(out, "{token}")?;
        out.sync_all()
    };
    if let Err(e) = write_temp() {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("cannot write {}", temp.display()));
    }
    let created = store.write(|tx| {
        if api_key_count(tx)? > 0 {
            return Ok(false);
        }
        let key = NewKey {
            name: FIRST_KEY_NAME,
            scopes: &[Scope::Admin],
            ..Default::default()
        };
        api_key_insert(tx, &key, &token, opsqueue_shared::time::now())?;
        Ok(true)
    });
    match created {
        Ok(true) => {
            std::fs::rename(&temp, file).with_context(|| {
                format!(
                    "created the admin key {FIRST_KEY_NAME:?} but could not move its token to {}; \
                     revoke it with `opsqueue-api keys revoke {FIRST_KEY_NAME}` and create another",
                    file.display()
                )
            })?;
            tracing::info!(
                path = %file.display(),
                "no API key existed: created the admin key {FIRST_KEY_NAME:?} and wrote its token to {}",
                file.display()
            );
            Ok(Some(file.to_path_buf()))
        }
        Ok(false) => {
            let _ = std::fs::remove_file(&temp);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e).context("cannot store the first admin key")
        }
    }
}
