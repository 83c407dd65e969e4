use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use opsqueue_shared::{Config, shutdown, telemetry};

/// opsqueue's monitor: reaps lost and timed-out operations, fires schedules
/// and prunes history.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (every key can also be set as OPSQUEUE_SECTION__KEY).
    #[arg(long, env = "OPSQUEUE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    telemetry::init(&config.log);
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    opsqueue_monitor::run(config, shutdown).await
}
