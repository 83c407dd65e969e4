//! opsqueue's worker: claims pending operations for its targets and
//! sources, executes them through drivers and records how each ended.
//!
//! - [`run`] is the whole process (open the store, or connect to the API in
//!   remote mode; register, claim loop until the shutdown token fires,
//!   drain, mark stopped); `main.rs` only parses the command line around it.
//! - [`Worker`] is the same thing in pieces for tests: [`Worker::start`]
//!   registers, [`Worker::run`] runs the claim loop, and [`Worker::step`]
//!   claims one batch and runs it to the end, deterministically.
//!
//! The same claim loop, executor, drivers and writer run beside the
//! database (local) and on another host (remote, `[worker] api_url`): only
//! the writer's backend and the store reads of drivers differ (`link`).
//!
//! Modules, from the top down: `claim` (the loop: slots, wake-ups,
//! heartbeats, cancel requests, shutdown), `executor` (one attempt and its
//! outcome), `drivers` (the registry and one module per family, over
//! `drivers/driver.rs`), `context` (what a driver gets), `runner` (the one
//! command runner), `writer` (every write this process makes, in batches),
//! `link` (where the store is: the database, or the API), `remote` (the
//! API's client in remote mode), `facts` (this host's facts for
//! heartbeats); `state` holds what tasks share.
//!
//! Invariant: this process writes about an operation only while it holds the
//! operation's fence `(id, worker_id, attempt, status = running)`; every such
//! write goes through the writer and is conditional on it.

mod claim;
pub mod context;
pub mod drivers;
pub mod executor;
mod facts;
pub mod link;
mod remote;
pub mod runner;
mod state;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use opsqueue_shared::process::{ProcessIdentity, hostname};
use opsqueue_shared::store::{NewWorker, StoreError, WorkerWrite, WorkerWritten};
use opsqueue_shared::wake::Waker;
use opsqueue_shared::{Config, Store};
use tokio_util::sync::CancellationToken;

pub use context::{Context, StopReason};
pub use drivers::Registry;
pub use drivers::driver::{Driver, DriverError, Outcome, Probe};
pub use executor::{Ended, Ran};
pub use link::Link;
pub use runner::{CommandOutput, CommandSpec, ExitInfo, RunError};

use state::Shared;
use writer::{Settings, Writer};

/// Runs a worker until `shutdown` fires, then drains (see [`Worker::run`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let link = connect(&config).await?;
    let worker = Worker::start(config, link).await?;
    worker.run(shutdown).await
}

/// The worker's store: the API in remote mode (`[worker] api_url`), else
/// the database beside it.
pub async fn connect(config: &Config) -> anyhow::Result<Link> {
    if config.worker.is_remote() {
        let agent = remote::Agent::from_config(&config.worker)?;
        tracing::info!(api = %agent.base(), "remote mode: pulling work from the API");
        return Ok(Link::Remote(Arc::new(agent)));
    }
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
    Ok(Link::Local(store))
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
    pub async fn start(config: Config, link: impl Into<Link>) -> anyhow::Result<Worker> {
        let link = link.into();
        let drivers = Registry::from_config(&config, &link).context("cannot set up the drivers")?;
        Self::with_drivers(config, link, drivers).await
    }

    /// Registers a worker with these drivers (tests swap in their own).
    pub async fn with_drivers(
        config: Config,
        link: impl Into<Link>,
        drivers: Registry,
    ) -> anyhow::Result<Worker> {
        let id = config.worker.id.clone().unwrap_or_else(default_id);
        let identity = ProcessIdentity::current().context("cannot read this process's identity")?;
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
                lease_secs: config.worker.lease_secs,
                agent_key_id: None,
            },
            log_cap: config.database.log_cap_bytes,
            shutdown: shutdown.clone(),
        };
        let writer = match link.into() {
            Link::Local(store) => {
                let wake_dir = config.database.wake_dir();
                let waker = Waker::new(&wake_dir).with_context(|| {
                    format!("cannot use the wake-up directory {}", wake_dir.display())
                })?;
                Writer::local(&store, settings, Arc::new(waker))
                    .context("cannot start the writer")?
            }
            Link::Remote(agent) => Writer::remote(agent, settings),
        };
        let facts = Some(facts::collect(&config.worker.data_paths));
        writer
            .submit(WorkerWrite::Register { facts })
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
            .submit(WorkerWrite::Claim {
                limit,
                cancels: false,
            })
            .await?
        {
            WorkerWritten::Claimed { operations, .. } => operations,
            other => {
                return Err(StoreError::Task(format!(
                    "unexpected answer {} to a claim",
                    other.name()
                )));
            }
        };
        self.shared.rounds.fetch_add(1, Ordering::SeqCst);
        let tasks: Vec<_> = ops
            .into_iter()
            .map(|op| {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    executor::run_attempt(&shared, op.0, Arc::default(), false)
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
