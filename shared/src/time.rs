//! Timestamps as the store keeps them: RFC 3339 UTC with microseconds and a
//! `Z`, fixed width, so that comparing the text compares the instants. Every
//! time that reaches SQL goes through [`to_db`]; callers pass `now` in so that
//! tests can use any clock.

use chrono::{DateTime, SecondsFormat, Utc};

pub type Timestamp = DateTime<Utc>;

pub fn now() -> Timestamp {
    Utc::now()
}

/// The stored form: `2026-11-23T18:44:02.123456Z`.
pub fn to_db(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a stored time; anything else is a corrupt row.
pub fn from_db(s: &str) -> Result<Timestamp, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

pub fn add_secs(t: Timestamp, secs: f64) -> Timestamp {
    t + chrono::Duration::microseconds((secs * 1_000_000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let a = from_db("2026-01-01T00:00:00Z").unwrap();
        let b = add_secs(a, 0.000_001);
        let c = add_secs(a, 10.0);
        assert!(to_db(a) < to_db(b) && to_db(b) < to_db(c));
        assert_eq!(to_db(a).len(), to_db(c).len());
        assert_eq!(from_db(&to_db(b)).unwrap(), b);
    }
}
