//! SQL for `api_keys`, and the tokens themselves. A token is `oq_` and 64
//! hex digits of randomness; only its sha256 is stored (a fast hash is right
//! for a random 256-bit secret: there is nothing to brute-force). Scopes nest:
//! `admin` implies `write`, which implies `read`. `agent` stands apart: it
//! implies nothing and nothing implies it; an agent key is bound to its
//! targets and runs their work (a worker on another host) and nothing else.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{Connection, named_params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Result, json_column, time_column};
use crate::operation::hex;
use crate::time::{Timestamp, to_db};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    /// A remote worker's key: claims, heartbeats, logs, progress, finishes
    /// and observations for its own targets only.
    Agent,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Agent => "agent",
        }
    }

    /// Whether holding `self` grants `needed`: read, write and admin nest;
    /// agent only grants agent.
    pub fn grants(self, needed: Scope) -> bool {
        match (self, needed) {
            (Scope::Agent, Scope::Agent) => true,
            (Scope::Agent, _) | (_, Scope::Agent) => false,
            (held, needed) => held >= needed,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            "agent" => Ok(Scope::Agent),
            other => Err(format!(
                "unknown scope {other:?}: expected read, write, admin or agent"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Operations made with this key carry this source.
    pub source: Option<String>,
    /// An agent key's targets (empty for any other key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key grants `needed` (see [`Scope::grants`]).
    pub fn allows(&self, needed: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.iter().any(|s| s.grants(needed))
    }

    pub fn is_agent(&self) -> bool {
        self.scopes.contains(&Scope::Agent)
    }

    /// Whether this is an agent key bound to `target`.
    pub fn serves(&self, target: &str) -> bool {
        self.is_agent() && self.targets.iter().any(|t| t == target)
    }
}

pub fn token_generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("oq_{}", hex(&bytes))
}

pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The columns `key_from_row` reads, in its order.
pub(crate) const KEY_COLUMNS: &str =
    "id, name, scopes, source, created_at, last_used_at, revoked_at, targets";

pub(crate) fn key_from_row(row: &rusqlite::Row) -> Result<ApiKey> {
    let scopes: String = row.get(2)?;
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect(),
        source: row.get(3)?,
        created_at: time_column(Some(row.get(4)?), "created_at")?.expect("some"),
        last_used_at: time_column(row.get(5)?, "last_used_at")?,
        revoked_at: time_column(row.get(6)?, "revoked_at")?,
        targets: json_column(row.get(7)?, "targets")?.unwrap_or_default(),
    })
}

/// What a new key may do.
#[derive(Debug, Clone, Default)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub scopes: &'a [Scope],
    /// Operations made with the key carry this source.
    pub source: Option<&'a str>,
    /// An agent key's targets.
    pub targets: &'a [String],
}

/// Stores a new key for `token` (made by [`token_generate`]).
pub fn api_key_insert(
    conn: &Connection,
    key: &NewKey,
    token: &str,
    now: Timestamp,
) -> Result<ApiKey> {
    let scopes_text: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    let targets = (!key.targets.is_empty())
        .then(|| serde_json::to_string(key.targets).expect("strings serialize"));
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO api_keys (id, name, token_hash, scopes, source, targets, created_at)
         VALUES (:id, :name, :hash, :scopes, :source, :targets, :now) RETURNING {KEY_COLUMNS}"
    ))?;
    let mut rows = stmt.query(named_params! {
        ":id": uuid::Uuid::now_v7().to_string(),
        ":name": key.name,
        ":hash": token_hash(token),
        ":scopes": scopes_text.join(" "),
        ":source": key.source,
        ":targets": targets,
        ":now": to_db(now),
    })?;
    key_from_row(rows.next()?.expect("RETURNING gives the row"))
}

/// The key a token belongs to, revoked or not.
pub fn api_key_find(conn: &Connection, token: &str) -> Result<Option<ApiKey>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE token_hash = ?1"
    ))?;
    let mut rows = stmt.query([token_hash(token)])?;
    rows.next()?.map(key_from_row).transpose()
}

pub fn api_key_list(conn: &Connection) -> Result<Vec<ApiKey>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
    ))?;
    let mut rows = stmt.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(key_from_row(row)?);
    }
    Ok(keys)
}

/// Revokes by id or by name; returns how many keys it revoked.
pub fn api_key_revoke(conn: &Connection, id_or_name: &str, now: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = ?1
             WHERE (id = ?2 OR name = ?2) AND revoked_at IS NULL",
        )?
        .execute([to_db(now), id_or_name.to_owned()])?)
}

pub fn api_key_touch(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2")?
        .execute([to_db(now), id.to_owned()])?;
    Ok(())
}

pub fn api_key_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?)
}
