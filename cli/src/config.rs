//! Where the API is and which key to send: each setting from the command
//! line (`--url`, `--token` or `--token-file`, `--ca-cert`), else the
//! environment (`OPSQUEUE_URL`, `OPSQUEUE_TOKEN`, `OPSQUEUE_CA_CERT`), else
//! the config file `~/.config/opsqueue/config.toml` (under
//! `$XDG_CONFIG_HOME` when that is set), else the API's own default address
//! and no key (the API then answers 401, and the CLI says how to log in).
//!
//! `opsqueue login` writes the config file: the directory `0700`, the file
//! `0600` (it holds the token), written to a temporary file in the same
//! directory and renamed over the old one, so a reader never sees half of
//! it and the token is never readable by others, not even for a moment.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::args::Global;
use crate::error::CliError;

/// Where the API listens when nothing says otherwise (its own default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The config file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A PEM file holding the certificate(s) to trust instead of the
    /// built-in roots (pins a self-signed control host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// What the client connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// The config file's path: `$XDG_CONFIG_HOME/opsqueue/config.toml`, else
/// `$HOME/.config/opsqueue/config.toml`.
pub fn config_path() -> Result<PathBuf, CliError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(CliError::usage(
                    "HOME is not set: cannot find ~/.config/opsqueue/config.toml",
                ));
            }
        },
    };
    Ok(base.join("opsqueue").join("config.toml"))
}

/// Reads the config file; a missing file is an empty config.
pub fn read_file(path: &Path) -> Result<FileConfig, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(CliError::usage(format!("{}: {e}", path.display()))),
    }
}

/// A token from a file: its content without surrounding whitespace.
pub fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--token-file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::usage(format!(
            "--token-file {}: the file is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The settings given on the command line or in the environment (not the
/// file): what `login` stores.
pub fn from_flags_and_env(global: &Global) -> Result<FileConfig, CliError> {
    let token = match (&global.token, &global.token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => env("OPSQUEUE_TOKEN"),
    };
    Ok(FileConfig {
        url: global.url.clone().or_else(|| env("OPSQUEUE_URL")),
        token,
        ca_cert: global
            .ca_cert
            .clone()
            .or_else(|| env("OPSQUEUE_CA_CERT").map(PathBuf::from)),
    })
}

impl Connection {
    /// Flags, else environment, else the config file, else defaults.
    pub fn resolve(global: &Global) -> Result<Self, CliError> {
        let given = from_flags_and_env(global)?;
        let file = if given.url.is_some() && given.token.is_some() && given.ca_cert.is_some() {
            FileConfig::default()
        } else {
            read_file(&config_path()?)?
        };
        Ok(Connection {
            url: given
                .url
                .or(file.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
            token: given.token.or(file.token),
            ca_cert: given.ca_cert.or(file.ca_cert),
        })
    }
}

/// Writes `config` to `path` with mode 0600 (its directory 0700 when
/// created), replacing the old file atomically.
pub fn write_file(path: &Path, config: &FileConfig) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::usage(format!("cannot write {}: {e}", path.display()));
    let dir = path
        .parent()
        .ok_or_else(|| CliError::usage(format!("{} has no directory", path.display())))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let text = toml::to_string(config).expect("a config always serializes");
    let temp = dir.join(format!(".config.toml.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The umask cannot widen 0600, but say it anyway: the file holds a key.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(b"# Written by `opsqueue login`. Holds an API key: keep it 0600.\n")?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.toml");
        let config = FileConfig {
            url: Some("https://ops.example.com".into()),
            token: Some("oq_secret".into()),
            ca_cert: Some("/etc/opsqueue/ca.pem".into()),
        };
        write_file(&path, &config).unwrap();
        assert_eq!(read_file(&path).unwrap(), config);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        std::fs::write(&path, "url = \"x\"\ntokn = \"typo\"\n").unwrap();
        assert!(read_file(&path).is_err());
    }

    #[test]
    fn a_missing_file_is_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_file(&dir.path().join("none.toml")).unwrap(),
            FileConfig::default()
        );
    }
}
