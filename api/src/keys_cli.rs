//! `opsqueue-api keys create|list|revoke`: API key management straight on
//! the database, for the operator on the host (no HTTP, no key needed).
//!
//! `create` prints the new token once, on the last line of its output, so
//! scripts can take it with `tail -n1`; only its sha256 is stored. Names are
//! labels and unique among keys that are not revoked. An agent key (for a
//! worker on another host) has the scope `agent` alone and names the
//! targets it serves: `--scope agent --target web-2`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use opsqueue_shared::Store;
use opsqueue_shared::names::Label;
use opsqueue_shared::store::{
    ApiKey, NewKey, Scope, api_key_insert, api_key_list, api_key_revoke, token_generate,
};

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (on the last line).
    Create {
        /// A label naming the key, unique among keys not revoked.
        #[arg(long)]
        name: String,
        /// read, write or admin (admin ⊃ write ⊃ read), repeatable; or
        /// agent alone (a remote worker's key, with --target).
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Operations made with this key carry this source.
        #[arg(long)]
        source: Option<String>,
        /// A target an agent key serves; repeatable.
        #[arg(long = "target")]
        targets: Vec<String>,
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
            targets,
        } => create(store, &name, &scopes, source.as_deref(), &targets, out),
        KeysCommand::List => list(store, out),
        KeysCommand::Revoke { id_or_name } => revoke(store, &id_or_name, out),
    }
}

fn create(
    store: &Store,
    name: &str,
    scopes: &[Scope],
    source: Option<&str>,
    targets: &[String],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let name = Label::parse(name).context("--name")?;
    let source = source.map(Label::parse).transpose().context("--source")?;
    let mut parsed = Vec::new();
    for target in targets {
        parsed.push(Label::parse(target).context("--target")?.to_string());
    }
    parsed.sort();
    parsed.dedup();
    let agent = scopes.contains(&Scope::Agent);
    if agent && scopes.iter().any(|s| *s != Scope::Agent) {
        bail!("--scope agent stands alone: an agent key can do nothing but run its targets' work");
    }
    if agent && parsed.is_empty() {
        bail!("an agent key needs the targets it serves: --target NAME (repeatable)");
    }
    if !agent && !parsed.is_empty() {
        bail!("--target is for agent keys (--scope agent)");
    }
    if agent && source.is_some() {
        bail!("--source is for keys that enqueue; an agent key enqueues nothing");
    }
    let token = token_generate();
    let key = store.write(|tx| {
        let taken = api_key_list(tx)?
            .iter()
            .any(|k| k.name == name.as_str() && k.revoked_at.is_none());
        if taken {
            return Ok(None);
        }
        let key = NewKey {
            name: name.as_str(),
            scopes,
            source: source.as_ref().map(Label::as_str),
            targets: &parsed,
        };
        api_key_insert(tx, &key, &token, opsqueue_shared::time::now()).map(Some)
    })?;
    let Some(key) = key else {
        bail!("an active key named {:?} already exists", name.as_str());
    };
    writeln!(
        out,
        "created key {} (id {}, scopes {}, source {}{})",
        key.name,
        key.id,
        scope_list(&key),
        key.source.as_deref().unwrap_or("-"),
        if key.targets.is_empty() {
            String::new()
        } else {
            format!(", targets {}", key.targets.join(","))
        }
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
