//! The embedded backend: one SQLite database (WAL mode) under `DATA_DIR`, needing no other
//! service and surviving restarts. [`Embedded`] implements the [`Store`], the [`Queue`], the
//! [`Slots`] and the [`HostBlacklist`] ports, each in its own file here; `connection.rs` holds the
//! thread that owns the connection.
//!
//! Why SQLite (rusqlite, bundled): it is the most proven embedded database there is, it gives
//! transactions across the store and the queue tables, secondary indexes for paging and word
//! search, and `UPDATE … RETURNING` for atomic leases, all in one file.
//!
//! [`Store`]: fastlane_actors::ports::Store
//! [`Queue`]: fastlane_actors::ports::Queue
//! [`Slots`]: fastlane_actors::ports::Slots
//! [`HostBlacklist`]: fastlane_actors::ports::HostBlacklist

mod blacklist;
mod connection;
mod outputs;
mod queue;
mod records;
mod slots;
mod store;

use fastlane_actors::ports::{QueueError, StoreError};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_modified_at INTEGER NOT NULL,
    jobs_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS task_words (
    word TEXT NOT NULL,
    task_seq INTEGER NOT NULL,
    PRIMARY KEY (word, task_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    last_modified_at INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_task ON jobs (task_id, last_modified_at);
CREATE TABLE IF NOT EXISTS schedules (
    job_id TEXT PRIMARY KEY,
    next_fire_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_by_time ON schedules (next_fire_at);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_id, seq);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status);
CREATE TABLE IF NOT EXISTS outputs (
    execution_id TEXT PRIMARY KEY,
    log BLOB,
    error BLOB
);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    deliveries INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_by_due ON queue (due_at, seq);
CREATE INDEX IF NOT EXISTS queue_by_owner ON queue (lease_owner);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    deliveries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
    pool TEXT NOT NULL,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (pool, holder)
);
CREATE INDEX IF NOT EXISTS slots_by_holder ON slots (holder);
CREATE TABLE IF NOT EXISTS blacklist (host TEXT PRIMARY KEY);
";

/// The embedded database: a handle on the thread that owns its connection. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    calls: connection::Calls,
}

/// What a call on the database thread fails with; each port maps it to its own error.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(code, _))
                if code.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(error.to_string())
            }
            DbError::Conflict(message) => StoreError::Conflict(message),
            DbError::Unavailable(message) => StoreError::Unavailable(message),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(code, _))
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                ) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<DbError> for QueueError {
    fn from(error: DbError) -> Self {
        match StoreError::from(error) {
            StoreError::Unavailable(message) => QueueError::Unavailable(message),
            StoreError::Conflict(message) | StoreError::Internal(message) => {
                QueueError::Internal(message)
            }
        }
    }
}

impl Embedded {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Embedded> {
        crate::data_dir::prepare(dir)?;
        let path = dir.join("fastlane.sqlite3");
        crate::data_dir::create_private_file(&path)?;
        let connection = Connection::open(&path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        connection.set_prepared_statement_cache_capacity(64);
        Ok(Embedded {
            calls: connection::spawn(connection)?,
        })
    }
}
