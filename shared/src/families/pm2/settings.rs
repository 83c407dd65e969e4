//! The pm2 app settings that are values rather than names: the memory
//! limit above which pm2 restarts an app (`max_memory_restart`) and the
//! timestamp format of its log lines (`log_date_format`). Both are given
//! to pm2 as option values (`--max-memory-restart 150M`) or ecosystem
//! fields, so each is parsed into a shape pm2 reads one way only and that
//! can never be taken for an option.

use serde::{Deserialize, Serialize};

use crate::names::NameError;

/// The largest number before the unit of a [`MemorySize`].
pub const MAX_MEMORY_DIGITS: usize = 6;

/// `max_memory_restart`: a whole number of kibibytes, mebibytes or
/// gibibytes, as pm2 writes it (`512K`, `150M`, `2G`; pm2 counts 1K = 1024
/// bytes). pm2 checks the memory of the app every 30 s and restarts it
/// when it is above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemorySize {
    text: String,
    bytes: u64,
}

impl MemorySize {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = || {
            NameError::new(
                "memory size",
                value,
                "must be 1 to 999999 followed by K, M or G (like 150M)",
            )
        };
        let (digits, unit) = value.split_at(value.len().saturating_sub(1));
        let shift = match unit {
            "K" => 10,
            "M" => 20,
            "G" => 30,
            _ => return Err(refuse()),
        };
        let well_formed = !digits.is_empty()
            && digits.len() <= MAX_MEMORY_DIGITS
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return Err(refuse());
        }
        let number: u64 = digits.parse().map_err(|_| refuse())?;
        Ok(Self {
            text: value.to_owned(),
            bytes: number << shift,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The limit in bytes, as pm2's list shows it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "A memory size: 1 to 999999 followed by K, M or G (1K = 1024 bytes), like `150M`",
            format!("^[1-9][0-9]{{0,{}}}[KMG]$", MAX_MEMORY_DIGITS - 1),
            MAX_MEMORY_DIGITS + 1,
        )
    }
}

crate::name_schema!(MemorySize);

impl TryFrom<String> for MemorySize {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MemorySize> for String {
    fn from(size: MemorySize) -> String {
        size.text
    }
}

/// The longest [`LogDateFormat`].
pub const MAX_LOG_DATE_FORMAT: usize = 64;

/// What a [`LogDateFormat`] may hold after its first character.
const LOG_DATE_CHARACTERS: &str = " :./_,+-[]";

/// `log_date_format`: the timestamp pm2 puts before each log line, in
/// dayjs tokens (`YYYY-MM-DD HH:mm:ss Z`). Letters, digits and ` :./_,+-[]`,
/// a letter, digit or `[` first (never an option's `-`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogDateFormat(String);

impl LogDateFormat {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("log date format", value, reason);
        if value.is_empty() || value.len() > MAX_LOG_DATE_FORMAT {
            return Err(refuse("must be 1 to 64 characters"));
        }
        if !value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[') {
            return Err(refuse("must start with a letter, a digit or '['"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOG_DATE_CHARACTERS.contains(c))
        {
            return Err(refuse("may hold only letters, digits and ` :./_,+-[]`"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "A dayjs date format (`YYYY-MM-DD HH:mm:ss Z`): letters, digits and ` :./_,+-[]`, \
             a letter, digit or `[` first",
            "^[A-Za-z0-9\\[][A-Za-z0-9 :./_,+\\-\\[\\]]*$".to_owned(),
            MAX_LOG_DATE_FORMAT,
        )
    }
}

crate::name_schema!(LogDateFormat);

impl TryFrom<String> for LogDateFormat {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<LogDateFormat> for String {
    fn from(format: LogDateFormat) -> String {
        format.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_are_counted_as_pm2_counts_them() {
        assert_eq!(MemorySize::parse("150M").unwrap().bytes(), 150 << 20);
        assert_eq!(MemorySize::parse("512K").unwrap().bytes(), 512 << 10);
        assert_eq!(MemorySize::parse("2G").unwrap().bytes(), 2 << 30);
        assert_eq!(MemorySize::parse("999999G").unwrap().as_str(), "999999G");
        for bad in [
            "", "M", "0M", "010M", "150", "150MB", "150m", "-1M", "1.5G", "1 M", "1000000K",
            "--max",
        ] {
            assert!(MemorySize::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn log_date_formats_hold_dayjs_tokens_and_never_look_like_options() {
        for good in [
            "YYYY-MM-DD HH:mm:ss Z",
            "[at] HH:mm",
            "x",
            "DD/MM/YYYY, HH.mm.ss.SSS",
        ] {
            assert_eq!(LogDateFormat::parse(good).unwrap().as_str(), good);
        }
        let long = "Y".repeat(65);
        for bad in [
            "",
            "-x",
            " Y",
            "YYYY\nMM",
            "$(id)",
            "a;b",
            "Y'Y",
            long.as_str(),
        ] {
            assert!(LogDateFormat::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
