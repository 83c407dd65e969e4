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
//! - A write that fails for lack of space (`SQLITE_FULL`, or an I/O error
//!   whose cause is `ENOSPC`) makes room once: a `wal_checkpoint(TRUNCATE)`
//!   moves the WAL into the database file and cuts the WAL to nothing (the
//!   WAL holds every version of every page written since the last
//!   checkpoint, so it is usually far larger than what the database file
//!   grows by), then the write is tried again. If it still fails, it is
//!   [`StoreError::Full`], and [`Store::is_full`] says so until a write
//!   commits again. While free space is low ([`LOW_SPACE_BYTES`]) every
//!   commit is followed by such a checkpoint, so the WAL never grows into
//!   the space left. `journal_size_limit` keeps the WAL file from staying
//!   at its high-water mark after a checkpoint.
//! - The schema is `schema.sql`, applied as append-only migrations tracked
//!   by `PRAGMA user_version`; a database newer than this code is refused.

mod artifacts;
mod batch;
mod counters;
mod events;
mod keys;
mod lifecycle;
mod logs;
mod migrations;
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

pub use artifacts::*;
pub use batch::WriteBatcher;
pub use counters::*;
pub use events::*;
pub use keys::*;
pub use lifecycle::*;
pub use logs::*;
pub use migrations::*;
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
    #[error("the database's filesystem is full: no write can commit until space is freed")]
    Full,
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

/// Whether `error`, just returned on `conn`, failed for lack of space:
/// `SQLITE_FULL`, or an I/O error whose cause (the connection's last
/// system errno) is `ENOSPC`.
fn lacks_space(conn: &Connection, error: &StoreError) -> bool {
    let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = error else {
        return false;
    };
    match e.code {
        rusqlite::ErrorCode::DiskFull => true,
        rusqlite::ErrorCode::SystemIoFailure => {
            // SAFETY: the handle is this open connection's, used on its own
            // thread; sqlite3_system_errno only reads the connection's state.
            unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) == libc::ENOSPC }
        }
        _ => false,
    }
}

/// Below this much free space on the database's filesystem, every write
/// transaction is followed by a `wal_checkpoint(TRUNCATE)`: the WAL then
/// never holds more than one transaction, so freed space goes to the rows
/// themselves instead of a WAL that grows into it and cannot be
/// checkpointed (the checkpoint needs room in the database file). Above it,
/// SQLite's own checkpoints run as always and nothing changes.
pub const LOW_SPACE_BYTES: u64 = 64 * 1024 * 1024;

/// How long a free-space reading is trusted.
const SPACE_READING_TTL: Duration = Duration::from_secs(1);

/// The space of a store's filesystem: whether its last write failed for
/// lack of space, and whether space is low (see [`LOW_SPACE_BYTES`]).
/// Shared by a store's clones and its group-commit writers.
#[derive(Debug)]
pub struct Space {
    full: std::sync::atomic::AtomicBool,
    dir: PathBuf,
    /// The last reading: when, and whether space was low.
    low: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl Space {
    fn new(dir: PathBuf) -> Self {
        Self {
            full: Default::default(),
            dir,
            low: Default::default(),
        }
    }

    fn set_full(&self, full: bool) {
        self.full.store(full, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_full(&self) -> bool {
        self.full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Free bytes for an unprivileged writer on the database's filesystem.
    pub fn available(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we own; the path is
        // a NUL-terminated string that outlives the call.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Whether free space is below [`LOW_SPACE_BYTES`] (read at most once
    /// a second).
    fn is_low(&self) -> bool {
        let mut reading = self.low.lock().unwrap_or_else(|e| e.into_inner());
        match *reading {
            Some((at, low)) if at.elapsed() < SPACE_READING_TTL => low,
            _ => {
                let low = self.available().is_some_and(|free| free < LOW_SPACE_BYTES);
                *reading = Some((std::time::Instant::now(), low));
                low
            }
        }
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

/// After a checkpoint resets the WAL, SQLite cuts its file down to this.
/// The size of SQLite's automatic checkpoint (1000 pages of 4 KiB): in
/// steady state nothing is cut, but a WAL grown large while a long reader
/// held it back does not keep its size on disk for good.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

fn configure(conn: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{CACHE_KIB};
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
    ))?;
    Ok(())
}

/// A pool of connections to one database file; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
    space: std::sync::Arc<Space>,
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
        Ok(Store {
            pool,
            path,
            space: std::sync::Arc::new(Space::new(dir)),
        })
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
        write_on(&mut conn, &self.space, &mut f)
    }

    /// Whether this store's last write failed for lack of space (and none
    /// has committed since).
    pub fn is_full(&self) -> bool {
        self.space.is_full()
    }

    pub(crate) fn space(&self) -> std::sync::Arc<Space> {
        self.space.clone()
    }

    /// Commits a real write the size of an enqueue: the readiness probe. An
    /// empty or rolled-back transaction never reaches the disk in WAL mode,
    /// and a one-page write can fit where an operation cannot; this one
    /// increments a counter and writes (and, in the same transaction,
    /// deletes again) [`PROBE_BYTES`] of padding, so its commit puts about
    /// as many WAL frames on disk as a one-operation enqueue, and fails
    /// where that would (after making room once, like every write).
    pub fn probe_write(&self) -> Result<()> {
        let mut probe = Counters::default();
        probe.add(names::STORE_PROBES, "", 1.0);
        self.write(|tx| {
            counters_apply(tx, &probe)?;
            tx.execute(
                "INSERT INTO counters (name, labels, value) VALUES (?1, zeroblob(?2), 0)",
                rusqlite::params![PROBE_PAD, PROBE_BYTES],
            )?;
            tx.execute("DELETE FROM counters WHERE name = ?1", [PROBE_PAD])?;
            Ok(())
        })
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

/// The padding the readiness probe writes: about what one enqueue puts in
/// the WAL (the operation's row and its index entries, a counter).
pub const PROBE_BYTES: i64 = 32 * 1024;

/// The counter name the probe's padding is written under; it never
/// outlives the probe's transaction.
const PROBE_PAD: &str = "opsqueue_store_write_probe_padding";

const BUSY_RETRIES: u32 = 5;

/// Makes room after a write failed for lack of space: checkpoints the
/// whole WAL into the database file and truncates the WAL to nothing.
fn make_room(conn: &Connection) {
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match checkpoint {
        Ok((busy, frames, checkpointed)) => tracing::warn!(
            blocked = busy == 1,
            frames,
            checkpointed,
            "out of space: checkpointed and truncated the WAL"
        ),
        Err(e) => tracing::warn!(error = %e, "out of space, and the WAL checkpoint failed"),
    }
}

/// The write-transaction loop of [`Store::write`], on a connection the caller
/// holds (the batchers keep theirs).
pub(crate) fn write_on<T>(
    conn: &mut Connection,
    space: &Space,
    f: &mut impl FnMut(&Transaction) -> Result<T>,
) -> Result<T> {
    let mut tries = 0;
    let mut made_room = false;
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
            Err(e) if lacks_space(conn, &e) => {
                if !made_room {
                    made_room = true;
                    make_room(conn);
                    continue;
                }
                if !space.is_full() {
                    tracing::error!(error = %e, "the database's filesystem is full; writes fail until space is freed");
                }
                space.set_full(true);
                return Err(StoreError::Full);
            }
            Ok(value) => {
                if space.is_full() {
                    tracing::info!("the database takes writes again");
                }
                space.set_full(false);
                if space.is_low() {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                }
                return Ok(value);
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
