//! SQL for `api_keys`, and the tokens themselves. A token is `oq_` and 64
//! hex digits of randomness; only its sha256 is stored (a fast hash is right
//! for a random 256-bit secret: there is nothing to brute-force). Scopes nest:
//! `admin` implies `write`, which implies `read`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{Connection, named_params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Result, time_column};
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
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
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
            other => Err(format!(
                "unknown scope {other:?}: expected read, write or admin"
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
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key grants `needed` (scopes nest: admin ⊃ write ⊃ read).
    pub fn allows(&self, needed: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.iter().any(|s| *s >= needed)
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
    "id, name, scopes, source, created_at, last_used_at, revoked_at";

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
    })
}

/// Stores a new key for `token` (made by [`token_generate`]).
pub fn api_key_insert(
    conn: &Connection,
    name: &str,
    scopes: &[Scope],
    source: Option<&str>,
    token: &str,
    now: Timestamp,
) -> Result<ApiKey> {
    let scopes_text: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO api_keys (id, name, token_hash, scopes, source, created_at)
         VALUES (:id, :name, :hash, :scopes, :source, :now) RETURNING {KEY_COLUMNS}"
    ))?;
    let mut rows = stmt.query(named_params! {
        ":id": uuid::Uuid::now_v7().to_string(),
        ":name": name,
        ":hash": token_hash(token),
        ":scopes": scopes_text.join(" "),
        ":source": source,
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
