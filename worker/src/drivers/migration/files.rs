//! The state directory on disk, without the network: staging a copy of it
//! (SQLite databases through `VACUUM INTO`, a consistent snapshot even
//! while the app writes), packing the staged copy as a tar archive with its
//! sha256 manifest, and unpacking an archive checked against a manifest.
//! Everything here is blocking; the driver runs it on the blocking pool.
//!
//! Invariants:
//! - Only directories and regular files are copied; a symlink, device,
//!   fifo or socket in the state directory is refused (it would point
//!   outside, or mean nothing on another host).
//! - A database's `-wal`, `-shm` and `-journal` files are never copied:
//!   the snapshot holds what they add.
//! - An archive is unpacked into a fresh directory beside the destination
//!   (entries that are not plain directories or files, or that leave it,
//!   are refused by `tar`'s `unpack_in` and by the type check), verified
//!   file by file against the manifest (no file missing, none extra, each
//!   size and sha256), and only then renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use opsqueue_shared::store::rusqlite;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The files SQLite keeps beside a database.
const SQLITE_SIDE_FILES: &[&str] = &["-wal", "-shm", "-journal"];
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// One file of a manifest: its path inside the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What an archive holds: its directories and files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub dirs: Vec<String>,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Staged {
    pub files: u64,
    pub bytes: u64,
    /// Files copied this time (unchanged ones are kept from the last copy).
    pub copied: u64,
    pub databases: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Relative path → (size, mtime in ns) as copied.
    files: BTreeMap<String, (u64, i128)>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut file = fs::File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| io("cannot read", path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(opsqueue_shared::operation::hex(&hasher.finalize()))
}

fn is_sqlite(path: &Path) -> bool {
    let mut header = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == SQLITE_MAGIC)
}

/// Whether `path` is a side file of a database beside it.
fn is_side_file(path: &Path) -> bool {
    let text = path.to_string_lossy();
    SQLITE_SIDE_FILES.iter().any(|suffix| {
        text.strip_suffix(suffix)
            .is_some_and(|db| is_sqlite(Path::new(db)))
    })
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Every directory and regular file under `root`, as relative paths
/// (sorted); anything else is refused.
fn walk(root: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let entries = fs::read_dir(&dir).map_err(|e| io("cannot list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("cannot list", &dir, e))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| format!("{} holds a name that is not UTF-8", dir.display()))?;
            let path = relative.join(name);
            let text = path.to_string_lossy().into_owned();
            let kind = entry
                .file_type()
                .map_err(|e| io("cannot read", &entry.path(), e))?;
            if kind.is_dir() {
                dirs.push(text);
                pending.push(path);
            } else if kind.is_file() {
                files.push(text);
            } else {
                return Err(format!(
                    "{} is not a directory or a regular file (a symlink or special file): \
                     the state directory must hold only those",
                    root.join(&path).display()
                ));
            }
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// The size and file count of a state directory.
pub fn measure(root: &Path) -> Result<(u64, u64), String> {
    let (_, files) = walk(root)?;
    let mut bytes = 0;
    for file in &files {
        let path = root.join(file);
        bytes += fs::metadata(&path)
            .map_err(|e| io("cannot read", &path, e))?
            .len();
    }
    Ok((bytes, files.len() as u64))
}

/// Brings `stage` up to date with `state`: new or changed files copied
/// (databases always, through `VACUUM INTO`), files gone removed.
pub fn stage(state: &Path, stage: &Path) -> Result<Staged, String> {
    fs::create_dir_all(stage).map_err(|e| io("cannot create", stage, e))?;
    let index_path = stage.with_extension("index.json");
    let mut index: Index = fs::read(&index_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let (dirs, files) = walk(state)?;
    for dir in &dirs {
        let path = stage.join(dir);
        fs::create_dir_all(&path).map_err(|e| io("cannot create", &path, e))?;
    }
    let mut staged = Staged::default();
    let mut kept = BTreeSet::new();
    for file in &files {
        let source = state.join(file);
        if is_side_file(&source) {
            continue;
        }
        let copy = stage.join(file);
        let meta = fs::metadata(&source).map_err(|e| io("cannot read", &source, e))?;
        let seen = (meta.len(), mtime_ns(&meta));
        kept.insert(file.clone());
        staged.files += 1;
        if is_sqlite(&source) {
            snapshot_database(&source, &copy)?;
            staged.databases += 1;
            staged.copied += 1;
        } else if index.files.get(file) != Some(&seen) || !copy.exists() {
            let partial = copy.with_extension("opsqueue-partial");
            fs::copy(&source, &partial).map_err(|e| io("cannot copy", &source, e))?;
            fs::rename(&partial, &copy).map_err(|e| io("cannot move", &partial, e))?;
            staged.copied += 1;
        }
        index.files.insert(file.clone(), seen);
        staged.bytes += fs::metadata(&copy)
            .map_err(|e| io("cannot read", &copy, e))?
            .len();
    }
    // What the state no longer holds goes from the stage too.
    let (stage_dirs, stage_files) = walk(stage)?;
    for file in stage_files.iter().filter(|f| !kept.contains(*f)) {
        let path = stage.join(file);
        fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
        index.files.remove(file);
    }
    let wanted: BTreeSet<&String> = dirs.iter().collect();
    for dir in stage_dirs.iter().rev().filter(|d| !wanted.contains(d)) {
        let path = stage.join(dir);
        fs::remove_dir_all(&path).map_err(|e| io("cannot remove", &path, e))?;
    }
    let json = serde_json::to_vec(&index).expect("an index serializes");
    fs::write(&index_path, json).map_err(|e| io("cannot write", &index_path, e))?;
    Ok(staged)
}

/// A consistent copy of the database at `source` (what a transaction
/// sees, whatever the app writes meanwhile).
fn snapshot_database(source: &Path, copy: &Path) -> Result<(), String> {
    let fail =
        |e: rusqlite::Error| format!("cannot snapshot the database {}: {e}", source.display());
    let _ = fs::remove_file(copy);
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(fail)?;
    conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
        .map_err(fail)?;
    Ok(())
}

/// Packs `stage` into the tar archive `archive`: its manifest.
pub fn pack(stage: &Path, archive: &Path) -> Result<Manifest, String> {
    let (dirs, files) = walk(stage)?;
    let partial = archive.with_extension("opsqueue-partial");
    let out = fs::File::create(&partial).map_err(|e| io("cannot create", &partial, e))?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut manifest = Manifest {
        dirs: dirs.clone(),
        files: Vec::with_capacity(files.len()),
    };
    for dir in &dirs {
        builder
            .append_dir(dir, stage.join(dir))
            .map_err(|e| io("cannot pack", &stage.join(dir), e))?;
    }
    for file in &files {
        let path = stage.join(file);
        let size = fs::metadata(&path)
            .map_err(|e| io("cannot read", &path, e))?
            .len();
        manifest.files.push(ManifestFile {
            path: file.clone(),
            size,
            sha256: sha256_file(&path)?,
        });
        builder
            .append_path_with_name(&path, file)
            .map_err(|e| io("cannot pack", &path, e))?;
    }
    let out = builder
        .into_inner()
        .map_err(|e| io("cannot finish", &partial, e))?;
    out.sync_all().map_err(|e| io("cannot sync", &partial, e))?;
    fs::rename(&partial, archive).map_err(|e| io("cannot move", &partial, e))?;
    Ok(manifest)
}

/// Whether `dir` holds exactly what `manifest` says; the first difference.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    let (dirs, files) = walk(dir)?;
    if dirs != manifest.dirs {
        return Err(format!(
            "the directories differ from the source's manifest: {dirs:?} against {:?}",
            manifest.dirs
        ));
    }
    let listed: Vec<&String> = manifest.files.iter().map(|f| &f.path).collect();
    if files.iter().collect::<Vec<_>>() != listed {
        return Err("the files differ from the source's manifest".into());
    }
    for file in &manifest.files {
        let path = dir.join(&file.path);
        let size = fs::metadata(&path)
            .map_err(|e| io("cannot read", &path, e))?
            .len();
        if size != file.size || sha256_file(&path)? != file.sha256 {
            return Err(format!(
                "{} differs from the source's manifest (size or sha256)",
                file.path
            ));
        }
    }
    Ok(())
}

/// Unpacks `archive` into the new directory `into` (which must not exist)
/// and verifies it against `manifest`.
pub fn unpack(archive: &Path, into: &Path, manifest: &Manifest) -> Result<(), String> {
    fs::create_dir(into).map_err(|e| io("cannot create", into, e))?;
    let file = fs::File::open(archive).map_err(|e| io("cannot open", archive, e))?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(false);
    let entries = tar.entries().map_err(|e| io("cannot read", archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io("cannot read", archive, e))?;
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(|e| io("cannot read", archive, e))?
            .into_owned();
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        if !(kind.is_dir() || kind.is_file()) || !plain {
            return Err(format!(
                "the archive holds {} ({kind:?}): only plain directories and files are restored",
                path.display()
            ));
        }
        let unpacked = entry
            .unpack_in(into)
            .map_err(|e| io("cannot unpack into", into, e))?;
        if !unpacked {
            return Err(format!(
                "the archive's entry {} leaves the directory",
                path.display()
            ));
        }
    }
    verify(into, manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_copy_packs_and_unpacks_to_the_same_files_and_a_live_database_stays_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir_all(state.join("uploads/a")).unwrap();
        fs::write(state.join("uploads/a/one.txt"), b"one").unwrap();
        let db = state.join("app.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        let stage_dir = tmp.path().join("stage");
        let first = stage(&state, &stage_dir).unwrap();
        assert_eq!((first.files, first.databases), (2, 1));
        // Changes after the warm copy reach the final one; a file removed goes.
        conn.execute("INSERT INTO t VALUES (3)", []).unwrap();
        fs::write(state.join("new.txt"), b"new").unwrap();
        fs::remove_file(state.join("uploads/a/one.txt")).unwrap();
        let second = stage(&state, &stage_dir).unwrap();
        assert_eq!(second.files, 2, "{second:?}");
        let archive = tmp.path().join("state.tar");
        let manifest = pack(&stage_dir, &archive).unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["app.db", "new.txt"]);
        let restored = tmp.path().join("restored");
        unpack(&archive, &restored, &manifest).unwrap();
        let copy = rusqlite::Connection::open(restored.join("app.db")).unwrap();
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        // A manifest that does not match is refused.
        let mut wrong = manifest.clone();
        wrong.files[1].sha256 = "0".repeat(64);
        assert!(verify(&restored, &wrong).is_err());
    }

    #[test]
    fn a_symlink_in_the_state_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", state.join("passwd")).unwrap();
        let refused = stage(&state, &tmp.path().join("stage")).unwrap_err();
        assert!(refused.contains("symlink"), "{refused}");
    }
}
