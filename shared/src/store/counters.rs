//! SQL for `counters`: monotonic totals shared by the three processes for
//! `/metrics` (enqueued, claimed, finished by outcome, durations). A process
//! gathers deltas in a [`Counters`] while it writes a batch and applies them
//! in the same transaction, so the totals match what was committed.

use std::collections::BTreeMap;

use rusqlite::{Connection, named_params};

use super::Result;

/// Counter names, so every process writes the same ones. Labels: `family`
/// everywhere, plus `code` on failures and `outcome` on reaps.
pub mod names {
    pub const ENQUEUED: &str = "opsqueue_operations_enqueued_total";
    pub const CLAIMED: &str = "opsqueue_operations_claimed_total";
    pub const COMPLETED: &str = "opsqueue_operations_completed_total";
    pub const FAILED: &str = "opsqueue_operations_failed_total";
    pub const CANCELLED: &str = "opsqueue_operations_cancelled_total";
    pub const RETRIED: &str = "opsqueue_operations_retried_total";
    pub const REAPED: &str = "opsqueue_operations_reaped_total";
}

/// Upper bounds of the duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Counter deltas keyed by (metric name, label text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters(BTreeMap<(String, String), f64>);

impl Counters {
    pub fn add(&mut self, name: &str, labels: &str, delta: f64) {
        *self
            .0
            .entry((name.to_owned(), labels.to_owned()))
            .or_default() += delta;
    }

    /// One observation of the cumulative duration histogram.
    pub fn observe_duration(&mut self, family: &str, secs: f64) {
        const NAME: &str = "opsqueue_operation_duration_seconds";
        for le in DURATION_BUCKETS.iter().filter(|le| secs <= **le) {
            self.add(
                &format!("{NAME}_bucket"),
                &format!("family=\"{family}\",le=\"{le}\""),
                1.0,
            );
        }
        self.add(
            &format!("{NAME}_bucket"),
            &format!("family=\"{family}\",le=\"+Inf\""),
            1.0,
        );
        self.add(
            &format!("{NAME}_sum"),
            &format!("family=\"{family}\""),
            secs,
        );
        self.add(
            &format!("{NAME}_count"),
            &format!("family=\"{family}\""),
            1.0,
        );
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn counters_apply(conn: &Connection, counters: &Counters) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO counters (name, labels, value) VALUES (:name, :labels, :delta)
         ON CONFLICT (name, labels) DO UPDATE SET value = value + :delta",
    )?;
    for ((name, labels), delta) in &counters.0 {
        stmt.execute(named_params! {":name": name, ":labels": labels, ":delta": delta})?;
    }
    Ok(())
}

/// Every counter, sorted by name then labels.
pub fn counters_list(conn: &Connection) -> Result<Vec<(String, String, f64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, labels, value FROM counters ORDER BY name, labels")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
