//! opsqueue-bench: measures the queue against the raw SQLite limit on the
//! same disk, with the three real binaries as processes on fresh temporary
//! databases, and prints the results as Markdown (the body of
//! BENCHMARKS.md). `scripts/bench` builds everything in release mode and
//! runs it; `--smoke` runs every section with tiny sizes so CI can check the
//! benchmark still works (it never judges the numbers).
//!
//! Sections: raw SQLite limit; enqueue over HTTP with keep-alive at 1, 16
//! and 64 clients; drain of pre-enqueued `diag.noop` by one worker at
//! concurrency 1, 8 and 32; sustained enqueue + drain; pickup latency with an
//! idle worker; idle CPU and peak RSS of each process; drain with a million
//! terminal operations of history; workflows (per-step overhead of a
//! chain, steps/s of many workflows against the plain drain, the enqueue of
//! a large workflow); one remote worker over HTTPS on loopback (drain at
//! concurrency 32, the API's CPU per operation, pickup); the dashboard's
//! operations page with that history; enqueue with 500 event subscribers
//! connected against none; events delivered per second.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsqueue_shared::config::DatabaseConfig;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{self, rusqlite};
use opsqueue_shared::time::{from_db, now};
use opsqueue_shared::workflow::WorkflowBody;
use opsqueue_shared::{Action, OperationRequest, Store};
use opsqueue_tests::fleet::{Agent, self_signed};
use opsqueue_tests::{Cluster, Proc};
use serde_json::json;

struct Sizes {
    raw_rows: usize,
    enqueue_secs: f64,
    drain_ops: usize,
    sustained_secs: f64,
    pickup_ops: usize,
    idle_secs: f64,
    history_rows: usize,
    /// Section 8: the chain's length, how many workflows of ten steps, and
    /// the steps of the workflow whose enqueue is timed.
    chain_steps: usize,
    workflows: usize,
    big_workflow: usize,
    /// Requests per dashboard page measured (section 12).
    page_requests: usize,
    /// Event subscribers connected during enqueue (section 11).
    subscribers: usize,
    /// Subscribers that take every event (section 12).
    readers: usize,
    /// Runs behind each headline figure (64-client enqueue, drain at
    /// concurrency 32, the scale pair): the median is reported, with the
    /// range, because a shared 2-core machine is noisy.
    repeats: usize,
}

const FULL: Sizes = Sizes {
    raw_rows: 5_000,
    enqueue_secs: 10.0,
    drain_ops: 100_000,
    sustained_secs: 30.0,
    pickup_ops: 1_000,
    idle_secs: 30.0,
    history_rows: 1_000_000,
    chain_steps: 1_000,
    workflows: 1_000,
    big_workflow: 1_000,
    page_requests: 300,
    subscribers: 500,
    readers: 50,
    repeats: 3,
};

const SMOKE: Sizes = Sizes {
    raw_rows: 200,
    enqueue_secs: 0.5,
    drain_ops: 500,
    sustained_secs: 1.0,
    pickup_ops: 20,
    idle_secs: 1.0,
    history_rows: 2_000,
    chain_steps: 20,
    workflows: 20,
    big_workflow: 50,
    page_requests: 20,
    subscribers: 20,
    readers: 5,
    repeats: 1,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes = if args.iter().any(|a| a == "--smoke") {
        SMOKE
    } else {
        FULL
    };
    // `--only 3,7` runs just those sections (for profiling one figure).
    let only: Vec<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(sizes, only))
}

async fn run(sizes: Sizes, only: Vec<u32>) -> anyhow::Result<()> {
    let wants = |section: u32| only.is_empty() || only.contains(&section);
    let scratch = tempfile::tempdir()?;
    print_machine(scratch.path());
    let mut raw_full = f64::NAN;
    let mut rss: Vec<(String, u64)> = Vec::new();
    // The local drain at concurrency 32 (section 3), to compare the remote one with.
    let mut drain_local_32: Option<f64> = None;
    let mut template: Option<std::path::PathBuf> = None;

    if wants(1) {
        println!("## 1. Raw SQLite limit (same disk, same PRAGMAs, the real `operations` table)\n");
        println!("| synchronous | rows per transaction | rows/s |\n|---|---|---|");
        for (sync, per_txn) in [("FULL", 1), ("NORMAL", 1), ("FULL", 100), ("NORMAL", 100)] {
            let rate = raw_insert_rate(scratch.path(), sync, per_txn, sizes.raw_rows)?;
            if sync == "FULL" && per_txn == 1 {
                raw_full = rate;
            }
            println!("| {sync} | {per_txn} | {rate:.0} |");
        }
        println!(
            "\nThe API commits with `synchronous = FULL`; ratios below are to {raw_full:.0} single-row FULL commits/s.\n"
        );
    }

    if wants(2) {
        println!("## 2. Enqueue over HTTP (keep-alive, `diag.noop`, API alone)\n");
        println!(
            "| clients | operations/s | × raw | p50 ms | p99 ms | runs (operations/s) |\n|---|---|---|---|---|---|"
        );
        for clients in [1, 16, 64] {
            let runs = if clients == 64 { sizes.repeats } else { 1 };
            let mut loads = Vec::new();
            for _ in 0..runs {
                let mut cluster = quiet_cluster();
                cluster.start_api();
                loads.push(enqueue_load(&cluster, clients, sizes.enqueue_secs).await);
            }
            loads.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let load = &loads[loads.len() / 2];
            println!(
                "| {clients} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                load.rate,
                load.rate / raw_full,
                load.p50_ms,
                load.p99_ms,
                runs_cell(loads.iter().map(|l| l.rate))
            );
        }
    }

    if wants(3) {
        println!(
            "\n## 3. Drain: {} `diag.noop` enqueued first, one worker process\n",
            sizes.drain_ops
        );
        println!("| concurrency | operations/s | × raw | runs (operations/s) |\n|---|---|---|---|");
        for concurrency in [1, 8, 32] {
            let runs = if concurrency == 32 { sizes.repeats } else { 1 };
            let mut rates = Vec::new();
            for _ in 0..runs {
                rates.push(
                    drain(sizes.drain_ops, concurrency, None, Mode::Local)
                        .await?
                        .rate,
                );
            }
            let rate = median(&mut rates);
            if concurrency == 32 {
                drain_local_32 = Some(rate);
            }
            println!(
                "| {concurrency} | {rate:.0} | {:.2} | {} |",
                rate / raw_full,
                runs_cell(rates.iter().copied())
            );
        }
    }

    if wants(4) {
        println!(
            "\n## 4. Sustained: enqueue (64 clients) and drain (one worker, concurrency 32) at once for {:.0} s\n",
            sizes.sustained_secs
        );
        let mut cluster = quiet_cluster();
        cluster.set_env("OPSQUEUE_WORKER__CONCURRENCY", 32);
        cluster.start_all();
        let started = now();
        let load = enqueue_load(&cluster, 64, sizes.sustained_secs).await;
        let finished = now();
        let db = cluster.sqlite();
        let completed: i64 = db.query_row(
        "SELECT count(*) FROM operations WHERE status = 'completed' AND finished_at BETWEEN ?1 AND ?2",
        [opsqueue_shared::time::to_db(started), opsqueue_shared::time::to_db(finished)],
        |r| r.get(0),
    )?;
        let backlog: i64 = db.query_row(
            "SELECT count(*) FROM operations WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        let secs = (finished - started).num_milliseconds() as f64 / 1000.0;
        println!(
            "| enqueued/s | completed/s | pending at the end | enqueue p99 ms |\n|---|---|---|---|"
        );
        println!(
            "| {:.0} | {:.0} | {backlog} | {:.2} |",
            load.rate,
            completed as f64 / secs,
            load.p99_ms
        );
        rss = cluster_procs(&cluster)
            .iter()
            .map(|p| (p.name.clone(), peak_rss_kib(p.pid())))
            .collect();
        drop(cluster);
    }

    if wants(5) {
        println!(
            "\n## 5. Pickup latency, idle worker, {} operations one after another\n",
            sizes.pickup_ops
        );
        let pickup = pickup_latency(sizes.pickup_ops, Mode::Local).await?;
        println!("| measure | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
        println!(
            "| accepted (`created_at`) → `started_at` | {:.2} | {:.2} | {:.2} |",
            pickup.start.0, pickup.start.1, pickup.start.2
        );
        println!(
            "| 202 received → long-poll sees `completed` | {:.2} | {:.2} | {:.2} |",
            pickup.seen.0, pickup.seen.1, pickup.seen.2
        );
    }

    if wants(6) {
        println!("\n## 6. Cost\n");
        let mut cluster = quiet_cluster();
        cluster.start_all();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let procs = cluster_procs(&cluster);
        let before: Vec<u64> = procs.iter().map(|p| cpu_ticks(p.pid())).collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(sizes.idle_secs)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        println!(
            "| process | idle CPU % of a core ({:.0} s) | peak RSS under load (MiB) |\n|---|---|---|",
            sizes.idle_secs
        );
        let mut total = 0.0;
        for (i, proc) in procs.iter().enumerate() {
            let cpu = (cpu_ticks(proc.pid()) - before[i]) as f64 / ticks_per_sec / elapsed * 100.0;
            total += cpu;
            let peak = rss
                .iter()
                .find(|(name, _)| name == &proc.name)
                .map(|(_, kib)| *kib)
                .unwrap_or(0);
            println!("| {} | {cpu:.2} | {:.1} |", proc.name, peak as f64 / 1024.0);
        }
        println!("| all three | {total:.2} | |");
        drop(cluster);
    }

    if wants(7) {
        println!(
            "\n## 7. Scale: drain (concurrency 32) with {} terminal operations already stored\n",
            sizes.history_rows
        );
        // One database with the history, copied for each run; runs with and
        // without it alternate so that both see the same machine.
        let template = template.insert(history_template(scratch.path(), sizes.history_rows)?);
        let (mut empty, mut full) = (Vec::new(), Vec::new());
        for _ in 0..sizes.repeats {
            empty.push(drain(sizes.drain_ops, 32, None, Mode::Local).await?.rate);
            full.push(
                drain(sizes.drain_ops, 32, Some(template), Mode::Local)
                    .await?
                    .rate,
            );
        }
        print_against(
            ("history rows", "empty table"),
            sizes.history_rows,
            &mut empty,
            &mut full,
        );
    }

    if wants(8) {
        println!("\n## 8. Workflows (`diag.noop` steps, one worker at concurrency 32)\n");
        let overhead = chain_overhead(sizes.chain_steps).await?;
        println!(
            "A chain of {} steps, each depending on the one before: {:.2} s in all.\n",
            sizes.chain_steps, overhead.total_secs
        );
        println!(
            "| per step (one step's start → the next one's start) | p50 ms | p99 ms | max ms |\n|---|---|---|---|"
        );
        let (p50, p99, max) = overhead.gaps;
        println!("| | {p50:.2} | {p99:.2} | {max:.2} |\n");
        let plain_ops = sizes.workflows * 10;
        let plain = drain(plain_ops, 32, None, Mode::Local).await?.rate;
        let steps = workflow_drain(sizes.workflows).await?;
        println!(
            "| {} workflows of 10 chained steps | steps/s | vs the plain drain of {plain_ops} operations ({plain:.0}/s) |\n|---|---|---|",
            sizes.workflows
        );
        println!("| | {steps:.0} | {:.0} % |\n", steps / plain * 100.0);
        let mut enqueue = Vec::new();
        for _ in 0..5 {
            enqueue.push(big_workflow_enqueue(sizes.big_workflow).await?);
        }
        println!(
            "Enqueue of one workflow of {} steps (`POST /api/v1/workflows`, until the 202): median {:.1} ms, runs {}.",
            sizes.big_workflow,
            median(&mut enqueue),
            runs_cell(enqueue.iter().copied())
        );
    }

    if wants(9) {
        println!(
            "\n## 9. One remote worker over HTTPS on loopback (agent key, self-signed certificate pinned)\n"
        );
        println!(
            "Drain: {} `diag.noop` enqueued first, the worker at concurrency 32, every claim and finish through the API.\n",
            sizes.drain_ops
        );
        println!(
            "| operations/s | vs local (section 3) | API CPU µs per operation | runs (operations/s) |\n|---|---|---|---|"
        );
        let mut drains = Vec::new();
        for _ in 0..sizes.repeats {
            drains.push(drain(sizes.drain_ops, 32, None, Mode::Remote).await?);
        }
        drains.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let middle = &drains[drains.len() / 2];
        let local = drain_local_32.unwrap_or(f64::NAN);
        println!(
            "| {:.0} | {:.0} % | {:.0} | {} |",
            middle.rate,
            middle.rate / local * 100.0,
            middle.api_cpu_us_per_op,
            runs_cell(drains.iter().map(|d| d.rate))
        );
        let pickup = pickup_latency(sizes.pickup_ops, Mode::Remote).await?;
        println!(
            "\nPickup, the remote worker idle (its claim waiting at the API), {} operations one after another:\n",
            sizes.pickup_ops
        );
        println!("| measure | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
        println!(
            "| accepted (`created_at`) → `started_at` | {:.2} | {:.2} | {:.2} |",
            pickup.start.0, pickup.start.1, pickup.start.2
        );
        println!(
            "| 202 received → long-poll sees `completed` | {:.2} | {:.2} | {:.2} |",
            pickup.seen.0, pickup.seen.1, pickup.seen.2
        );
    }

    if wants(10) {
        println!(
            "\n## 10. Dashboard: the operations page with {} operations stored ({} requests each)\n",
            sizes.history_rows, sizes.page_requests
        );
        let template = match &template {
            Some(template) => template.clone(),
            None => history_template(scratch.path(), sizes.history_rows)?,
        };
        dashboard_pages(&template, sizes.page_requests).await?;
    }

    if wants(11) {
        println!(
            "\n## 11. Enqueue (64 clients) with {} event subscribers connected, against none\n",
            sizes.subscribers
        );
        let (mut none, mut with) = (Vec::new(), Vec::new());
        for _ in 0..sizes.repeats {
            none.push(enqueue_with_subscribers(0, sizes.enqueue_secs).await?);
            with.push(enqueue_with_subscribers(sizes.subscribers, sizes.enqueue_secs).await?);
        }
        print_against(
            ("subscribers", "none"),
            sizes.subscribers,
            &mut none,
            &mut with,
        );
    }

    if wants(12) {
        println!(
            "\n## 12. Events delivered: {} subscribers taking every `operation.created` while 16 clients enqueue\n",
            sizes.readers
        );
        let delivery = event_delivery(sizes.readers, sizes.enqueue_secs).await?;
        println!(
            "| enqueued/s | events delivered/s | delivered of sent | p50 ms | p99 ms |\n|---|---|---|---|---|"
        );
        println!(
            "| {:.0} | {:.0} | {:.1} % | {:.2} | {:.2} |",
            delivery.enqueued_rate,
            delivery.delivered_rate,
            delivery.complete * 100.0,
            delivery.p50_ms,
            delivery.p99_ms
        );
    }
    Ok(())
}

/// A workflow of `steps` noops; each depends on the one before when
/// `chained`.
fn noop_workflow(steps: usize, chained: bool) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = (0..steps)
        .map(|i| {
            let depends_on = if chained && i > 0 {
                vec![format!("s{}", i - 1)]
            } else {
                Vec::new()
            };
            json!({"name": format!("s{i}"), "type": "diag.noop", "depends_on": depends_on})
        })
        .collect();
    json!({"steps": steps})
}

/// Stores `workflows` straight into the database (as the API would).
fn store_workflows(store: &Store, workflows: &[serde_json::Value]) -> anyhow::Result<()> {
    let now = now();
    let new: Vec<_> = workflows
        .iter()
        .map(|w| {
            let body = WorkflowBody::from_json(w.clone()).map_err(|r| anyhow::anyhow!("{r:?}"))?;
            let request = body
                .parse(Label::api())
                .map_err(|r| anyhow::anyhow!("{r:?}"))?;
            Ok(request.prepare(now))
        })
        .collect::<anyhow::Result<_>>()?;
    store.write(|tx| {
        for workflow in &new {
            store::workflow_insert(tx, workflow)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Waits until no workflow is left running; returns the steps' first start
/// and last finish.
async fn wait_workflows(cluster: &Cluster) -> anyhow::Result<(String, String)> {
    let db = cluster.sqlite();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let active: i64 = db.query_row(
            "SELECT count(*) FROM workflows WHERE phase <> 'ended'",
            [],
            |r| r.get(0),
        )?;
        if active == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the workflows did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(db.query_row(
        "SELECT min(started_at), max(finished_at) FROM operations WHERE parent_id IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

struct ChainOverhead {
    total_secs: f64,
    gaps: (f64, f64, f64),
}

/// One chain of `steps` noops: the time from each step's start to the next
/// one's (the step itself does nothing, so this is what running a step of a
/// chain costs: its finish, the release of the next, its claim).
async fn chain_overhead(steps: usize) -> anyhow::Result<ChainOverhead> {
    let mut cluster = quiet_cluster();
    cluster.set_env("OPSQUEUE_WORKER__CONCURRENCY", 32);
    let store = Store::open(&DatabaseConfig {
        path: cluster.db_path(),
        ..Default::default()
    })?;
    store_workflows(&store, &[noop_workflow(steps, true)])?;
    cluster.start_worker(&[]);
    let (first, last) = wait_workflows(&cluster).await?;
    let db = cluster.sqlite();
    let mut stmt = db.prepare(
        "SELECT started_at, finished_at FROM operations WHERE parent_id IS NOT NULL ORDER BY id",
    )?;
    let times: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| {
            let gap = from_db(&w[1].0)? - from_db(&w[0].0)?;
            Ok(gap.to_std().unwrap_or_default())
        })
        .collect::<anyhow::Result<_>>()?;
    gaps.sort();
    let total = (from_db(&last)? - from_db(&first)?)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    Ok(ChainOverhead {
        total_secs: total,
        gaps: percentiles(&gaps),
    })
}

/// `workflows` chains of ten steps stored first, then one worker drains
/// them; steps per second from the first start to the last finish.
async fn workflow_drain(workflows: usize) -> anyhow::Result<f64> {
    let mut cluster = quiet_cluster();
    cluster.set_env("OPSQUEUE_WORKER__CONCURRENCY", 32);
    let store = Store::open(&DatabaseConfig {
        path: cluster.db_path(),
        ..Default::default()
    })?;
    let all: Vec<serde_json::Value> = (0..workflows).map(|_| noop_workflow(10, true)).collect();
    for chunk in all.chunks(100) {
        store_workflows(&store, chunk)?;
    }
    cluster.start_worker(&[]);
    let (first, last) = wait_workflows(&cluster).await?;
    let span = (from_db(&last)? - from_db(&first)?)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    Ok((workflows * 10) as f64 / span.max(1e-6))
}

/// Milliseconds from sending `POST /api/v1/workflows` with `steps` steps to
/// its 202.
async fn big_workflow_enqueue(steps: usize) -> anyhow::Result<f64> {
    let mut cluster = quiet_cluster();
    cluster.set_env("OPSQUEUE_API__BODY_LIMIT_BYTES", 4 * 1024 * 1024);
    cluster.start_api();
    // A first request warms the API's connections up.
    cluster.get("/api/v1/workflows").await;
    let body = noop_workflow(steps, true);
    let started = Instant::now();
    let response = cluster.post("/api/v1/workflows", body).await;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        response.status == reqwest::StatusCode::ACCEPTED,
        "the workflow was refused: {:?}",
        response.body
    );
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// Where the measured worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Beside the database.
    Local,
    /// Remote: through the API over HTTPS on loopback, with an agent key.
    Remote,
}

/// Starts the worker of `mode` (and, for a remote one, the API it pulls
/// from, serving HTTPS with a fresh self-signed certificate).
fn start_measured_worker(cluster: &mut Cluster, mode: Mode) {
    match mode {
        Mode::Local => {
            cluster.start_worker(&[]);
        }
        Mode::Remote => {
            let (cert, key) = self_signed(cluster.dir.path(), &["127.0.0.1"]);
            cluster.use_tls(&cert, &key);
            cluster.start_api();
            let agent = Agent::new(cluster, "bench", &["local"]);
            let url = cluster.api_url.clone();
            let mut env = agent.env(&url, Some(&cert), &["local"]);
            // Measure the queue, not the record file and JSON logs.
            env.retain(|(k, _)| {
                !matches!(*k, "OPSQUEUE_DIAG__RECORD_PATH" | "OPSQUEUE_LOG__FORMAT")
            });
            cluster.start_worker(&env);
        }
    }
}

/// The machine, disk, SQLite and date the figures come from.
fn print_machine(scratch: &Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The mount holding the scratch directory: the longest mount point that prefixes it.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let disk = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && scratch.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} ({}) on {}", f[0], f[2], f[1])))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, d)| d);
    println!(
        "- Machine: {model}, {cores} cores, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    );
    println!("- Disk: {disk}");
    println!("- SQLite {} (bundled), WAL", rusqlite::version());
    println!("- Date: {}", now().format("%Y-%m-%d %H:%M UTC"));
    println!("- Command: `scripts/bench` (release build)\n");
}

fn quiet_cluster() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.set_env("RUST_LOG", "warn");
    cluster
}

fn cluster_procs(cluster: &Cluster) -> Vec<&Proc> {
    cluster
        .api
        .iter()
        .chain(&cluster.workers)
        .chain(&cluster.monitors)
        .collect()
}

/// Single-row (or `per_txn`-row) insert transactions into `operations`
/// through the store's own insert, at the given `synchronous` level.
fn raw_insert_rate(dir: &Path, sync: &str, per_txn: usize, rows: usize) -> anyhow::Result<f64> {
    let path = dir.join(format!("raw-{sync}-{per_txn}.db"));
    drop(Store::open(&DatabaseConfig {
        path: path.clone(),
        ..Default::default()
    })?);
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "synchronous", sync)?;
    let new: Vec<_> = (0..rows).map(|_| noop().prepare(now())).collect();
    let started = Instant::now();
    for chunk in new.chunks(per_txn) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for op in chunk {
            store::operation_insert(&tx, op)?;
        }
        tx.commit()?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

fn bytes_of(value: &serde_json::Value) -> hyper::body::Bytes {
    serde_json::to_vec(value).unwrap().into()
}

fn noop() -> OperationRequest {
    OperationRequest::new(Action::parse("diag.noop", json!({})).expect("diag.noop parses"))
}

struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` connections, each sending one enqueue after the other for
/// `secs`. The client is hyper's HTTP/1 connection, no pool or redirects on
/// top (reqwest's took a third of a core at 64 clients, which the API lost).
async fn enqueue_load(cluster: &Cluster, clients: usize, secs: f64) -> Load {
    let address = cluster
        .api_url
        .strip_prefix("http://")
        .expect("the API listens on http")
        .to_owned();
    let request = Arc::new(
        hyper::Request::post("/api/v1/operations")
            .header("host", &address)
            .header("authorization", format!("Bearer {}", cluster.token))
            .header("content-type", "application/json")
            .body(())
            .unwrap(),
    );
    let body = bytes_of(&json!({"type": "diag.noop", "payload": {}}));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (address, request, body) = (address.clone(), request.clone(), body.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&address)
                    .await
                    .expect("connect");
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("HTTP/1 handshake");
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let mut next = hyper::Request::new(http_body_util::Full::new(body.clone()));
                    *next.method_mut() = request.method().clone();
                    *next.uri_mut() = request.uri().clone();
                    *next.headers_mut() = request.headers().clone();
                    let t0 = Instant::now();
                    let response = sender.send_request(next).await.expect("enqueue request");
                    assert_eq!(response.status(), 202, "enqueue refused");
                    http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .expect("the 202's body");
                    latencies.push(t0.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let (p50, p99, _) = percentiles(&latencies);
    Load {
        rate: latencies.len() as f64 / elapsed,
        p50_ms: p50,
        p99_ms: p99,
    }
}

/// The median of a few measurements (the upper middle one of an even count).
/// The table of two series of runs taken in alternation: without
/// (`0` of `what`) and with `count` of it, each as its median and as a
/// share of the first. `what` is the column's name and what the first row
/// is called in the share's header.
fn print_against(what: (&str, &str), count: usize, without: &mut [f64], with: &mut [f64]) {
    let (name, base) = what;
    let (without_rate, with_rate) = (median(without), median(with));
    println!("| {name} | operations/s | vs {base} | runs (operations/s) |\n|---|---|---|---|");
    println!(
        "| 0 | {without_rate:.0} | 100 % | {} |",
        runs_cell(without.iter().copied())
    );
    println!(
        "| {count} | {with_rate:.0} | {:.0} % | {} |",
        with_rate / without_rate * 100.0,
        runs_cell(with.iter().copied())
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The individual runs behind a median, for the table.
fn runs_cell(values: impl Iterator<Item = f64>) -> String {
    values
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// p50, p99 and max in milliseconds of sorted durations.
fn percentiles(sorted: &[Duration]) -> (f64, f64, f64) {
    if sorted.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let at = |q: f64| {
        sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
    };
    (
        at(0.50),
        at(0.99),
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0,
    )
}

/// A database holding `rows` terminal operations (and nothing else), fully
/// checkpointed so that copying its file copies all of it: one in twenty
/// failed, four types, one in ten on target `web-2`. Their events are
/// deleted: a history this old is past the events' retention.
fn history_template(dir: &Path, rows: usize) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("history.db");
    let store = Store::open(&DatabaseConfig {
        path: path.clone(),
        ..Default::default()
    })?;
    store.write(|tx| {
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO operations (id, type, payload, status, target, run_at, attempt, timeout_secs,
                     result, error, created_at, started_at, finished_at, updated_at)
                 SELECT printf('00000000-0000-7000-8000-%012x', i),
                     CASE i % 4 WHEN 0 THEN 'diag.noop' WHEN 1 THEN 'diag.sleep'
                                WHEN 2 THEN 'pm2.restart' ELSE 'systemd.restart' END,
                     '{}', CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END,
                     CASE WHEN i % 10 = 3 THEN 'web-2' ELSE 'local' END,
                     '2000-01-01T00:00:00.000000Z', 1, 300,
                     CASE WHEN i % 20 = 0 THEN NULL ELSE '{\"changed\":false}' END,
                     CASE WHEN i % 20 = 0 THEN '{\"code\":\"boom\",\"message\":\"it failed\",\"retryable\":false}' END,
                     '2000-01-01T00:00:00.000000Z', '2000-01-01T00:00:00.000000Z',
                     '2000-01-01T00:00:00.000000Z', '2000-01-01T00:00:00.000000Z'
                 FROM n",
            [rows as i64],
        )?;
        tx.execute("DELETE FROM events", [])?;
        Ok(())
    })?;
    store.read(|conn| Ok(conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))?;
    drop(store);
    Ok(path)
}

struct Drained {
    rate: f64,
    /// The API's CPU time over the drain, per operation (remote mode).
    api_cpu_us_per_op: f64,
}

/// Enqueues `ops` noops straight into the database (a copy of `history`,
/// when given), then starts one worker (beside it, or remote through the
/// API) and measures from the first start to the last finish.
async fn drain(
    ops: usize,
    concurrency: usize,
    history: Option<&Path>,
    mode: Mode,
) -> anyhow::Result<Drained> {
    let mut cluster = quiet_cluster();
    cluster.set_env("OPSQUEUE_WORKER__CONCURRENCY", concurrency);
    let config = DatabaseConfig {
        path: cluster.db_path(),
        ..Default::default()
    };
    if let Some(template) = history {
        std::fs::create_dir_all(config.dir())?;
        std::fs::copy(template, &config.path)?;
    }
    let store = Store::open(&config)?;
    for chunk in (0..ops).collect::<Vec<_>>().chunks(10_000) {
        let new: Vec<_> = chunk.iter().map(|_| noop().prepare(now())).collect();
        store.write(|tx| {
            for op in &new {
                store::operation_insert(tx, op)?;
            }
            Ok(())
        })?;
    }
    drop(store);
    start_measured_worker(&mut cluster, mode);
    let api_ticks = cluster.api.as_ref().map(|api| cpu_ticks(api.pid()));
    let db = cluster.sqlite();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pending: i64 = db.query_row(
            "SELECT count(*) FROM operations WHERE status IN ('pending', 'running')",
            [],
            |r| r.get(0),
        )?;
        if pending == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the drain did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stored times have microseconds and sort as text.
    let (first, last): (String, String) = db.query_row(
        "SELECT min(started_at), max(finished_at) FROM operations WHERE started_at > '2001'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let span = (from_db(&last)? - from_db(&first)?)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let api_cpu_us_per_op = match (&cluster.api, api_ticks) {
        (Some(api), Some(before)) => {
            (cpu_ticks(api.pid()) - before) as f64 / ticks_per_sec * 1e6 / ops as f64
        }
        _ => f64::NAN,
    };
    Ok(Drained {
        rate: ops as f64 / span.max(1e-6),
        api_cpu_us_per_op,
    })
}

struct Pickup {
    start: (f64, f64, f64),
    seen: (f64, f64, f64),
}

async fn pickup_latency(ops: usize, mode: Mode) -> anyhow::Result<Pickup> {
    let mut cluster = quiet_cluster();
    match mode {
        Mode::Local => cluster.start_all(),
        Mode::Remote => {
            start_measured_worker(&mut cluster, mode);
            cluster.start_monitor();
        }
    }
    // Let the worker settle into idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..ops {
        let op = cluster
            .enqueue(json!({"type": "diag.noop", "payload": {}}))
            .await;
        let accepted = Instant::now();
        let id = op["id"].as_str().unwrap().to_owned();
        let done = cluster
            .get(&format!("/api/v1/operations/{id}?wait=10"))
            .await;
        anyhow::ensure!(
            done.body["status"] == "completed",
            "not completed: {}",
            done.body
        );
        seen.push(accepted.elapsed());
        ids.push(id);
    }
    let db = cluster.sqlite();
    let mut stmt = db.prepare("SELECT created_at, started_at FROM operations")?;
    let mut start = Vec::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (created, started) = row?;
        let micros = (from_db(&started)? - from_db(&created)?)
            .num_microseconds()
            .unwrap_or(0);
        start.push(Duration::from_micros(micros.max(0) as u64));
    }
    start.sort();
    seen.sort();
    Ok(Pickup {
        start: percentiles(&start),
        seen: percentiles(&seen),
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // Fields after the command start at field 3; utime is 14, stime 15.
    let get = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One keep-alive HTTP/1 connection to the cluster's API.
async fn connect(
    cluster: &Cluster,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>> {
    let address = cluster
        .api_url
        .strip_prefix("http://")
        .expect("the API listens on http");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1 handshake");
    tokio::spawn(connection);
    sender
}

fn get_request(
    cluster: &Cluster,
    path: &str,
) -> hyper::Request<http_body_util::Full<hyper::body::Bytes>> {
    let address = cluster.api_url.strip_prefix("http://").unwrap();
    hyper::Request::get(path)
        .header("host", address)
        .header("authorization", format!("Bearer {}", cluster.token))
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap()
}

/// Section 8: server time of the dashboard's operations page (and the
/// JSON list beside it) with the history stored, one request after the
/// other on a keep-alive connection, so each latency is the server's time
/// plus a loopback round trip.
async fn dashboard_pages(template: &Path, requests: usize) -> anyhow::Result<()> {
    let mut cluster = quiet_cluster();
    std::fs::create_dir_all(cluster.db_path().parent().unwrap())?;
    std::fs::copy(template, cluster.db_path())?;
    cluster.start_api();
    let middle = format!(
        "00000000-0000-7000-8000-{:012x}",
        500_000.min(requests.max(1) * 50)
    );
    let pages = [
        ("first page", "/ui/operations".to_owned()),
        ("status=failed", "/ui/operations?status=failed".to_owned()),
        (
            "type=pm2.restart",
            "/ui/operations?type=pm2.restart".to_owned(),
        ),
        ("target=web-2", "/ui/operations?target=web-2".to_owned()),
        (
            "a page deep in (cursor)",
            format!("/ui/operations?cursor={middle}"),
        ),
        (
            "JSON: GET /api/v1/operations",
            "/api/v1/operations".to_owned(),
        ),
    ];
    let mut sender = connect(&cluster).await;
    println!("| page | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
    for (name, path) in pages {
        let mut latencies = Vec::with_capacity(requests);
        // One request first, unmeasured: the page cache of a fresh process.
        for i in 0..=requests {
            sender.ready().await?;
            let t0 = Instant::now();
            let response = sender.send_request(get_request(&cluster, &path)).await?;
            anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
            http_body_util::BodyExt::collect(response.into_body()).await?;
            if i > 0 {
                latencies.push(t0.elapsed());
            }
        }
        latencies.sort();
        let (p50, p99, max) = percentiles(&latencies);
        println!("| {name} | {p50:.2} | {p99:.2} | {max:.2} |");
    }
    Ok(())
}

/// Opens `count` event streams, each following one operation that never
/// changes (as `opsqueue run --follow` does), and keeps them open (reading
/// what comes) until the returned handles are dropped.
async fn subscribe_followers(cluster: &Cluster, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let mut sender = connect(cluster).await;
        let path = format!("/api/v1/events?operation={}", uuid::Uuid::now_v7());
        let response = sender
            .send_request(get_request(cluster, &path))
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), 200, "the stream opens");
        tasks.push(tokio::spawn(async move {
            let _sender = sender;
            let mut body = response.into_body();
            while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
        }));
    }
    tasks
}

/// Section 9: the enqueue rate at 64 clients with `subscribers` event
/// streams open.
async fn enqueue_with_subscribers(subscribers: usize, secs: f64) -> anyhow::Result<f64> {
    let mut cluster = quiet_cluster();
    cluster.start_api();
    let streams = subscribe_followers(&cluster, subscribers).await;
    let load = enqueue_load(&cluster, 64, secs).await;
    for stream in streams {
        stream.abort();
    }
    Ok(load.rate)
}

struct Delivery {
    enqueued_rate: f64,
    delivered_rate: f64,
    /// Events received over events sent (readers × operations created).
    complete: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Section 10: `readers` streams of every `operation.created` while 16
/// clients enqueue for `secs`; events delivered per second over all
/// readers, and each event's delay from its commit time (`at`) to its
/// arrival.
async fn event_delivery(readers: usize, secs: f64) -> anyhow::Result<Delivery> {
    let mut cluster = quiet_cluster();
    cluster.start_api();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(readers);
    let stop = tokio_util::sync::CancellationToken::new();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..readers {
        let mut sender = connect(&cluster).await;
        let response = sender
            .send_request(get_request(
                &cluster,
                "/api/v1/events?type=operation.created",
            ))
            .await?;
        anyhow::ensure!(response.status() == 200, "the stream opens");
        let (stop, received) = (stop.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let _sender = sender;
            let mut body = response.into_body();
            let (mut events, mut delays, mut rest) = (0usize, Vec::new(), Vec::new());
            loop {
                let frame = tokio::select! {
                    _ = stop.cancelled() => break,
                    frame = http_body_util::BodyExt::frame(&mut body) => frame,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                rest.extend_from_slice(&data);
                let arrived = now();
                // Whole frames only; the commit time is the `at` of the data.
                while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = rest.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&frame);
                    if let Some(at) = text
                        .split("\"at\":\"")
                        .nth(1)
                        .and_then(|t| t.split('"').next())
                    {
                        events += 1;
                        received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Ok(at) = from_db(at) {
                            delays.push(Duration::from_micros(
                                (arrived - at).num_microseconds().unwrap_or(0).max(0) as u64,
                            ));
                        }
                    }
                }
            }
            (events, delays)
        }));
    }
    let load = enqueue_load(&cluster, 16, secs).await;
    let sent: i64 = cluster.sqlite().query_row(
        "SELECT count(*) FROM events WHERE type = 'operation.created'",
        [],
        |r| r.get(0),
    )?;
    // Let the readers catch up (for at most 10 s), then stop them.
    let expected = sent as usize * readers;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && received.load(std::sync::atomic::Ordering::Relaxed) < expected
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let elapsed = started.elapsed().as_secs_f64();
    let mut delivered = 0;
    let mut delays = Vec::new();
    for task in tasks {
        let (events, mut own) = task.await?;
        delivered += events;
        delays.append(&mut own);
    }
    delays.sort();
    let (p50, p99, _) = percentiles(&delays);
    Ok(Delivery {
        enqueued_rate: load.rate,
        delivered_rate: delivered as f64 / elapsed,
        complete: delivered as f64 / expected.max(1) as f64,
        p50_ms: p50,
        p99_ms: p99,
    })
}
