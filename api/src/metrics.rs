//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Why by hand: the numbers are not in this process. Operations are counted
//! by three processes (the API enqueues, the worker claims and finishes, the
//! monitor reaps) that share one SQLite database, and each writes its
//! counter deltas into the `counters` table in the same transaction as what
//! it counts. So a scrape is a read of the database, rendered as text; a
//! client library's in-process registry would only add a copy. The format is
//! small: `# HELP`, `# TYPE`, then `name{labels} value` lines, a metric's
//! samples together.
//!
//! Gauges computed at scrape time: `opsqueue_operations{status}`,
//! `opsqueue_oldest_pending_age_seconds` (0 when nothing due waits),
//! `opsqueue_workers` (workers with a heartbeat fresher than
//! `ready_heartbeat_secs`), `opsqueue_store_full` (1 while this API's
//! last write failed for lack of space: enqueues answer `503
//! storage_full`). Then every counter row; names ending in
//! `_bucket`, `_sum` and `_count` whose base has buckets form a histogram
//! (`opsqueue_operation_duration_seconds`), rendered with its buckets in
//! ascending `le` order.

use std::collections::BTreeMap;
use std::fmt::Write;

use opsqueue_shared::Status;
use opsqueue_shared::store::{
    counters_list, names, operation_count_by_status, operation_oldest_due, rusqlite::Connection,
    worker_list_running,
};
use opsqueue_shared::time::Timestamp;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one scrape read from the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub by_status: Vec<(Status, i64)>,
    pub oldest_pending_age_secs: f64,
    pub fresh_workers: usize,
    /// This process's last write failed for lack of space.
    pub store_full: bool,
    /// (name, label text, value), as stored.
    pub counters: Vec<(String, String, f64)>,
}

impl Snapshot {
    pub fn read(
        conn: &Connection,
        now: Timestamp,
        heartbeat_secs: u64,
    ) -> opsqueue_shared::store::Result<Self> {
        let oldest = operation_oldest_due(conn, now)?;
        let fresh_after = now - chrono::Duration::seconds(heartbeat_secs as i64);
        Ok(Self {
            by_status: operation_count_by_status(conn)?,
            oldest_pending_age_secs: oldest
                .map(|t| ((now - t).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0))
                .unwrap_or(0.0),
            fresh_workers: worker_list_running(conn)?
                .iter()
                .filter(|w| w.heartbeat_at >= fresh_after)
                .count(),
            store_full: false,
            counters: counters_list(conn)?,
        })
    }
}

fn help_for(name: &str) -> &'static str {
    match name {
        names::ENQUEUED => "Operations accepted.",
        names::CLAIMED => "Operations claimed by a worker (each attempt).",
        names::COMPLETED => "Operations that completed.",
        names::FAILED => "Operations that failed for good.",
        names::CANCELLED => "Operations that ended cancelled.",
        names::RETRIED => "Attempts that failed and were scheduled again.",
        names::REAPED => "Running operations the monitor reaped.",
        names::STORE_PROBES => "Real writes committed by /ready to prove the store takes one.",
        "opsqueue_operation_duration_seconds" => "How long attempts ran, from claim to end.",
        _ => "An opsqueue counter.",
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {}", number(value));
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {}", number(value));
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        value.to_string()
    }
}

/// Splits `family="diag",le="0.5"` into the labels without `le` and the
/// bucket bound.
fn split_le(labels: &str) -> (String, f64) {
    let mut rest = Vec::new();
    let mut le = f64::INFINITY;
    for part in labels.split(',').filter(|p| !p.is_empty()) {
        match part.strip_prefix("le=") {
            Some(bound) => {
                let bound = bound.trim_matches('"');
                le = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().unwrap_or(f64::INFINITY)
                };
            }
            None => rest.push(part),
        }
    }
    (rest.join(","), le)
}

/// Samples of one histogram, per label set (without `le`).
#[derive(Default)]
struct Histogram {
    buckets: BTreeMap<String, Vec<(f64, String, f64)>>,
    sums: BTreeMap<String, f64>,
    counts: BTreeMap<String, f64>,
}

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "opsqueue_operations",
        "Operations by status, now.",
        "gauge",
    );
    for (status, count) in &snapshot.by_status {
        sample(
            &mut out,
            "opsqueue_operations",
            &format!("status=\"{status}\""),
            *count as f64,
        );
    }
    header(
        &mut out,
        "opsqueue_oldest_pending_age_seconds",
        "How long the longest-waiting due pending operation has waited.",
        "gauge",
    );
    sample(
        &mut out,
        "opsqueue_oldest_pending_age_seconds",
        "",
        snapshot.oldest_pending_age_secs,
    );
    header(
        &mut out,
        "opsqueue_workers",
        "Workers with a fresh heartbeat.",
        "gauge",
    );
    sample(
        &mut out,
        "opsqueue_workers",
        "",
        snapshot.fresh_workers as f64,
    );
    header(
        &mut out,
        "opsqueue_store_full",
        "1 while the database's filesystem is full (this API's last write failed for lack of space).",
        "gauge",
    );
    sample(
        &mut out,
        "opsqueue_store_full",
        "",
        if snapshot.store_full { 1.0 } else { 0.0 },
    );

    let histogram_bases: Vec<&str> = snapshot
        .counters
        .iter()
        .filter_map(|(name, _, _)| name.strip_suffix("_bucket"))
        .collect();
    let histogram_base = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| histogram_bases.contains(base))
            .map(str::to_owned)
    };
    let mut counters: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    let mut histograms: BTreeMap<String, Histogram> = BTreeMap::new();
    for (name, labels, value) in &snapshot.counters {
        match histogram_base(name) {
            Some(base) => {
                let histogram = histograms.entry(base.clone()).or_default();
                if name.ends_with("_bucket") {
                    let (rest, le) = split_le(labels);
                    histogram
                        .buckets
                        .entry(rest)
                        .or_default()
                        .push((le, labels.clone(), *value));
                } else if name.ends_with("_sum") {
                    histogram.sums.insert(labels.clone(), *value);
                } else {
                    histogram.counts.insert(labels.clone(), *value);
                }
            }
            None => counters.entry(name).or_default().push((labels, *value)),
        }
    }
    for (name, samples) in counters {
        header(&mut out, name, help_for(name), "counter");
        for (labels, value) in samples {
            sample(&mut out, name, labels, value);
        }
    }
    for (base, mut histogram) in histograms {
        header(&mut out, &base, help_for(&base), "histogram");
        for (labels, buckets) in histogram.buckets.iter_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, bucket_labels, value) in buckets.iter() {
                sample(&mut out, &format!("{base}_bucket"), bucket_labels, *value);
            }
            if let Some(sum) = histogram.sums.remove(labels) {
                sample(&mut out, &format!("{base}_sum"), labels, sum);
            }
            if let Some(count) = histogram.counts.remove(labels) {
                sample(&mut out, &format!("{base}_count"), labels, count);
            }
        }
        for (labels, sum) in histogram.sums {
            sample(&mut out, &format!("{base}_sum"), &labels, sum);
        }
        for (labels, count) in histogram.counts {
            sample(&mut out, &format!("{base}_count"), &labels, count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_counters_and_a_histogram_render_in_the_text_format() {
        let snapshot = Snapshot {
            by_status: vec![(Status::Pending, 3), (Status::Completed, 7)],
            oldest_pending_age_secs: 1.5,
            fresh_workers: 2,
            store_full: true,
            counters: vec![
                (
                    "opsqueue_operation_duration_seconds_bucket".into(),
                    "family=\"diag\",le=\"+Inf\"".into(),
                    2.0,
                ),
                (
                    "opsqueue_operation_duration_seconds_bucket".into(),
                    "family=\"diag\",le=\"0.5\"".into(),
                    1.0,
                ),
                (
                    "opsqueue_operation_duration_seconds_bucket".into(),
                    "family=\"diag\",le=\"10\"".into(),
                    2.0,
                ),
                (
                    "opsqueue_operation_duration_seconds_bucket".into(),
                    "family=\"diag\",le=\"2.5\"".into(),
                    2.0,
                ),
                (
                    "opsqueue_operation_duration_seconds_count".into(),
                    "family=\"diag\"".into(),
                    2.0,
                ),
                (
                    "opsqueue_operation_duration_seconds_sum".into(),
                    "family=\"diag\"".into(),
                    2.25,
                ),
                (names::ENQUEUED.into(), "family=\"diag\"".into(), 10.0),
            ],
        };
        let text = render(&snapshot);
        for line in [
            "# TYPE opsqueue_operations gauge",
            "opsqueue_operations{status=\"pending\"} 3",
            "opsqueue_oldest_pending_age_seconds 1.5",
            "opsqueue_workers 2",
            "# TYPE opsqueue_operations_enqueued_total counter",
            "opsqueue_operations_enqueued_total{family=\"diag\"} 10",
            "# TYPE opsqueue_operation_duration_seconds histogram",
            "opsqueue_operation_duration_seconds_sum{family=\"diag\"} 2.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("opsqueue_operation_duration_seconds_"))
            .collect();
        assert_eq!(
            buckets,
            [
                "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"0.5\"} 1",
                "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"2.5\"} 2",
                "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"10\"} 2",
                "opsqueue_operation_duration_seconds_bucket{family=\"diag\",le=\"+Inf\"} 2",
                "opsqueue_operation_duration_seconds_sum{family=\"diag\"} 2.25",
                "opsqueue_operation_duration_seconds_count{family=\"diag\"} 2",
            ]
        );
        assert_eq!(
            text.matches("# TYPE opsqueue_operation_duration_seconds ")
                .count(),
            1
        );
    }
}
