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
    /// The readiness probe's real writes (see `Store::probe_write`).
    pub const STORE_PROBES: &str = "opsqueue_store_write_probes_total";
}

/// `family="…"`, the label every counter carries.
pub fn family_label(family: &str) -> String {
    format!("family=\"{}\"", label_value(family))
}

/// A label value escaped for the Prometheus text format (borrowed when
/// nothing needs escaping, as for every family and error code opsqueue
/// makes).
pub fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
        .into()
}

/// Upper bounds of the duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Counter deltas gathered while a batch is written: totals keyed by
/// (metric name, label text), and per-family duration histograms kept as
/// bucket counts until [`counters_apply`] turns them into rows (an
/// observation is one increment, not a row per bucket: the worker's writer
/// observes every finished operation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    totals: BTreeMap<(String, String), f64>,
    durations: BTreeMap<String, Histogram>,
}

/// Observations of one family's durations: how many fell in each bucket
/// (the first whose bound holds them; the last is `+Inf`), and their sum.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; DURATION_BUCKETS.len() + 1],
            sum: 0.0,
        }
    }
}

const DURATION: &str = "opsqueue_operation_duration_seconds";

impl Counters {
    pub fn add(&mut self, name: &str, labels: &str, delta: f64) {
        *self
            .totals
            .entry((name.to_owned(), labels.to_owned()))
            .or_default() += delta;
    }

    /// One observation of the cumulative duration histogram.
    pub fn observe_duration(&mut self, family: &str, secs: f64) {
        if !self.durations.contains_key(family) {
            self.durations
                .insert(family.to_owned(), Histogram::default());
        }
        let histogram = self.durations.get_mut(family).expect("inserted above");
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        histogram.buckets[bucket] += 1;
        histogram.sum += secs;
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty() && self.durations.is_empty()
    }

    /// Every delta as (name, labels, delta), the histograms as Prometheus
    /// has them: cumulative `_bucket{le}` rows, `_sum` and `_count`.
    fn rows(&self) -> Vec<(String, String, f64)> {
        let mut rows: Vec<_> = self
            .totals
            .iter()
            .map(|((name, labels), delta)| (name.clone(), labels.clone(), *delta))
            .collect();
        for (family, histogram) in &self.durations {
            let family = family_label(family);
            let bounds = DURATION_BUCKETS.iter().map(|le| le.to_string());
            let mut cumulative = 0;
            for (count, le) in histogram.buckets.iter().zip(bounds.chain(["+Inf".into()])) {
                cumulative += count;
                if cumulative > 0 {
                    rows.push((
                        format!("{DURATION}_bucket"),
                        format!("{family},le=\"{le}\""),
                        cumulative as f64,
                    ));
                }
            }
            rows.push((format!("{DURATION}_sum"), family.clone(), histogram.sum));
            rows.push((format!("{DURATION}_count"), family, cumulative as f64));
        }
        rows
    }
}

pub fn counters_apply(conn: &Connection, counters: &Counters) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO counters (name, labels, value) VALUES (:name, :labels, :delta)
         ON CONFLICT (name, labels) DO UPDATE SET value = value + :delta",
    )?;
    for (name, labels, delta) in counters.rows() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rows: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
        rows.iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn durations_become_cumulative_buckets_a_sum_and_a_count() {
        let mut counters = Counters::default();
        for secs in [0.001, 0.2, 0.2, 7200.0] {
            counters.observe_duration("diag", secs);
        }
        counters.observe_duration("pm2", 0.03);
        let rows = counters.rows();
        let bucket = |family: &str, le: &str| {
            row(
                &rows,
                "opsqueue_operation_duration_seconds_bucket",
                &format!("family=\"{family}\",le=\"{le}\""),
            )
        };
        assert_eq!(bucket("diag", "0.005"), Some(1.0));
        assert_eq!(bucket("diag", "0.1"), Some(1.0));
        assert_eq!(bucket("diag", "0.25"), Some(3.0));
        assert_eq!(bucket("diag", "1800"), Some(3.0));
        assert_eq!(bucket("diag", "+Inf"), Some(4.0));
        // No row for buckets below a family's first observation.
        assert_eq!(bucket("pm2", "0.025"), None);
        assert_eq!(bucket("pm2", "0.05"), Some(1.0));
        assert_eq!(bucket("pm2", "+Inf"), Some(1.0));
        let of_diag = "family=\"diag\"";
        assert_eq!(
            row(&rows, "opsqueue_operation_duration_seconds_count", of_diag),
            Some(4.0)
        );
        let sum = row(&rows, "opsqueue_operation_duration_seconds_sum", of_diag).unwrap();
        assert!((sum - 7200.401).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn totals_add_up_per_name_and_labels() {
        let mut counters = Counters::default();
        assert!(counters.is_empty());
        counters.add(names::CLAIMED, "family=\"diag\"", 1.0);
        counters.add(names::CLAIMED, "family=\"diag\"", 2.0);
        counters.add(names::CLAIMED, "family=\"pm2\"", 1.0);
        assert!(!counters.is_empty());
        let rows = counters.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(row(&rows, names::CLAIMED, "family=\"diag\""), Some(3.0));
    }
}
