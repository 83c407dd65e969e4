//! The systemd family's name types: unit names and the allow/deny patterns
//! that decide which units are in reach, and the parsed pieces of a unit
//! spec (description, command line, environment, account names).

use serde::{Deserialize, Serialize};

use crate::names::{AbsolutePath, NameError, check_name};

/// Unit types a name may end with.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "target",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
];

/// Longest unit name systemd accepts (`UNIT_NAME_MAX` minus the NUL).
const MAX_UNIT_NAME: usize = 255;

/// A unit name such as `web.service` or `pb@site1.service`: letters, digits
/// and `._-@:`, a known type suffix (a name without one gets `.service`, as
/// systemctl does), at most one `@`. No backslash escapes, so units whose
/// names need them (most mounts and devices) cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(String);

crate::name_schema!(UnitName);

impl UnitName {
    pub const WHAT: &'static str = "unit name";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_name(Self::WHAT, value, MAX_UNIT_NAME, "._-@:")?;
        let refuse = |reason: &str| NameError {
            what: Self::WHAT,
            value: value.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if value.ends_with('.') {
            return Err(refuse("must not end with '.'"));
        }
        let has_type = value
            .rsplit_once('.')
            .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix));
        let name = if has_type {
            value.to_owned()
        } else {
            format!("{value}.service")
        };
        if name.len() > MAX_UNIT_NAME {
            return Err(refuse("must be at most 255 bytes"));
        }
        let (prefix, _) = name.rsplit_once('.').expect("a type suffix");
        if prefix.is_empty() {
            return Err(refuse("has no name before its type"));
        }
        if name.matches('@').count() > 1 || prefix.starts_with('@') {
            return Err(refuse("may hold one '@' (template@instance), not first"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rule as a JSON schema: `check_name`'s with `._-@:`, at most one
    /// `@`, and room for the `.service` a name without a type gets.
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        const PART: &str = "(?:\\.?[A-Za-z0-9_:-])*";
        crate::names::string_schema(
            "A unit name (`web`, `web.service`, `pb@site1.service`): letters, digits and \
             `._-@:`, a letter or digit first, no `..`, no `.` last, at most one `@`; without a type it \
             gets `.service`",
            format!("^[A-Za-z0-9]{PART}(?:\\.?@{PART})?$"),
            MAX_UNIT_NAME - ".service".len(),
        )
    }

    /// `service`, `timer`, …
    pub fn unit_type(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(_, t)| t)
    }

    /// `web@.service` (a template, which cannot run itself).
    pub fn is_template(&self) -> bool {
        self.0.contains("@.")
    }
}

crate::parsed_string!(UnitName);

impl std::fmt::Display for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pattern over unit names for `[systemd] allow` and `deny`: the unit
/// name characters plus `*` (any run) and `?` (one character), matched
/// against the whole name (`pb-*.service`, `web@*.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPattern(String);

impl UnitPattern {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError {
            what: "unit pattern",
            value: value.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if value.is_empty() || value.len() > MAX_UNIT_NAME {
            return Err(refuse("must be 1 to 255 bytes"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@:*?".contains(c))
        {
            return Err(refuse("allowed are letters, digits, \"._-@:\" and * ?"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn matches(&self, unit: &UnitName) -> bool {
        glob_match(self.0.as_bytes(), unit.as_str().as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*` and `?` over bytes, iteratively (backtracking to the last `*`).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which of `patterns` (as configured) matches `unit`, if any.
pub fn first_match<'a>(patterns: &'a [String], unit: &UnitName) -> Option<&'a str> {
    patterns
        .iter()
        .map(String::as_str)
        .find(|pattern| UnitPattern::parse(pattern).is_ok_and(|compiled| compiled.matches(unit)))
}

/// Text that goes on one line of a unit file: printable, no control
/// characters, no backslash (a line continuation), at most `max` bytes.
fn check_line_text(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let refuse = |reason: String| NameError {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.len() > max {
        return Err(refuse(format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(
            "must not contain control characters (newlines, NUL, …)".into(),
        ));
    }
    if value.contains('\\') {
        return Err(refuse("must not contain a backslash".into()));
    }
    Ok(())
}

/// A unit's `Description=`: one printable line, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);

impl Description {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Description {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        check_line_text("description", &value, 256)?;
        if value.trim().is_empty() {
            return Err(NameError {
                what: "description",
                value,
                reason: "must not be blank".into(),
            });
        }
        Ok(Self(value))
    }
}

impl From<Description> for String {
    fn from(d: Description) -> String {
        d.0
    }
}

/// The most arguments `exec_start` may have, and the longest one.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_LEN: usize = 4096;

/// `ExecStart=` as an argument vector: the program as an absolute path in
/// plain form, then arguments of any printable text (spaces, quotes, `$`,
/// `%` and `;` included: the renderer quotes them for systemd, and no shell
/// ever sees them). No control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ExecStart {
    program: AbsolutePath,
    args: Vec<String>,
}

impl ExecStart {
    pub fn program(&self) -> &AbsolutePath {
        &self.program
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }
}

impl TryFrom<Vec<String>> for ExecStart {
    type Error = NameError;

    fn try_from(argv: Vec<String>) -> Result<Self, NameError> {
        let refuse = |reason: String| NameError {
            what: "exec_start",
            value: format!("{:?}", argv.iter().take(3).collect::<Vec<_>>())
                .chars()
                .take(80)
                .collect(),
            reason,
        };
        if argv.len() > MAX_ARGS {
            return Err(refuse(format!("may have at most {MAX_ARGS} elements")));
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(refuse("must name a program".into()));
        };
        let program = AbsolutePath::parse(program)?;
        for arg in args {
            if arg.len() > MAX_ARG_LEN {
                return Err(refuse(format!(
                    "an argument must be at most {MAX_ARG_LEN} bytes"
                )));
            }
            if arg.chars().any(char::is_control) {
                return Err(refuse(
                    "an argument must not contain control characters (newlines, NUL, …)".into(),
                ));
            }
        }
        Ok(Self {
            program,
            args: args.to_vec(),
        })
    }
}

impl From<ExecStart> for Vec<String> {
    fn from(exec: ExecStart) -> Vec<String> {
        std::iter::once(String::from(exec.program))
            .chain(exec.args)
            .collect()
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        let valid = !value.is_empty()
            && value.len() <= 128
            && !value.starts_with(|c: char| c.is_ascii_digit())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(NameError {
                what: "environment variable name",
                value: value.chars().take(80).collect(),
                reason:
                    "must be letters, digits and '_', not starting with a digit, at most 128 bytes"
                        .into(),
            });
        }
        Ok(Self(value))
    }
}

impl From<EnvName> for String {
    fn from(name: EnvName) -> String {
        name.0
    }
}

/// An environment variable's value: printable, no control characters, at
/// most 4096 bytes (quoted by the renderer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvValue(String);

impl EnvValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvValue {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, NameError> {
        if value.len() > MAX_ARG_LEN || value.chars().any(char::is_control) {
            return Err(NameError {
                what: "environment value",
                value: value.chars().take(80).collect(),
                reason: format!("must be printable and at most {MAX_ARG_LEN} bytes"),
            });
        }
        Ok(Self(value))
    }
}

impl From<EnvValue> for String {
    fn from(value: EnvValue) -> String {
        value.0
    }
}

crate::name_type!(
    /// A user or group name for `User=` / `Group=`.
    AccountName, "user or group name", max = 32, extra = "_-"
);

/// `Type=` of a rendered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    Simple,
    /// Like simple, but start fails when the program cannot be executed.
    #[default]
    Exec,
    Notify,
    Oneshot,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Exec => "exec",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
        }
    }
}

/// `Restart=` of a rendered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnSuccess,
    #[default]
    OnFailure,
    OnAbnormal,
    OnWatchdog,
    OnAbort,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnSuccess => "on-success",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::OnAbnormal => "on-abnormal",
            RestartPolicy::OnWatchdog => "on-watchdog",
            RestartPolicy::OnAbort => "on-abort",
            RestartPolicy::Always => "always",
        }
    }
}

/// A sandboxing preset for a rendered service (the directives are listed in
/// the README and in the worker's renderer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hardening {
    /// No sandboxing directives.
    None,
    /// No privilege gain, private /tmp, read-only /usr /boot /etc, kernel
    /// modules and cgroups protected: fits almost any service.
    #[default]
    Basic,
    /// `basic` plus a read-only file system except the working directory,
    /// read-only homes, private devices, read-only kernel tunables, no new
    /// namespaces, no capabilities, a system-call filter and no W+X memory
    /// (breaks JIT runtimes such as node).
    Strict,
}
