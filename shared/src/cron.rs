//! Cron expressions for schedules and the monitor's own triggers: five fields
//! (minute first) or six (seconds first), evaluated in UTC.

use chrono::SubsecRound;
use croner::Cron;
use croner::parser::CronParser;

use crate::time::Timestamp;

pub type CronError = croner::errors::CronError;

pub const MAX_EXPRESSION_LEN: usize = 200;

pub fn parse(expression: &str) -> Result<Cron, CronError> {
    if expression.len() > MAX_EXPRESSION_LEN {
        return Err(CronError::InvalidPattern(format!(
            "longer than {MAX_EXPRESSION_LEN} bytes"
        )));
    }
    CronParser::new().parse(expression)
}

/// A six-field expression (seconds first), as the monitor's own triggers
/// need (tokio-cron-scheduler requires the seconds field).
pub fn parse_with_seconds(expression: &str) -> Result<Cron, CronError> {
    use croner::parser::Seconds;
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expression)
}

/// The latest fire time that is after `after` and not after `now`: the one
/// fire a scheduler should enqueue now. Fires missed while nobody was
/// running collapse into this one.
///
/// A fire time is a cron tick, a whole second: croner answers an instant
/// that matches the expression with that instant, fraction included, so
/// `now` is truncated to the second first. Otherwise two monitors a few
/// milliseconds apart would each see a fire time of their own for one tick.
pub fn latest_due(cron: &Cron, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let tick = now.trunc_subsecs(0);
    let previous = cron.find_previous_occurrence(&tick, true).ok()?;
    (previous > after).then_some(previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_db;

    #[test]
    fn the_latest_due_fire_is_found_once() {
        let every_minute = parse("* * * * *").unwrap();
        let created = from_db("2026-01-01T00:00:30Z").unwrap();
        let now = from_db("2026-01-01T00:03:10Z").unwrap();
        let due = latest_due(&every_minute, created, now).unwrap();
        assert_eq!(due, from_db("2026-01-01T00:03:00Z").unwrap());
        assert_eq!(latest_due(&every_minute, due, now), None);
        // Two monitors a few milliseconds into one tick see the same fire.
        let every_second = parse("* * * * * *").unwrap();
        let early = from_db("2026-01-01T00:03:10.003Z").unwrap();
        let late = from_db("2026-01-01T00:03:10.007Z").unwrap();
        assert_eq!(latest_due(&every_second, created, early), Some(now));
        assert_eq!(latest_due(&every_second, created, late), Some(now));
        assert!(parse("61 * * * *").is_err());
        assert!(parse("*/5 * * * * *").is_ok());
    }
}
