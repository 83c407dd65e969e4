//! `opsqueue login`: checks a URL and key against the API (one read), then
//! stores them in the config file, mode 0600 (see `config.rs`). The key
//! comes from `--token-file`, `--token` or `OPSQUEUE_TOKEN`, never typed
//! into the config by hand.

use crate::args::{Global, LoginArgs};
use crate::client::{Client, Request};
use crate::config::{self, Connection, FileConfig};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::Ui;

pub async fn login(global: &Global, args: &LoginArgs, ui: &Ui) -> Result<Exit, CliError> {
    let given = config::from_flags_and_env(global)?;
    let url = given
        .url
        .ok_or_else(|| CliError::usage("login needs --url (or OPSQUEUE_URL)"))?;
    let token = given.token.ok_or_else(|| {
        CliError::usage("login needs --token-file FILE (or --token, or OPSQUEUE_TOKEN)")
    })?;
    let ca_cert = match given.ca_cert {
        Some(path) => Some(
            std::fs::canonicalize(&path)
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let connection = Connection {
        url: url.trim_end_matches('/').to_owned(),
        token: Some(token),
        ca_cert,
    };
    let client = Client::new(&connection)?;
    if !args.no_check {
        client
            .json(&Request::get(&["operations"]).query("limit", 1))
            .await?;
    }
    let path = config::config_path()?;
    config::write_file(
        &path,
        &FileConfig {
            url: Some(connection.url.clone()),
            token: connection.token,
            ca_cert: connection.ca_cert,
        },
    )?;
    if !ui.json() {
        println!(
            "logged in to {}; wrote {} (mode 0600)",
            connection.url,
            path.display()
        );
    }
    Ok(Exit::Completed)
}
