//! The file system work of the pocketbase driver, as plain functions over
//! paths: the service directory's ownership marker, recursive copies that
//! keep modes and owners, atomic file writes, the environment file, and the
//! service users (looked up in `[pocketbase] passwd_file`).
//!
//! Invariants: nothing here follows a caller's string (every path is built
//! from parsed names under configured directories); a file that must never
//! be seen half written is written to a temporary name, synced and renamed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use opsqueue_shared::families::pocketbase::SecretValue;
use opsqueue_shared::families::systemd::EnvName;
use serde::{Deserialize, Serialize};

/// The file in a service's directory saying which operation created it
/// (so a re-run of that operation knows the directory is its own) and
/// whether it also created the service user.
pub const MARKER: &str = ".opsqueue";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub operation: String,
    pub user_created: bool,
    /// The directories above the service's own that its create made
    /// (`base_dir`, and its parents that were missing), innermost first:
    /// removed with the service when they are empty again.
    #[serde(default)]
    pub dirs_created: Vec<PathBuf>,
}

/// Creates `dir` and the parents it lacks; the ones it made, innermost
/// first.
pub fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir)?;
    Ok(missing)
}

/// Removes each of `dirs` (innermost first) while it is empty; stops at the
/// first that is not (something else lives there now).
pub fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        if fs::remove_dir(dir).is_err() && dir.exists() {
            return;
        }
    }
}

pub fn read_marker(home: &Path) -> Option<Marker> {
    let text = fs::read_to_string(home.join(MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_marker(home: &Path, marker: &Marker) -> std::io::Result<()> {
    write_atomically(
        &home.join(MARKER),
        serde_json::to_string(marker)
            .expect("a marker serializes")
            .as_bytes(),
        0o600,
    )
}

/// Writes `bytes` to `path` through a temporary file beside it (synced,
/// then renamed), with `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.opsqueue-tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// Copies `from` to `to` through a temporary file (synced, renamed), mode
/// 0755: a binary that is never seen half copied.
pub fn install_binary(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = fs::read(from)?;
    write_atomically(to, &bytes, 0o755)
}

/// Whether two files hold the same bytes (false when one is missing).
pub fn same_content(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A systemd `EnvironmentFile=`: one `NAME="value"` per line, `\` and `"`
/// escaped (the parser refused control characters, so no value ends a
/// line).
pub fn environment_file(env: &BTreeMap<EnvName, SecretValue>) -> String {
    let mut text = String::from("# Written by opsqueue (pocketbase.home.create).\n");
    for (name, value) in env {
        let escaped = value.expose().replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str(&format!("{}=\"{escaped}\"\n", name.as_str()));
    }
    text
}

/// Copies a directory tree, keeping each entry's mode and owner (symlinks
/// as symlinks).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else {
        fs::copy(from, to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

/// Gives a whole tree to `uid:gid` (symlinks themselves, not their targets).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Removes a file or a tree; absent is fine.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A user's uid and gid as `passwd_file` lists them, if it does.
pub fn lookup_user(passwd_file: &Path, user: &str) -> std::io::Result<Option<(u32, u32)>> {
    let text = match fs::read_to_string(passwd_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next() != Some(user) {
            return None;
        }
        let _password = fields.next();
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    }))
}

/// Whether the directory holds nothing.
pub fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_file_quotes_each_value_for_systemd() {
        let mut env = BTreeMap::new();
        env.insert(
            EnvName::try_from("B".to_owned()).unwrap(),
            SecretValue::parse(r#"x "y" \z $HOME"#).unwrap(),
        );
        env.insert(
            EnvName::try_from("A".to_owned()).unwrap(),
            SecretValue::parse("plain").unwrap(),
        );
        let text = environment_file(&env);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines, ["A=\"plain\"", r#"B="x \"y\" \\z $HOME""#]);
    }

    #[test]
    fn a_copied_tree_keeps_modes_and_users_are_read_from_the_passwd_file() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("data.db"), "rows").unwrap();
        fs::set_permissions(from.join("data.db"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o750)).unwrap();
        copy_tree(&from, &dir.path().join("to")).unwrap();
        let copied = dir.path().join("to/data.db");
        assert_eq!(fs::read_to_string(&copied).unwrap(), "rows");
        assert_eq!(
            fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::metadata(dir.path().join("to"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        let passwd = dir.path().join("passwd");
        fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\npb-app:x:999:998::/opt/pb/app:/usr/sbin/nologin\n",
        )
        .unwrap();
        assert_eq!(lookup_user(&passwd, "pb-app").unwrap(), Some((999, 998)));
        assert_eq!(lookup_user(&passwd, "pb-ap").unwrap(), None);
        assert_eq!(lookup_user(&dir.path().join("none"), "x").unwrap(), None);
    }
}
