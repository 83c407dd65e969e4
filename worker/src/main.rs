//! `opsqueue-worker`: loads the configuration, starts tracing and runs the
//! worker until SIGTERM or SIGINT; everything else is in the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use opsqueue_shared::{Config, shutdown, telemetry};

/// Claims opsqueue operations and executes them on this host.
#[derive(Debug, Parser)]
#[command(name = "opsqueue-worker", version)]
struct Args {
    /// TOML configuration file; without it, defaults plus OPSQUEUE_* variables.
    #[arg(long, env = "OPSQUEUE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).context("cannot load the configuration")?;
    telemetry::init(&config.log);
    let shutdown = shutdown::on_signals().context("cannot install signal handlers")?;
    opsqueue_worker::run(config, shutdown).await
}
