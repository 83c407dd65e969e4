//! Newtypes for every name a caller gives us: the only way in is `parse`,
//! so code that holds one knows it is safe to put in a SQL row, a log line or
//! a program's argument vector.
//!
//! The shared rule: not empty, at most `max` bytes, ASCII letters and digits
//! plus a short list of punctuation, starting with a letter or digit (so it
//! can never look like an option such as `-x`), and never containing `..`.
//! Shell metacharacters, whitespace, newlines and NUL are never allowed.

/// Why a name was refused; `what` says which kind of name it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl NameError {
    /// A refusal of `value` (its first 80 characters are kept).
    pub fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            value: value.chars().take(80).collect(),
            reason: reason.into(),
        }
    }
}

/// Checks `value` against the shared rule with `extra` allowed punctuation.
pub fn check_name(
    what: &'static str,
    value: &str,
    max: usize,
    extra: &str,
) -> Result<(), NameError> {
    let refuse = |reason: String| NameError::new(what, value, reason);
    if value.is_empty() {
        return Err(refuse("must not be empty".into()));
    }
    if value.len() > max {
        return Err(refuse(format!("must be at most {max} bytes")));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(refuse("must start with a letter or a digit".into()));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        let allowed = if extra.is_empty() {
            "letters and digits".to_owned()
        } else {
            format!("letters, digits and {extra:?}")
        };
        return Err(refuse(format!("contains {bad:?}; allowed are {allowed}")));
    }
    if value.contains("..") {
        return Err(refuse("must not contain \"..\"".into()));
    }
    Ok(())
}

/// The JSON Schema (ECMA 262) `pattern` of [`check_name`]'s rule with
/// `extra` punctuation: a letter or digit first, then letters, digits and
/// `extra`, never two dots in a row. The OpenAPI document states it, so a
/// name the document allows is one `check_name` accepts.
pub fn name_pattern(extra: &str) -> String {
    let others: String = extra
        .chars()
        .filter(|c| *c != '.')
        .map(|c| match c {
            '\\' | ']' | '[' | '^' | '-' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect();
    if extra.contains('.') {
        format!("^[A-Za-z0-9](?:\\.?[A-Za-z0-9{others}])*\\.?$")
    } else {
        format!("^[A-Za-z0-9][A-Za-z0-9{others}]*$")
    }
}

/// A string schema: `pattern`, 1 to `max` bytes (all ASCII: characters).
pub fn string_schema(
    description: &str,
    pattern: String,
    max: usize,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max))
        .into()
}

/// A schema built inline (every `schema()` here is), for the places that
/// take a `Schema` rather than a reference.
pub fn inline(
    schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
) -> utoipa::openapi::schema::Schema {
    match schema {
        utoipa::openapi::RefOr::T(schema) => schema,
        utoipa::openapi::RefOr::Ref(_) => unreachable!("name schemas are built inline"),
    }
}

/// `schema`, or `null` (an `Option` field serde also takes as `null`).
pub fn nullable(
    schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{Schema, SchemaType};
    use utoipa::openapi::{RefOr, Type};
    match schema {
        RefOr::T(Schema::Object(mut object)) => {
            let types = match object.schema_type {
                SchemaType::Type(t) => vec![t, Type::Null],
                SchemaType::Array(mut types) => {
                    types.push(Type::Null);
                    types
                }
                SchemaType::AnyValue => return RefOr::T(Schema::Object(object)),
            };
            object.schema_type = SchemaType::Array(types);
            RefOr::T(Schema::Object(object))
        }
        other => other,
    }
}

/// Implements `utoipa::ToSchema` for a name type from its `schema()`.
#[macro_export]
macro_rules! name_schema {
    ($name:ty) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$name>::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// `TryFrom<String>` through the type's `parse(&str)` and `From<Type> for
/// String`: what a string newtype needs to (de)serialize as its text with
/// `#[serde(try_from = "String", into = "String")]`, refusing bad input while
/// deserializing. The error is `parse`'s ([`NameError`] unless named).
#[macro_export]
macro_rules! parsed_string {
    ($name:ident) => {
        $crate::parsed_string!($name, $crate::names::NameError);
    };
    ($name:ident, $error:ty) => {
        impl TryFrom<String> for $name {
            type Error = $error;

            fn try_from(value: String) -> Result<Self, $error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// Declares a string newtype checked by [`check_name`]; it (de)serializes as
/// a plain string and refuses bad input while deserializing.
#[macro_export]
macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal, max = $max:literal, extra = $extra:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const WHAT: &'static str = $what;

            pub const MAX: usize = $max;

            pub fn parse(value: &str) -> Result<Self, $crate::names::NameError> {
                $crate::names::check_name($what, value, $max, $extra)?;
                Ok(Self(value.to_owned()))
            }

            /// The rule as a JSON schema (for the OpenAPI document).
            pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::names::string_schema(
                    concat!("A ", $what, ": letters, digits and `", $extra, "`, a letter or digit first, no `..`"),
                    $crate::names::name_pattern($extra),
                    $max,
                )
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        $crate::parsed_string!($name);

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        $crate::name_schema!($name);
    };
}

name_type!(
    /// Who asked for an operation (`api`, `ui`, `cron`, `cli`, …) or which
    /// host's worker runs it (`local`, `web-2`, …): a short label.
    Label, "label", max = 64, extra = "._-"
);

impl Label {
    pub fn api() -> Self {
        Self("api".into())
    }
    pub fn cron() -> Self {
        Self("cron".into())
    }
    pub fn local() -> Self {
        Self("local".into())
    }
}

/// A DNS name such as `example.com` or `www.example.com` (also a single
/// label such as `localhost`): RFC 1123 labels of letters, digits and
/// hyphens, 1 to 63 bytes each, not starting or ending with a hyphen; at most
/// 253 bytes in all. Kept in lower case.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub const WHAT: &'static str = "domain";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        if value.is_empty() {
            return Err(refuse("must not be empty"));
        }
        if value.len() > 253 {
            return Err(refuse("must be at most 253 bytes"));
        }
        for label in value.split('.') {
            if label.is_empty() {
                return Err(refuse("has an empty label (two dots, or a dot at an end)"));
            }
            if label.len() > 63 {
                return Err(refuse("has a label over 63 bytes"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(refuse("labels may hold only letters, digits and '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(refuse("a label must not start or end with '-'"));
            }
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        const LABEL: &str = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
        string_schema(
            "A DNS name: labels of letters, digits and `-` (1 to 63 bytes, no `-` at either end) \
             joined by dots; kept in lower case",
            format!("^{LABEL}(?:\\.{LABEL})*$"),
            253,
        )
    }
}

crate::name_schema!(Domain);

crate::parsed_string!(Domain);

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP port, 1 to 65535.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u16")]
pub struct Port(u16);

impl Port {
    pub fn parse(value: u32) -> Result<Self, NameError> {
        match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(Self(port)),
            _ => Err(NameError::new(
                "port",
                &value.to_string(),
                "must be between 1 and 65535",
            )),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .description(Some("A TCP port"))
            .minimum(Some(1))
            .maximum(Some(65535))
            .into()
    }
}

crate::name_schema!(Port);

impl TryFrom<u32> for Port {
    type Error = NameError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> u16 {
        port.0
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An absolute path on the host, in its plain form: starts with `/`, no
/// empty, `.` or `..` components (so no `..` anywhere), no trailing `/`, at
/// most 1024 bytes, and only letters, digits and `/._-+@,=:`; so no spaces,
/// shell metacharacters, newlines or NUL. Whether it lies inside a base
/// directory is for the caller to check ([`AbsolutePath::is_inside`]), and
/// symlinks are for the worker to resolve.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AbsolutePath(String);

impl AbsolutePath {
    pub const WHAT: &'static str = "path";
    pub const MAX: usize = 1024;
    const PUNCTUATION: &'static str = "/._-+@,=:";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: String| NameError::new(Self::WHAT, value, reason);
        if !value.starts_with('/') {
            return Err(refuse("must be absolute (start with '/')".into()));
        }
        if value.len() > Self::MAX {
            return Err(refuse(format!("must be at most {} bytes", Self::MAX)));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || Self::PUNCTUATION.contains(*c)))
        {
            return Err(refuse(format!(
                "contains {bad:?}; allowed are letters, digits and {:?}",
                Self::PUNCTUATION
            )));
        }
        if value.contains("..") {
            return Err(refuse("must not contain \"..\"".into()));
        }
        if value != "/" && value[1..].split('/').any(|c| c.is_empty() || c == ".") {
            return Err(refuse(
                "must be in plain form: no \"//\", no \"/./\", no trailing '/'".into(),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }

    /// The rule as a regular expression, without anchors.
    pub fn pattern() -> String {
        // A component: letters, digits and the punctuation, never `..`
        // (so never `.` or `..` alone either, nor empty).
        const COMPONENT: &str = "(?:\\.?[A-Za-z0-9_+@,=:-])+\\.?";
        format!("(?:/|(?:/{COMPONENT})+)")
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "An absolute path in plain form: `/` then components of letters, digits and \
             `._-+@,=:` (no empty, `.` or `..` component, no trailing `/`)",
            format!("^{}$", Self::pattern()),
            Self::MAX,
        )
    }

    /// Whether this path is `base` itself or lies below it (by components;
    /// `/srv/app2` is not inside `/srv/app`).
    pub fn is_inside(&self, base: &std::path::Path) -> bool {
        self.as_path().starts_with(base)
    }
}

crate::parsed_string!(AbsolutePath);

impl AsRef<std::path::Path> for AbsolutePath {
    fn as_ref(&self) -> &std::path::Path {
        self.as_path()
    }
}

impl std::fmt::Display for AbsolutePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_refuses_what_a_shell_or_a_program_would_misread() {
        for bad in [
            "", "-x", "--all", "a b", "a;b", "a|b", "a$b", "a`b`", "a\nb", "a\0b", "../etc",
            "a..b", "a/b", "ä", "'quoted'", "a&b", "a>b",
        ] {
            assert!(Label::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Label::parse(&"x".repeat(65)).is_err());
        for good in ["api", "ui", "web-2", "host_1.example", "9lives"] {
            assert_eq!(Label::parse(good).unwrap().as_str(), good);
        }
    }

    /// What the OpenAPI document says of a name is what the parser does.
    #[test]
    fn a_name_schema_states_exactly_the_parsers_rule() {
        let pattern = name_pattern("._-");
        let regex = |text: &str| regex_lite::Regex::new(&pattern).unwrap().is_match(text);
        for text in [
            "", "-x", "a b", "a;b", "a..b", "..", ".a", "a/b", "ä", "a..", "web-1", "a.b.c", "a.",
            "9lives", "x_y", "a-", "a.-b", "a_.b",
        ] {
            assert_eq!(
                regex(text),
                check_name("label", text, 64, "._-").is_ok(),
                "{text:?} against {pattern}"
            );
        }
        let no_dot = name_pattern("-");
        let regex = regex_lite::Regex::new(&no_dot).unwrap();
        assert!(regex.is_match("pve-1") && !regex.is_match("pve.1") && !regex.is_match("-p"));
    }

    #[test]
    fn a_label_is_checked_while_deserializing() {
        assert!(serde_json::from_str::<Label>("\"-rf\"").is_err());
        assert_eq!(
            serde_json::from_str::<Label>("\"ui\"").unwrap().as_str(),
            "ui"
        );
    }
    #[test]
    fn a_domain_is_a_dns_name_in_lower_case() {
        for bad in [
            "",
            "-x.com",
            "a..b",
            ".com",
            "com.",
            "a b.com",
            "a;b.com",
            "a_b.com",
            "ex\nample.com",
            "a\0b",
            "ä.com",
            "a/b",
            "x-.com",
            "*.example.com",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Domain::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(Domain::parse(&["abc"; 64].join(".")).is_err());
        assert_eq!(
            Domain::parse("WWW.Example.com").unwrap().as_str(),
            "www.example.com"
        );
        for good in ["localhost", "example.com", "a-1.b2.example.io", "1e100.net"] {
            assert!(Domain::parse(good).is_ok(), "{good:?} was refused");
        }
        assert!(serde_json::from_str::<Domain>("\"-rf\"").is_err());
    }

    #[test]
    fn a_port_is_between_1_and_65535() {
        assert!(Port::parse(0).is_err());
        assert!(Port::parse(65536).is_err());
        assert_eq!(Port::parse(8080).unwrap().get(), 8080);
        assert!(serde_json::from_str::<Port>("70000").is_err());
        assert!(serde_json::from_str::<Port>("\"80\"").is_err());
        assert_eq!(serde_json::from_str::<Port>("443").unwrap().get(), 443);
    }

    #[test]
    fn an_absolute_path_is_plain_and_free_of_metacharacters() {
        for bad in [
            "",
            "relative/x",
            "-x",
            "/srv/../etc",
            "/srv/a..b",
            "/srv//x",
            "/srv/./x",
            "/srv/x/",
            "/srv/a b",
            "/srv/a;b",
            "/srv/$(x)",
            "/srv/a\nb",
            "/srv/a\0b",
            "/srv/`x`",
            "/srv/a|b",
        ] {
            assert!(AbsolutePath::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(AbsolutePath::parse(&format!("/{}", "x".repeat(1024))).is_err());
        let path = AbsolutePath::parse("/srv/app/server.js").unwrap();
        assert!(path.is_inside(std::path::Path::new("/srv/app")));
        assert!(path.is_inside(std::path::Path::new("/srv")));
        assert!(
            !AbsolutePath::parse("/srv/app2/x")
                .unwrap()
                .is_inside(std::path::Path::new("/srv/app"))
        );
        assert!(AbsolutePath::parse("/").is_ok());
    }
}
