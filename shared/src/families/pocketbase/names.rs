//! The pocketbase family's name types: a service's name (and the unit, the
//! system user and the directories derived from it), a PocketBase version,
//! a superuser's e-mail and password, a sha256 digest. Each is parsed once,
//! at the edge; the worker only ever sees parsed values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::families::systemd::UnitName;
use crate::names::NameError;

/// The most bytes a service name may have: `pb-` plus the name must fit a
/// system user name (32 bytes), with room to spare.
pub const MAX_SERVICE_NAME: usize = 28;

/// A service's name, `my-app`: lower-case letters, digits and `-`, starting
/// with a letter, not ending with `-`, at most [`MAX_SERVICE_NAME`] bytes.
/// It names the unit (`pocketbase-my-app.service`), the system user
/// (`pb-my-app`) and the directory (`{base_dir}/my-app`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub const WHAT: &'static str = "service name";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        if value.is_empty() || value.len() > MAX_SERVICE_NAME {
            return Err(refuse("must be 1 to 28 bytes"));
        }
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(refuse("must start with a lower-case letter"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(refuse("allowed are lower-case letters, digits and '-'"));
        }
        if value.ends_with('-') {
            return Err(refuse("must not end with '-'"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The rule as a JSON schema (what `parse` refuses, stated).
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "A service name (`my-app`): lower-case letters, digits and `-`, a letter first, \
             no `-` last",
            "^[a-z](?:[a-z0-9-]*[a-z0-9])?$".to_owned(),
            MAX_SERVICE_NAME,
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `pocketbase-<name>.service`.
    pub fn unit(&self) -> UnitName {
        UnitName::parse(&format!("pocketbase-{}.service", self.0))
            .expect("a service name makes a unit name")
    }

    /// The system user the service runs as: `pb-<name>`.
    pub fn user(&self) -> String {
        format!("pb-{}", self.0)
    }

    /// `{base_dir}/<name>`: the service's directory.
    pub fn home(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.0)
    }
}

crate::parsed_string!(ServiceName);

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The paths of one service, from `[pocketbase] base_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePaths {
    /// `{base_dir}/<name>`: root-owned, 0755.
    pub home: PathBuf,
    /// `{home}/pocketbase`: the binary, root-owned, 0755.
    pub binary: PathBuf,
    /// `{home}/pb_data`: owned by the service user, 0750; the only
    /// directory the unit may write.
    pub data: PathBuf,
    /// `{home}/service.env`: the service's environment, root-owned, 0600.
    pub env_file: PathBuf,
    /// `{home}/.backup`: the copy an upgrade makes first.
    pub backup: PathBuf,
}

impl ServicePaths {
    pub fn new(base_dir: &Path, name: &ServiceName) -> Self {
        let home = name.home(base_dir);
        Self {
            binary: home.join("pocketbase"),
            data: home.join("pb_data"),
            env_file: home.join("service.env"),
            backup: home.join(".backup"),
            home,
        }
    }
}

/// A PocketBase version as the cache names it, `0.40.6` or `0.40.6-rc1`:
/// starts with a digit; digits, letters, `.` and `-`; at most 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    pub const WHAT: &'static str = "version";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        if value.is_empty() || value.len() > 32 {
            return Err(refuse("must be 1 to 32 bytes"));
        }
        if !value.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(refuse("must start with a digit (0.40.6)"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(refuse("allowed are letters, digits, '.' and '-'"));
        }
        if value.contains("..") || value.ends_with('.') {
            return Err(refuse("must not hold \"..\" nor end with '.'"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{versions_dir}/<version>/pocketbase`.
    pub fn binary(&self, versions_dir: &Path) -> PathBuf {
        versions_dir.join(&self.0).join("pocketbase")
    }
}

crate::parsed_string!(Version);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A superuser's e-mail address, `admin@example.com`: one `@`, a local part
/// of letters, digits and `._%+-` (not starting with one of those), a
/// domain of DNS labels; at most 254 bytes. It goes into PocketBase's
/// argument vector, so nothing else is let through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub const WHAT: &'static str = "e-mail address";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        if value.len() > 254 {
            return Err(refuse("must be at most 254 bytes"));
        }
        let (local, domain) = value
            .split_once('@')
            .ok_or_else(|| refuse("must be local@domain"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(refuse("the part before '@' must be 1 to 64 bytes"));
        }
        if !local.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        {
            return Err(refuse(
                "the part before '@' may hold letters, digits and \"._%+-\", starting with a letter or digit",
            ));
        }
        crate::names::Domain::parse(domain)
            .ok()
            .filter(|d| d.as_str().contains('.'))
            .ok_or_else(|| refuse("the part after '@' must be a domain with a dot"))?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::parsed_string!(Email);

/// The fewest characters accepted for a superuser password.
pub const MIN_PASSWORD: usize = 8;

/// A superuser's password: [`MIN_PASSWORD`] to 72 printable characters.
/// A secret: stored apart, shown as `***`, redacted from every log line.
/// Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Password(String);

impl Password {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let count = value.chars().count();
        if !(MIN_PASSWORD..=72).contains(&count) || value.chars().any(char::is_control) {
            return Err(NameError::new(
                "password",
                "***",
                format!("must be {MIN_PASSWORD} to 72 printable characters"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret itself: only for the command that needs it (and its
    /// redaction list).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

crate::parsed_string!(Password);

/// The value of one of a service's environment variables: printable, at
/// most 4096 bytes. A secret: a refusal never repeats it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretValue(String);

impl SecretValue {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(NameError::new(
                "environment value",
                "***",
                "must be printable (no newlines or other control characters) and at most 4096 bytes",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

crate::parsed_string!(SecretValue);

/// A sha256 digest: 64 hexadecimal digits, kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NameError::new(
                "sha256",
                value,
                "must be 64 hexadecimal digits",
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::parsed_string!(Sha256Hex);

/// Where a version's binary comes from: an `https://` URL (a release
/// archive `.zip`, or the binary itself), or a path on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpsUrl(String);

impl HttpsUrl {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("url", value, reason);
        let rest = value
            .strip_prefix("https://")
            .ok_or_else(|| refuse("must be an https:// URL (downloads are never in clear text)"))?;
        if rest.is_empty() || value.len() > 2048 {
            return Err(refuse("must name a host and be at most 2048 bytes"));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(refuse("must not hold spaces or control characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::parsed_string!(HttpsUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_names_its_unit_user_and_directory_and_refuses_the_rest() {
        let name = ServiceName::parse("my-app2").unwrap();
        assert_eq!(name.unit().as_str(), "pocketbase-my-app2.service");
        assert_eq!(name.user(), "pb-my-app2");
        let paths = ServicePaths::new(Path::new("/opt/pocketbase"), &name);
        assert_eq!(paths.data, Path::new("/opt/pocketbase/my-app2/pb_data"));
        for bad in [
            "",
            "My-App",
            "-app",
            "app-",
            "1app",
            "a_b",
            "a.b",
            "a b",
            "a;b",
            "../x",
            "a/b",
            "ä",
            "a\nb",
            "abcdefghijklmnopqrstuvwxyz123",
        ] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn versions_emails_passwords_and_digests_refuse_what_would_escape() {
        assert!(Version::parse("0.40.6").is_ok());
        assert!(Version::parse("0.40.6-rc1").is_ok());
        for bad in [
            "", "v0.40", "0..1", "0.40/..", "0.40 ", "0.4$(x)", "0.", "-1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Email::parse("admin@example.com").is_ok());
        for bad in [
            "admin",
            "@example.com",
            "a@b",
            "-x@example.com",
            "a b@example.com",
            "a@ex ample.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Password::parse("correct horse").is_ok());
        let short = Password::parse("short").unwrap_err();
        assert!(!short.to_string().contains("short"), "{short}");
        assert_eq!(
            format!("{:?}", Password::parse("correct horse").unwrap()),
            "Password(***)"
        );
        assert!(Sha256Hex::parse(&"A".repeat(64)).is_ok());
        assert!(Sha256Hex::parse("abc").is_err());
        assert!(HttpsUrl::parse("https://github.com/pocketbase/x.zip").is_ok());
        assert!(HttpsUrl::parse("http://github.com/x.zip").is_err());
        assert!(HttpsUrl::parse("https://a b").is_err());
    }
}
