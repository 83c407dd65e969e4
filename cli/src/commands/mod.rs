//! The commands, one module per group, and [`dispatch`], which runs the one
//! the command line names. Each returns the [`Exit`] the process ends with;
//! errors travel up as [`CliError`] and `lib.rs` prints them.
//!
//! Every command that fires an operation goes through [`fire`], so `run`,
//! the family shortcuts and `ops retry` print, wait and follow alike.

mod caddy;
mod fire;
mod lists;
mod login;
mod ops;
mod pm2;
mod proxmox;
mod run;
mod systemd;
mod workflow;

use clap::CommandFactory as _;
use serde_json::Value;

use crate::args::{Cli, Command, CompletionShell, Global};
use crate::client::Client;
use crate::config::Connection;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{Ui, text};

/// What every command that talks to the API needs.
pub struct Ctx {
    pub client: Client,
    pub ui: Ui,
}

impl Ctx {
    fn connect(global: &Global, ui: Ui) -> Result<Self, CliError> {
        let connection = Connection::resolve(global)?;
        Ok(Self {
            client: Client::new(&connection)?,
            ui,
        })
    }
}

pub async fn dispatch(cli: Cli, ui: Ui) -> Result<Exit, CliError> {
    match cli.command {
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Login(args) => login::login(&cli.global, &args, &ui).await,
        command => {
            let ctx = Ctx::connect(&cli.global, ui)?;
            match command {
                Command::Run(args) => run::run(&ctx, args).await,
                Command::Ops { command } => ops::ops(&ctx, command).await,
                Command::Workflow { command } => workflow::workflow(&ctx, command).await,
                Command::Targets { command } => lists::targets(&ctx, command).await,
                Command::Schedules { command } => lists::schedules(&ctx, command).await,
                Command::Pm2 { command } => pm2::pm2(&ctx, command).await,
                Command::Systemd { command } => systemd::systemd(&ctx, command).await,
                Command::Caddy { command } => caddy::caddy(&ctx, command).await,
                Command::Proxmox { command } => proxmox::proxmox(&ctx, command).await,
                Command::Completions { .. } | Command::Login(_) => unreachable!("handled above"),
            }
        }
    }
}

fn completions(shell: CompletionShell) -> Exit {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "opsqueue",
        &mut std::io::stdout(),
    );
    Exit::Completed
}

/// A typed route's observed read (`GET /api/v1/<segments…>?target=`).
async fn observed(ctx: &Ctx, segments: &[&str], target: Option<&str>) -> Result<Value, CliError> {
    ctx.client
        .json(&crate::client::Request::get(segments).query_opt("target", target))
        .await
}

/// A list answer (`{items: […]}`) as a table: its JSON with `--output
/// json`, `empty` on stderr when it has no items, else one row per item.
fn print_list(
    ctx: &Ctx,
    list: &Value,
    empty: &str,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<comfy_table::Cell>,
) {
    if ctx.ui.json() {
        ctx.ui.print_json(list);
        return;
    }
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        eprintln!("{empty}");
        return;
    }
    let mut table = ctx.ui.table(header);
    for item in &items {
        table.add_row(row(item));
    }
    ctx.ui.print_table(table);
}

/// `5m ago`, or `never` for a time not set.
fn ago(value: &Value) -> String {
    match crate::output::age(value) {
        age if age.is_empty() => "never".to_owned(),
        age => format!("{age} ago"),
    }
}

/// An object's fields as `key: value` lines (nested values as compact
/// JSON), or the object itself with `--output json`.
fn print_object(ui: &Ui, value: &Value) {
    if ui.json() {
        ui.print_json(value);
        return;
    }
    let Some(fields) = value.as_object() else {
        println!("{}", text(value));
        return;
    };
    let rows: Vec<(&str, String)> = fields
        .iter()
        .map(|(key, value)| (key.as_str(), cell(value)))
        .collect();
    ui.print_fields(&rows);
}

/// A value in one table cell: strings bare, lists of strings joined,
/// anything else compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        }
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => text(other),
    }
}
