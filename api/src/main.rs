//! `opsqueue-api`: serves the HTTP API, or manages API keys
//! (`opsqueue-api keys create|list|revoke`). Configuration: `--config PATH`
//! or `OPSQUEUE_CONFIG`, then `OPSQUEUE_*` variables; no file is needed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opsqueue_api::Application;
use opsqueue_api::keys_cli::{self, KeysCommand};
use opsqueue_shared::{Config, Store, shutdown, systemd, telemetry};

#[derive(Debug, Parser)]
#[command(name = "opsqueue-api", version, about = "opsqueue's HTTP API")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "OPSQUEUE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("cannot load the configuration")?;
    telemetry::init(&config.log);
    match cli.command {
        Some(Command::Keys(command)) => {
            let store = Store::open(&config.database).with_context(|| {
                format!(
                    "cannot open the database {}",
                    config.database.path.display()
                )
            })?;
            keys_cli::run(&store, command, &mut std::io::stdout().lock())
        }
        None => serve(config),
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "opsqueue-api listening on {}", app.url())?;
    stdout.flush()?;
    drop(stdout);
    let shutdown = shutdown::on_signals()?;
    systemd::ready(&format!("listening on {}", app.url()));
    app.run_until(shutdown).await
}
