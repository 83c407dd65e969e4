//! opsqueue's worker: claims pending operations for its targets and
//! sources, executes them through drivers and records how each ended.
//!
//! - [`run`] is the whole process (open the store, register, claim loop until
//!   the shutdown token fires, drain, mark stopped); `main.rs` only parses
//!   the command line around it.
//! - [`Worker`] is the same thing in pieces for tests: [`Worker::start`]
//!   registers, [`Worker::run`] runs the claim loop, and [`Worker::step`]
//!   claims one batch and runs it to the end, deterministically.
//!
//! Modules: `claim` (the loop: slots, wake-ups, heartbeats, cancel
//! requests, shutdown), `executor` (one attempt and its outcome), `drivers`
//! (the seam and one module per family), `runner` (the one command runner),
//! `context` (what a driver gets), `writer` (group commit of every write this
//! process makes).
//!
//! Invariant: this process writes about an operation only while it holds the
//! operation's fence `(id, worker_id, attempt, status = running)`; every such
//! write goes through the writer and is conditional on it.

mod claim;
pub mod context;
pub mod drivers;
pub mod executor;
pub mod runner;
mod state;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use opsqueue_shared::process::{ProcessIdentity, hostname};
use opsqueue_shared::store::{NewWorker, StoreError};
use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Config, Store};
use tokio_util::sync::CancellationToken;

pub use context::{Context, StopReason};
pub use drivers::Registry;
pub use drivers::driver::{Driver, DriverError, Outcome, Probe};
pub use executor::{Ended, Ran};
pub use runner::{CommandOutput, CommandSpec, ExitInfo, RunError};

use state::Shared;
use writer::{Settings, Write, Writer, Written};

/// Runs a worker until `shutdown` fires, then drains (see [`Worker::run`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let database = config.database.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&database))
        .await
        .context("opening the database panicked")?
        .with_context(|| {
            format!(
                "cannot open the database {}",
                config.database.path.display()
            )
        })?;
    let worker = Worker::start(config, store).await?;
    worker.run(shutdown).await
}

/// What [`Worker::step`] did: the attempts it claimed, in claim order.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub ran: Vec<Ran>,
}

/// A registered worker; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .finish()
    }
}

fn default_id() -> String {
    format!(
        "{}-{}-{:06x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl Worker {
    /// Registers a worker with the drivers its configuration enables.
    pub async fn start(config: Config, store: Store) -> anyhow::Result<Worker> {
        let drivers =
            Registry::from_config(&config, &store).context("cannot set up the drivers")?;
        Self::with_drivers(config, store, drivers).await
    }

    /// Registers a worker with these drivers (tests swap in their own).
    pub async fn with_drivers(
        config: Config,
        store: Store,
        drivers: Registry,
    ) -> anyhow::Result<Worker> {
        let id = config.worker.id.clone().unwrap_or_else(default_id);
        let identity = ProcessIdentity::current().context("cannot read this process's identity")?;
        let wake_dir = config.database.wake_dir();
        let waker = Waker::new(&wake_dir)
            .with_context(|| format!("cannot use the wake-up directory {}", wake_dir.display()))?;
        let shutdown = Arc::new(OnceLock::new());
        let settings = Settings {
            registration: NewWorker {
                id: id.clone(),
                identity,
                version: opsqueue_shared::VERSION.to_owned(),
                drivers: drivers.families(),
                targets: config.worker.targets.clone(),
                sources: config.worker.sources.clone(),
                concurrency: config.worker.concurrency,
            },
            lease: Duration::from_secs(config.worker.lease_secs),
            log_cap: config.database.log_cap_bytes,
            shutdown: shutdown.clone(),
        };
        let writer =
            Writer::spawn(&store, settings, Arc::new(waker)).context("cannot start the writer")?;
        writer
            .submit(Write::Register)
            .await
            .context("cannot register the worker")?;
        let config = Arc::new(config);
        for (family, answer) in drivers
            .probe_all(&Context::detached(config.clone(), "probe"))
            .await
        {
            match answer {
                Ok(found) => tracing::info!(family, %found, "driver ready"),
                Err(e) => tracing::warn!(family, error = %e, "driver probe failed"),
            }
        }
        Ok(Worker {
            shared: Arc::new(Shared {
                id,
                config,
                drivers,
                writer,
                rounds: AtomicU64::new(0),
                shutdown,
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// How many claim transactions the loop has made (tests wait on it to
    /// know the worker is idle).
    pub fn claim_rounds(&self) -> u64 {
        self.shared.rounds.load(Ordering::SeqCst)
    }

    /// Claims up to `concurrency` operations in one transaction and runs them
    /// all to the end (their finishes committed). No heartbeats and no
    /// cancel requests: for tests, with operations shorter than the lease.
    pub async fn step(&self) -> Result<Step, StoreError> {
        let limit = self.shared.config.worker.concurrency;
        let ops = match self
            .shared
            .writer
            .submit(Write::Claim {
                limit,
                cancels: false,
            })
            .await?
        {
            Written::Claimed { ops, .. } => ops,
            other => return Err(StoreError::Task(format!("unexpected answer {other:?}"))),
        };
        self.shared.rounds.fetch_add(1, Ordering::SeqCst);
        let tasks: Vec<_> = ops
            .into_iter()
            .map(|op| {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    executor::run_attempt(&shared, op, Arc::default(), false)
                        .await
                        .ran
                })
            })
            .collect();
        let mut step = Step::default();
        for task in tasks {
            match task.await {
                Ok(ran) => step.ran.push(ran),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(StoreError::Task(e.to_string())),
            }
        }
        Ok(step)
    }

    /// The claim loop until `shutdown` fires; then no new claims, running
    /// operations get `shutdown_grace_secs` to finish, the rest are stopped
    /// and handed back, and the worker is marked stopped. Returns Ok on a
    /// clean shutdown. Runs once per `Worker`.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        claim::run(self.shared.clone(), shutdown).await
    }
}
