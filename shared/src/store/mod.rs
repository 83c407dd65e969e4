//! The store: the one SQLite database every process shares, and the only
//! place SQL lives. Functions are named table-first (`operation_insert`,
//! `operation_claim`, `worker_heartbeat`, …) and take a `&Connection`, so a
//! caller can put several into one transaction.
//!
//! Invariants:
//! - Every connection runs in WAL mode with `synchronous = FULL` (a commit is
//!   on disk before it returns, so an accepted operation survives a power
//!   cut), `foreign_keys = ON` and a `busy_timeout`.
//! - Every write transaction is `BEGIN IMMEDIATE` through [`Store::write`],
//!   which takes the write lock up front (no deadlock on upgrade) and retries
//!   if the lock stays busy, so "database is locked" never reaches a caller.
//! - Async code reaches the store only through [`Store::call`], which runs the
//!   closure on tokio's blocking pool.
//! - The schema is `schema.sql`, applied as append-only migrations tracked
//!   by `PRAGMA user_version`; a database newer than this code is refused.

mod batch;
mod counters;
mod events;
mod keys;
mod lifecycle;
mod logs;
mod operations;
pub mod proxmox;
mod schedules;
mod sessions;
mod state;
mod targets;
mod worker_batch;
mod workers;
mod workflows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

pub use batch::WriteBatcher;
pub use counters::*;
pub use events::*;
pub use keys::*;
pub use lifecycle::*;
pub use logs::*;
pub use operations::*;
pub use schedules::*;
pub use sessions::*;
pub use state::*;
pub use targets::*;
pub use worker_batch::*;
pub use workers::*;
pub use workflows::*;

pub use rusqlite;

/// The schema, as migrations; see the header of `schema.sql`.
pub const SCHEMA: &str = include_str!("../../../schema.sql");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error(
        "the database {path} is at schema version {found}, newer than this opsqueue \
         knows ({known}); run a newer opsqueue or another database"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the database stayed locked by another process; try again")]
    Busy,
    #[error("store task failed: {0}")]
    Task(String),
    /// A remote worker's store is the API: it did not answer, or refused.
    #[error("the API: {0}")]
    Remote(String),
}

impl StoreError {
    fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One migration of `schema.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub title: &'static str,
    pub sql: &'static str,
}

/// The migrations in `schema.sql`, in order.
pub fn migrations() -> Vec<Migration> {
    let mut found = Vec::new();
    let mut rest = SCHEMA;
    const MARK: &str = "\n-- migration ";
    while let Some(start) = rest.find(MARK) {
        let after = &rest[start + MARK.len()..];
        let header_end = after.find('\n').unwrap_or(after.len());
        let (number, title) = after[..header_end]
            .split_once(':')
            .expect("a migration header reads `-- migration N: title`");
        let body = &after[header_end..];
        let body_end = body.find(MARK).unwrap_or(body.len());
        found.push(Migration {
            version: number.trim().parse().expect("a migration number"),
            title: title.trim(),
            sql: &body[..body_end],
        });
        rest = &body[body_end..];
    }
    for (i, migration) in found.iter().enumerate() {
        assert_eq!(
            migration.version,
            i as i64 + 1,
            "migrations are numbered 1, 2, …"
        );
    }
    found
}

pub fn latest_version() -> i64 {
    migrations().len() as i64
}

/// Applies every migration above the database's version, up to `target`.
/// Runs in one `BEGIN IMMEDIATE` transaction, so two processes starting at
/// once migrate once.
pub fn migrate(conn: &mut Connection, path: &Path, target: i64) -> Result<i64> {
    // A migration may rebuild a table (SQLite's way to change a CHECK):
    // foreign keys are off while migrations run (a DROP would cascade) and
    // checked before they commit.
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate_checked(conn, path, target);
    conn.pragma_update(None, "foreign_keys", true)?;
    migrated
}

fn migrate_checked(conn: &mut Connection, path: &Path, target: i64) -> Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = latest_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for migration in migrations()
        .into_iter()
        .filter(|m| m.version > found && m.version <= target)
    {
        tx.execute_batch(migration.sql)?;
        tx.pragma_update(None, "user_version", migration.version)?;
        tracing::info!(
            version = migration.version,
            title = migration.title,
            "applied migration"
        );
    }
    let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if now != found {
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Corrupt(format!(
                "a migration left a foreign key of {table} dangling"
            )));
        }
    }
    tx.commit()?;
    Ok(now)
}

/// Page cache per connection, in KiB (SQLite's default is 2 MiB). With a
/// million rows of history the operations table and its indexes are a
/// level deeper; 8 MiB keeps their upper levels and the hot tail cached,
/// so a drain with a large history runs as fast as on an empty table
/// (BENCHMARKS.md, section 7). Pages are only cached once read, so an idle
/// connection costs nothing.
const CACHE_KIB: i64 = 8 * 1024;

fn configure(conn: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{CACHE_KIB};"
    ))?;
    Ok(())
}

/// A pool of connections to one database file; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(config: &crate::config::DatabaseConfig) -> Result<Store> {
        let path = config.path.clone();
        let dir = config.dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Directory {
            path: dir.clone(),
            source,
        })?;
        let busy = Duration::from_millis(config.busy_timeout_ms);
        {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(busy)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            migrate(&mut conn, &path, latest_version())?;
        }
        let manager =
            SqliteConnectionManager::file(&path).with_init(move |conn| configure(conn, busy));
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .build(manager)?;
        Ok(Store { pool, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn connection(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        Ok(self.pool.get()?)
    }

    /// Runs `f` on a pooled connection, outside any explicit transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.connection()?;
        f(&conn)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it. If the
    /// write lock stays busy past the busy timeout, tries again a few times
    /// before giving up with [`StoreError::Busy`].
    pub fn write<T>(&self, mut f: impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.connection()?;
        write_on(&mut conn, &mut f)
    }

    /// Moves what the WAL holds into the database file without waiting for
    /// readers (`PASSIVE`); returns (WAL frames, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        let conn = self.connection()?;
        Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?)
    }

    /// Runs a blocking store closure on tokio's blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

const BUSY_RETRIES: u32 = 5;

/// The write-transaction loop of [`Store::write`], on a connection the caller
/// holds (the batchers keep theirs).
pub(crate) fn write_on<T>(
    conn: &mut Connection,
    f: &mut impl FnMut(&Transaction) -> Result<T>,
) -> Result<T> {
    let mut tries = 0;
    loop {
        let attempt = (|| -> Result<T> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        match attempt {
            Err(e) if e.is_busy() => {
                tries += 1;
                if tries >= BUSY_RETRIES {
                    tracing::error!(error = %e, "database stayed busy");
                    return Err(StoreError::Busy);
                }
                tracing::warn!(error = %e, tries, "database busy, trying again");
                std::thread::sleep(Duration::from_millis(10 * u64::from(tries)));
            }
            other => return other,
        }
    }
}

/// Maps a row column holding JSON text.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{what}: {e}"))))
        .transpose()
}

pub(crate) fn time_column(
    text: Option<String>,
    what: &str,
) -> Result<Option<crate::time::Timestamp>> {
    text.map(|t| {
        crate::time::from_db(&t).map_err(|e| StoreError::Corrupt(format!("{what} {t:?}: {e}")))
    })
    .transpose()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A store on a fresh file in a temp directory (kept alive by the guard).
    pub fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::DatabaseConfig {
            path: dir.path().join("test.db"),
            ..Default::default()
        };
        (Store::open(&config).unwrap(), dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_sql_splits_into_numbered_migrations() {
        let all = migrations();
        assert!(!all.is_empty());
        assert!(all[0].sql.contains("CREATE TABLE operations"));
    }

    #[test]
    fn a_database_newer_than_the_code_is_refused() {
        let (store, dir) = testing::store();
        let path = store.path().to_path_buf();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        drop(conn);
        let config = crate::config::DatabaseConfig {
            path,
            ..Default::default()
        };
        let err = Store::open(&config).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this opsqueue"));
        drop(dir);
    }
}
