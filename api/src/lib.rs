//! opsqueue's HTTP API (`opsqueue-api`). It validates requests into typed
//! actions, stores and reads operations, and never touches the host: it
//! needs nothing but the database file (and the wake-up directory beside
//! it), so it can run as an unprivileged user.
//!
//! [`Application::build`] opens the store, creates the first admin key if
//! there is none, binds the listener (port 0 picks a free one) and starts
//! the server, over HTTPS when `[api] tls_cert` and `tls_key` are set
//! (remote workers cross a network); [`Application::run_until`] serves
//! until a shutdown token is cancelled, then stops gracefully: long-polls
//! answer at once, in-flight requests finish.
//!
//! Modules, from the top down: `routes/*` (the hand-written handlers, the
//! agent protocol and the targets registry among them) and `typed` (every
//! family's typed routes, from their tables), `openapi` (the document of
//! both), `enqueue` (parsing a request into an operation), `observed` and
//! `managed` (reads of observed host state), `ui` (the dashboard's pages),
//! `log_follow` and `events` (the event stream's fan-out) over `sse` (the
//! framing), `auth` and `rate_limit` (one middleware), `long_poll`, `state`
//! (what handlers share), `enqueuer` and `agent_writer` (group commit of new
//! operations, and of remote workers' batches), `problem` (the one error
//! type), `metrics` (Prometheus text), `admin_key` (first start) and
//! `keys_cli` (`opsqueue-api keys …`).

pub mod admin_key;
pub mod agent_writer;
pub mod auth;
pub mod enqueue;
pub mod enqueuer;
pub mod events;
pub mod keys_cli;
pub mod log_follow;
pub mod long_poll;
pub mod managed;
pub mod metrics;
pub mod observed;
pub mod openapi;
pub mod params;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod sse;
pub mod state;
pub mod typed;
pub mod ui;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use opsqueue_shared::wake::{Role, WakeListener, Waker};
use opsqueue_shared::{Config, Store};
use tokio_util::sync::CancellationToken;

use crate::agent_writer::AgentWriter;
use crate::enqueuer::Enqueuer;
use crate::events::Hub;
use crate::long_poll::Notifier;
use crate::openapi::Document;
use crate::rate_limit::RateLimits;
use crate::state::AppState;

/// How long a stopping server gives in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    server: Server,
    address: SocketAddr,
    tls: bool,
    state: web::Data<AppState>,
    wake_listener: WakeListener,
    work_listener: WakeListener,
}

impl Application {
    /// Opens the store, ensures a first admin key, binds `[api] bind` and
    /// starts serving. Must be called inside a tokio runtime.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::open(&config.database).with_context(|| {
            format!(
                "cannot open the database {}",
                config.database.path.display()
            )
        })?;
        let admin_key_file = config.admin_key_file();
        let first = store.clone();
        tokio::task::spawn_blocking(move || {
            admin_key::ensure_first_admin_key(&first, &admin_key_file)
        })
        .await
        .context("the first-key task failed")??;

        let wake_dir = config.database.wake_dir();
        let waker =
            Arc::new(Waker::new(&wake_dir).with_context(|| {
                format!("cannot use the wake directory {}", wake_dir.display())
            })?);
        let wake_listener = WakeListener::bind(&wake_dir, Role::Api)
            .with_context(|| format!("cannot bind a wake-up socket in {}", wake_dir.display()))?;
        // New work and cancel requests, for remote workers' waiting claims.
        let work_listener = WakeListener::bind(&wake_dir, Role::Worker)
            .with_context(|| format!("cannot bind a wake-up socket in {}", wake_dir.display()))?;
        let enqueuer =
            Enqueuer::spawn(&store, waker.clone()).context("cannot start the enqueue writer")?;
        let agents = AgentWriter::spawn(&store, waker.clone(), config.database.log_cap_bytes)
            .context("cannot start the agents' writer")?;
        let tls = match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |path: &std::path::Path, what: &str| {
                    std::fs::read(path)
                        .with_context(|| format!("cannot read api.{what} {}", path.display()))
                };
                let server =
                    opsqueue_tls::server_config(&read(cert, "tls_cert")?, &read(key, "tls_key")?)
                        .map_err(|e| anyhow::anyhow!("api.tls_cert and api.tls_key: {e}"))?;
                Some(server)
            }
            _ => None,
        };

        let body_limit = config.api.body_limit_bytes;
        let state = web::Data::new(AppState {
            store,
            enqueuer,
            waker,
            notifier: Notifier::new(),
            agents,
            work: Notifier::new(),
            stopping_agents: Default::default(),
            events: Hub::new(),
            limits: RateLimits::new(&config.api.rate_limit),
            key_touches: Default::default(),
            config: config.clone(),
            stopping: CancellationToken::new(),
        });

        let (typed_paths, typed_schemas) = typed::openapi_paths();
        let document = web::Data::new(Document::build(
            <routes::HandWritten as utoipa::OpenApi>::openapi(),
            typed_paths,
            typed_schemas,
        ));

        let listener = TcpListener::bind(&config.api.bind)
            .with_context(|| format!("cannot listen on {}", config.api.bind))?;
        let address = listener.local_addr()?;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(document.clone())
                .app_data(problem::json_config(body_limit))
                .app_data(problem::query_config())
                .app_data(problem::path_config())
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap(from_fn(auth::authenticate))
                .wrap(ErrorHandlers::new().default_handler(problem::as_problem))
                .configure(routes::configure)
                .configure(typed::configure)
                .configure(ui::configure)
                .default_service(web::to(routes::no_route))
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs());
        if let Some(workers) = config.api.http_workers {
            server = server.workers(workers.max(1));
        }
        let served_tls = tls.is_some();
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Application {
            server,
            address,
            tls: served_tls,
            state,
            wake_listener,
            work_listener,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://ADDRESS` when serving TLS, else `http://ADDRESS`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `shutdown` is cancelled (or the server fails), then
    /// stops gracefully.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            server,
            state,
            wake_listener,
            work_listener,
            ..
        } = self;
        let stopping = state.stopping.clone();
        let background = tokio::spawn(long_poll::listen(
            wake_listener,
            state.notifier.clone(),
            stopping.clone(),
        ));
        let work = tokio::spawn(long_poll::listen(
            work_listener,
            state.work.clone(),
            stopping.clone(),
        ));
        let hub = tokio::spawn(state.events.clone().run(
            state.store.clone(),
            state.notifier.clone(),
            stopping.clone(),
        ));
        let forget = {
            let (state, stopping) = (state.clone(), stopping.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = tokio::time::sleep(rate_limit::FORGET_IDLE_EVERY) => state.limits.forget_idle(),
                    }
                }
            })
        };
        let handle = server.handle();
        let stopper = {
            let stopping = stopping.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!("stopping the API");
                stopping.cancel();
                handle.stop(true).await;
            })
        };
        let served = server.await;
        stopping.cancel();
        stopper.abort();
        let _ = background.await;
        let _ = work.await;
        let _ = hub.await;
        let _ = forget.await;
        served.context("the HTTP server failed")
    }
}
