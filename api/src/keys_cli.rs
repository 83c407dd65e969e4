//! `opsqueue-api keys create|list|revoke`: API key management straight on
//! the database, for the operator on the host (no HTTP, no key needed).
//!
//! `create` prints the new token once, on the last line of its output, so
//! scripts can take it with `tail -n1`; only its sha256 is stored. Names are
//! labels and unique among keys that are not revoked.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use opsqueue_shared::Store;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{
    ApiKey, Scope, api_key_insert, api_key_list, api_key_revoke, token_generate,
};

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (on the last line).
    Create {
        /// A label naming the key, unique among keys not revoked.
        #[arg(long)]
        name: String,
        /// read, write or admin (admin ⊃ write ⊃ read); repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Operations made with this key carry this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// List keys (never their tokens).
    List,
    /// Revoke every active key with this id or name.
    Revoke { id_or_name: String },
}

pub fn run(store: &Store, command: KeysCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            source,
        } => create(store, &name, &scopes, source.as_deref(), out),
        KeysCommand::List => list(store, out),
        KeysCommand::Revoke { id_or_name } => revoke(store, &id_or_name, out),
    }
}

fn create(
    store: &Store,
    name: &str,
    scopes: &[Scope],
    source: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let name = Label::parse(name).context("--name")?;
    let source = source.map(Label::parse).transpose().context("--source")?;
    let token = token_generate();
    let key = store.write(|tx| {
        let taken = api_key_list(tx)?
            .iter()
            .any(|k| k.name == name.as_str() && k.revoked_at.is_none());
        if taken {
            return Ok(None);
        }
        let source = source.as_ref().map(Label::as_str);
        api_key_insert(
            tx,
            name.as_str(),
            scopes,
            source,
            &token,
            opsqueue_shared::time::now(),
        )
        .map(Some)
    })?;
    let Some(key) = key else {
        bail!("an active key named {:?} already exists", name.as_str());
    };
    writeln!(
        out,
        "created key {} (id {}, scopes {}, source {})",
        key.name,
        key.id,
        scope_list(&key),
        key.source.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "the token is shown only now; store it safely:")?;
    writeln!(out, "{token}")?;
    Ok(())
}

fn scope_list(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn list(store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(out, "ID\tNAME\tSCOPES\tSOURCE\tCREATED\tLAST USED\tREVOKED")?;
    for key in store.read(api_key_list)? {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            key.id,
            key.name,
            scope_list(&key),
            key.source.as_deref().unwrap_or("-"),
            time(Some(key.created_at)),
            time(key.last_used_at),
            time(key.revoked_at),
        )?;
    }
    Ok(())
}

fn revoke(store: &Store, id_or_name: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let now = opsqueue_shared::time::now();
    let revoked = store.write(|tx| api_key_revoke(tx, id_or_name, now))?;
    if revoked == 0 {
        bail!("no active key has the id or name {id_or_name:?}");
    }
    writeln!(out, "revoked {revoked} key(s) matching {id_or_name:?}")?;
    Ok(())
}
