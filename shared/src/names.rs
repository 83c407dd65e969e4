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

/// Checks `value` against the shared rule with `extra` allowed punctuation.
pub fn check_name(
    what: &'static str,
    value: &str,
    max: usize,
    extra: &str,
) -> Result<(), NameError> {
    let refuse = |reason: String| NameError {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
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

            pub fn parse(value: &str) -> Result<Self, $crate::names::NameError> {
                $crate::names::check_name($what, value, $max, $extra)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::names::NameError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                $crate::names::check_name($what, &value, $max, $extra)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

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

    #[test]
    fn a_label_is_checked_while_deserializing() {
        assert!(serde_json::from_str::<Label>("\"-rf\"").is_err());
        assert_eq!(
            serde_json::from_str::<Label>("\"ui\"").unwrap().as_str(),
            "ui"
        );
    }
}
