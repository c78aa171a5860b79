//! The embedded backend: one SQLite database (WAL mode) under `DATA_DIR`, needing no other
//! service and surviving restarts. [`Embedded`] implements the [`Store`], the [`Queue`], the
//! [`Slots`] and the [`HostBlacklist`] ports, each in its own file here; `connection.rs` holds the
//! thread that owns the connection, `reader.rs` the read-only connections that serve reads of
//! outputs beside it.
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
mod history;
mod idempotency;
mod outbox;
mod outputs;
mod queue;
mod reader;
mod records;
mod slots;
mod store;

use fastlane_actors::ports::{QueueError, StoreError};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
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
CREATE INDEX IF NOT EXISTS schedules_by_time_id ON schedules (next_fire_at, job_id);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    fence INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_id, seq);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status);
-- The sweep pages unfinished executions by status and id (`Store::executions_in`).
CREATE INDEX IF NOT EXISTS executions_by_status_id ON executions (status, execution_id);
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
-- Every lease reads the due messages nobody holds, takes back expired leases and buries
-- messages that failed too often: three index range scans whatever the backlog (the query-plan
-- test in queue.rs checks none of them scans the table). `IF NOT EXISTS` adds them to
-- databases made before.
CREATE INDEX IF NOT EXISTS queue_ready ON queue (due_at, seq) WHERE lease_until IS NULL;
CREATE INDEX IF NOT EXISTS queue_by_lease ON queue (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_by_failures ON queue (failures);
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

/// How long a connection waits for a lock held by another one (another process, or a
/// checkpoint) before failing with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded database: a handle on the thread that owns its connection and on the threads
/// reading outputs. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    calls: connection::Calls,
    reads: reader::Reads,
    clock: LeaseClock,
}

/// The clock of leases (messages and slots): the wall clock when the database was opened plus
/// the monotonic time since, in ms. A wall clock stepped while the node runs (NTP, a VM
/// resumed) neither expires leases early nor keeps them forever; across restarts it stays close
/// to the wall clock, which the leases of a previous life were taken on. Due times of messages
/// stay on the wall clock: they are the callers' (a schedule's) times.
#[derive(Clone, Copy)]
struct LeaseClock {
    wall_at_open_ms: i64,
    opened: std::time::Instant,
}

impl LeaseClock {
    fn start() -> LeaseClock {
        LeaseClock {
            wall_at_open_ms: fastlane_proto::Timestamp::now().unix_millis(),
            opened: std::time::Instant::now(),
        }
    }

    /// Now, in ms, on the lease clock.
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.opened.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        self.wall_at_open_ms.saturating_add(elapsed)
    }
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
    Fenced(String),
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
            DbError::Fenced(message) => StoreError::Fenced(message),
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
            StoreError::Conflict(message)
            | StoreError::Internal(message)
            | StoreError::Fenced(message) => QueueError::Internal(message),
        }
    }
}

/// Databases made before executions were fenced get the `fence` column (every execution
/// unclaimed: 0).
fn add_fence_column(connection: &Connection) -> rusqlite::Result<()> {
    let present: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('executions') WHERE name = 'fence')",
        [],
        |row| row.get(0),
    )?;
    if !present {
        connection
            .execute_batch("ALTER TABLE executions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

/// How commits reach the disk (`SQLITE_SYNCHRONOUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is flushed before its callers are answered; nothing
    /// acknowledged is lost to a power failure. The group commit shares one flush between the
    /// calls waiting together, so under load it costs little; a lone call waits for its flush.
    Full,
    /// `synchronous=NORMAL`: the WAL is flushed at checkpoints only; faster lone commits, but a
    /// power failure (not a crash of the process) may lose the last acknowledged ones.
    Normal,
}

impl Durability {
    /// Parses `SQLITE_SYNCHRONOUS` (`full` or `normal`, any case).
    pub fn parse(text: &str) -> Option<Durability> {
        match text.trim().to_ascii_lowercase().as_str() {
            "full" => Some(Durability::Full),
            "normal" => Some(Durability::Normal),
            _ => None,
        }
    }
}

impl Embedded {
    /// Opens (creating if needed) the database in `dir`, with [`Durability::Full`].
    pub fn open(dir: &Path) -> anyhow::Result<Embedded> {
        Embedded::open_with(dir, Durability::Full)
    }

    /// Opens (creating if needed) the database in `dir`, committing with `durability`.
    pub fn open_with(dir: &Path, durability: Durability) -> anyhow::Result<Embedded> {
        crate::data_dir::prepare(dir)?;
        let path = dir.join("fastlane.sqlite3");
        crate::data_dir::create_private_file(&path)?;
        let mut connection = Connection::open(&path)?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.execute_batch(SCHEMA)?;
        connection.execute_batch(match durability {
            Durability::Full => "PRAGMA synchronous = FULL;",
            Durability::Normal => "PRAGMA synchronous = NORMAL;",
        })?;
        add_fence_column(&connection)?;
        history::migrate(&mut connection)?;
        connection.execute_batch(outbox::SCHEMA)?;
        connection.execute_batch(idempotency::SCHEMA)?;
        connection.set_prepared_statement_cache_capacity(64);
        // The readers open the file once the writer made it a WAL database with its tables.
        let reads = reader::spawn(&path, BUSY_TIMEOUT)?;
        Ok(Embedded {
            calls: connection::spawn(connection)?,
            reads,
            clock: LeaseClock::start(),
        })
    }
}
