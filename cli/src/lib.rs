//! `opsqueue`, the client for people at a terminal and for CI pipelines. It
//! speaks only the public HTTP API (`/api/v1/…`): it fires operations (any
//! type with `run`, the common ones with the family shortcuts), waits for
//! them or follows their logs, lists, cancels and retries them.
//!
//! Layout: `args` declares the command line (clap), `commands` runs each
//! command, `client` is the HTTP client, `config` finds the URL and key,
//! `watch` and `feed` wait for operations, `output` prints tables and JSON,
//! `error` and `exit` decide what a failure looks like and which code the
//! process ends with. [`main`] ties them together: usage errors (clap's
//! own included) exit 64, every other error is printed as the API's problem
//! (title, detail, field errors) and exits with its code.

pub mod args;
mod client;
mod commands;
mod config;
mod error;
pub mod exit;
mod feed;
mod fields;
mod output;
mod watch;

use clap::Parser as _;
use clap::error::ErrorKind;

use crate::args::Cli;
use crate::exit::Exit;
use crate::output::Ui;

/// Runs the command line of this process; the exit code to end with.
pub fn main() -> std::process::ExitCode {
    // A closed pipe (`opsqueue ops ls | head -1`) ends the process quietly,
    // as it does for other Unix tools, instead of a panic in println!.
    // SAFETY: setting a signal's disposition to the default, at start-up,
    // before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Completed,
                _ => Exit::Usage,
            }
            .into();
        }
    };
    let ui = Ui::detect(cli.global.output);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return Exit::Unreachable.into();
        }
    };
    let exit = match runtime.block_on(commands::dispatch(cli, ui)) {
        Ok(exit) => exit,
        Err(error) => {
            ui.error(&error);
            error.exit()
        }
    };
    exit.into()
}
