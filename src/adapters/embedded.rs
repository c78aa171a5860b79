//! The embedded store and queue: one SQLite database (WAL mode) under `DATA_DIR`, needing no
//! other service and surviving restarts.
//!
//! Why SQLite (rusqlite, bundled): it is the most proven embedded database there is, it gives
//! transactions across the store and the queue tables, secondary indexes for paging and word
//! search, and `UPDATE … RETURNING` for atomic leases, all in one file.
//!
//! One thread owns the connection (SQLite serializes writers anyway) and runs the calls sent to
//! it. It commits in groups: the calls waiting when it takes one are run together in one
//! transaction, each inside its own savepoint (a failing call rolls back only itself), and
//! every caller gets its answer only after that transaction committed. Under load this turns
//! hundreds of commits (each a WAL write) into one; an idle node's calls run alone, at once.

use async_trait::async_trait;
use fastlane_actors::ports::{
    DeadLetter, Delivery, Page, Paged, Queue, QueueError, QueueMessage, QueueStats, Store,
    StoreCounts, StoreError, MAX_FAILED_DELIVERIES,
};
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use uuid::Uuid;

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

/// The embedded database; implements both [`Store`] and [`Queue`].
#[derive(Clone)]
pub struct Embedded {
    calls: mpsc::Sender<Call>,
}

/// A call to the database thread: runs on the connection and says whether it succeeded; its
/// answer is sent by the returned [`Answer`] once the group's transaction ended (with the
/// commit's error, if it failed).
type Call = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Option<String>) + Send>;

/// Most calls committed together.
const GROUP: usize = 256;

/// The database thread: takes a call, adds those already waiting, runs them in one
/// transaction, each in a savepoint, and answers them after the commit.
fn serve(mut connection: Connection, calls: mpsc::Receiver<Call>) {
    while let Ok(first) = calls.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match calls.try_recv() {
                Ok(call) => group.push(call),
                Err(_) => break,
            }
        }
        if let Err(error) = connection.execute_batch("BEGIN") {
            // Nothing runs outside a transaction: the dropped calls answer their callers
            // with an error.
            tracing::error!(%error, "could not begin a transaction");
            continue;
        }
        let mut answers = Vec::with_capacity(group.len());
        for call in group {
            if let Err(error) = run_cached(&connection, "SAVEPOINT call") {
                tracing::error!(%error, "could not open a savepoint");
                continue;
            }
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut connection)));
            let ok = matches!(ran, Ok((true, _)));
            let undo = if ok {
                run_cached(&connection, "RELEASE call")
            } else {
                connection.execute_batch("ROLLBACK TO call; RELEASE call")
            };
            if let Err(error) = undo {
                tracing::error!(%error, "could not end a savepoint");
            }
            // A call that panicked drops its answer: its caller gets an error.
            answers.push(ran.ok().map(|(_, answer)| answer));
        }
        let failed = match connection.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                Some(format!("the transaction did not commit: {error}"))
            }
        };
        for answer in answers.into_iter().flatten() {
            answer(failed.clone());
        }
    }
}

/// Runs a statement without parameters from the connection's statement cache.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

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
        std::fs::create_dir_all(dir)?;
        let connection = Connection::open(dir.join("fastlane.sqlite3"))?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        connection.set_prepared_statement_cache_capacity(64);
        let (calls, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("fastlane-db".into())
            .spawn(move || serve(connection, receiver))?;
        Ok(Embedded { calls })
    }

    /// Runs `work` on the database thread, in a savepoint of the group's transaction; answers
    /// once that transaction committed.
    async fn with<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move |connection| {
            let result = work(connection);
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |failed: Option<String>| {
                let _ = reply.send(match failed {
                    Some(error) => Err(DbError::Unavailable(error)),
                    None => result,
                });
            });
            (ok, answer)
        });
        self.calls
            .send(call)
            .map_err(|_| DbError::Unavailable("the database thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the database call did not complete".into()))?
    }
}

/// Runs `sql` and parses the JSON record in the first column of every row.
fn records<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(params, |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    rows.iter()
        .map(|record| serde_json::from_str(record).map_err(DbError::from))
        .collect()
}

fn read_execution(connection: &Connection, record: &str) -> Result<Execution, DbError> {
    let mut execution: Execution = serde_json::from_str(record)?;
    let output = connection
        .query_row(
            "SELECT log, error FROM outputs WHERE execution_id = ?1",
            params![execution.execution_id.to_string()],
            |row| {
                Ok((
                    row.get::<_, Option<Vec<u8>>>(0)?,
                    row.get::<_, Option<Vec<u8>>>(1)?,
                ))
            },
        )
        .optional()?;
    if let Some((log, error)) = output {
        execution.log = log;
        execution.error = error;
    }
    Ok(execution)
}

fn task_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskSummary> {
    Ok(TaskSummary {
        task: Task {
            task_id: row.get(0)?,
            created_at: Timestamp(row.get(1)?),
            last_modified_at: Timestamp(row.get(2)?),
        },
        jobs_count: row.get::<_, i64>(3)? as u64,
    })
}

/// Keeps the `schedules` index in line with the job's schedule.
fn index_schedule(connection: &Connection, job: &Job) -> Result<(), DbError> {
    let job_id = job.job_id.to_string();
    match job
        .schedule
        .as_ref()
        .and_then(|schedule| schedule.next_fire_at)
    {
        Some(next) => connection
            .prepare_cached(
                "INSERT INTO schedules (job_id, next_fire_at) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO UPDATE SET next_fire_at = excluded.next_fire_at",
            )?
            .execute(params![job_id, next.0])?,
        None => connection
            .prepare_cached("DELETE FROM schedules WHERE job_id = ?1")?
            .execute(params![job_id])?,
    };
    Ok(())
}

fn write_job(connection: &Connection, job: &Job) -> Result<(), DbError> {
    let updated = connection.execute(
        "UPDATE jobs SET last_modified_at = ?2, record = ?3 WHERE job_id = ?1",
        params![
            job.job_id.to_string(),
            job.last_modified_at.0,
            serde_json::to_string(job)?
        ],
    )?;
    if updated == 0 {
        return Err(DbError::Conflict(format!(
            "job {} does not exist",
            job.job_id
        )));
    }
    index_schedule(connection, job)
}

fn insert_execution(transaction: &Connection, execution: &Execution) -> Result<(), DbError> {
    transaction
        .prepare_cached(
            "INSERT INTO executions (execution_id, job_id, status, record) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            execution.execution_id.to_string(),
            execution.job_id.to_string(),
            execution.status.as_str(),
            serde_json::to_string(execution)?
        ])?;
    Ok(())
}

#[async_trait]
impl Store for Embedded {
    async fn create_job(&self, job: &Job, execution: Option<&Execution>) -> Result<(), StoreError> {
        let job = job.clone();
        let execution = execution.cloned();
        // The hot path of every POST: cached statements, and no savepoint of its own (the
        // database thread runs each call in one and rolls it back on an error).
        self.with(move |connection| {
            let now = job.last_modified_at.0;
            let job_id = job.job_id.to_string();
            let owner: Option<String> = connection
                .prepare_cached("SELECT task_id FROM jobs WHERE job_id = ?1")?
                .query_row(params![job_id], |row| row.get(0))
                .optional()?;
            match owner {
                Some(owner) if owner != job.task_id => {
                    return Err(DbError::Conflict(format!("job {} belongs to another task", job.job_id)));
                }
                Some(_) => {
                    // An update (PUT) of a job of this task.
                    write_job(connection, &job)?;
                    connection
                        .prepare_cached("UPDATE tasks SET last_modified_at = ?2 WHERE task_id = ?1")?
                        .execute(params![job.task_id, now])?;
                    if let Some(execution) = &execution {
                        insert_execution(connection, execution)?;
                    }
                    return Ok(());
                }
                None => {}
            }
            let task_seq: i64 = connection
                .prepare_cached(
                    "INSERT INTO tasks (task_id, created_at, last_modified_at, jobs_count)
                     VALUES (?1, ?2, ?2, 1)
                     ON CONFLICT (task_id) DO UPDATE
                     SET last_modified_at = excluded.last_modified_at, jobs_count = jobs_count + 1
                     RETURNING seq",
                )?
                .query_row(params![job.task_id, now], |row| row.get(0))?;
            let mut add_word = connection.prepare_cached("INSERT OR IGNORE INTO task_words (word, task_seq) VALUES (?1, ?2)")?;
            for word in fastlane_proto::search::words(&job.task_id) {
                add_word.execute(params![word, task_seq])?;
            }
            drop(add_word);
            connection
                .prepare_cached("INSERT INTO jobs (job_id, task_id, last_modified_at, record) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![job_id, job.task_id, now, serde_json::to_string(&job)?])?;
            if let Some(execution) = &execution {
                insert_execution(connection, execution)?;
            }
            index_schedule(connection, &job)?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    async fn delete_job(&self, job_id: Uuid) -> Result<(), StoreError> {
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let job_id = job_id.to_string();
            let task_id: Option<String> = transaction
                .query_row("SELECT task_id FROM jobs WHERE job_id = ?1", params![job_id], |row| row.get(0))
                .optional()?;
            let Some(task_id) = task_id else {
                return Ok(());
            };
            transaction.execute(
                "DELETE FROM outputs WHERE execution_id IN (SELECT execution_id FROM executions WHERE job_id = ?1)",
                params![job_id],
            )?;
            transaction.execute("DELETE FROM executions WHERE job_id = ?1", params![job_id])?;
            transaction.execute("DELETE FROM jobs WHERE job_id = ?1", params![job_id])?;
            transaction.execute("DELETE FROM schedules WHERE job_id = ?1", params![job_id])?;
            transaction.execute(
                "UPDATE tasks SET jobs_count = jobs_count - 1 WHERE task_id = ?1",
                params![task_id],
            )?;
            // A task is only ever created with a job: without jobs it goes too.
            transaction.execute(
                "DELETE FROM task_words WHERE task_seq IN (SELECT seq FROM tasks WHERE task_id = ?1 AND jobs_count <= 0)",
                params![task_id],
            )?;
            transaction.execute("DELETE FROM tasks WHERE task_id = ?1 AND jobs_count <= 0", params![task_id])?;
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    async fn list_tasks(&self, page: Page) -> Result<Paged<TaskSummary>, StoreError> {
        self.with(move |connection| {
            let total: i64 =
                connection.query_row("SELECT COUNT(*) FROM tasks", [], |row| row.get(0))?;
            let mut statement = connection.prepare_cached(
                "SELECT task_id, created_at, last_modified_at, jobs_count FROM tasks
                 ORDER BY seq LIMIT ?1 OFFSET ?2",
            )?;
            let items = statement
                .query_map(
                    params![page.per_page as i64, page.offset() as i64],
                    task_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Paged {
                items,
                total: total as u64,
            })
        })
        .await
        .map_err(StoreError::from)
    }

    async fn search_tasks(
        &self,
        words: &[String],
        page: Page,
    ) -> Result<Paged<TaskSummary>, StoreError> {
        let words =
            serde_json::to_string(words).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.with(move |connection| {
            let matching = "SELECT DISTINCT task_seq FROM task_words WHERE word IN (SELECT value FROM json_each(?1))";
            let total: i64 = connection.query_row(
                &format!("SELECT COUNT(*) FROM ({matching})"),
                params![words],
                |row| row.get(0),
            )?;
            let mut statement = connection.prepare_cached(&format!(
                "SELECT task_id, created_at, last_modified_at, jobs_count FROM tasks
                 WHERE seq IN ({matching}) ORDER BY seq LIMIT ?2 OFFSET ?3"
            ))?;
            let items = statement
                .query_map(params![words, page.per_page as i64, page.offset() as i64], task_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Paged { items, total: total as u64 })
        })
        .await
        .map_err(StoreError::from)
    }

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |connection| {
            Ok(connection
                .query_row(
                    "SELECT task_id, created_at, last_modified_at, jobs_count FROM tasks WHERE task_id = ?1",
                    params![task_id],
                    task_from_row,
                )
                .optional()?
                .map(|summary| summary.task))
        })
        .await
        .map_err(StoreError::from)
    }

    async fn list_jobs(&self, task_id: &str) -> Result<Vec<Job>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |connection| {
            records(
                connection,
                "SELECT record FROM jobs WHERE task_id = ?1 ORDER BY last_modified_at DESC",
                params![task_id],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    async fn get_job(&self, task_id: &str, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |connection| {
            let record: Option<String> = connection
                .query_row(
                    "SELECT record FROM jobs WHERE job_id = ?1 AND task_id = ?2",
                    params![job_id.to_string(), task_id],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(record
                .map(|record| serde_json::from_str(&record))
                .transpose()?)
        })
        .await
        .map_err(StoreError::from)
    }

    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError> {
        self.with(move |connection| {
            let count: i64 = connection.query_row(
                "SELECT COUNT(*) FROM executions WHERE job_id = ?1",
                params![job_id.to_string()],
                |row| row.get(0),
            )?;
            Ok(count as u64)
        })
        .await
        .map_err(StoreError::from)
    }

    async fn list_executions(
        &self,
        job_id: Uuid,
        limit: u64,
    ) -> Result<Vec<Execution>, StoreError> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT record FROM executions WHERE job_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let records = statement
                .query_map(params![job_id.to_string(), limit as i64], |row| {
                    row.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            records
                .iter()
                .map(|record| read_execution(connection, record))
                .collect()
        })
        .await
        .map_err(StoreError::from)
    }

    async fn get_execution(&self, execution_id: Uuid) -> Result<Option<Execution>, StoreError> {
        self.with(move |connection| {
            let record: Option<String> = connection
                .query_row(
                    "SELECT record FROM executions WHERE execution_id = ?1",
                    params![execution_id.to_string()],
                    |row| row.get(0),
                )
                .optional()?;
            record
                .map(|record| read_execution(connection, &record))
                .transpose()
        })
        .await
        .map_err(StoreError::from)
    }

    async fn update_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        let execution = execution.clone();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let id = execution.execution_id.to_string();
            let stored: Option<(String, String)> = transaction
                .query_row("SELECT status, record FROM executions WHERE execution_id = ?1", params![id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let mut execution = execution;
            match stored.as_ref().and_then(|(status, record)| Some((ExecutionStatus::parse(status)?, record))) {
                Some((stored, _)) if stored.is_terminal() && stored != execution.status => {
                    return Err(DbError::Conflict(format!(
                        "execution {id} is already {stored}, it cannot become {}",
                        execution.status
                    )));
                }
                Some((_, record)) => {
                    // Webhook attempts are appended on their own (`append_webhook_dispatch`):
                    // a writer's copy of the execution never replaces them.
                    let stored: Execution = serde_json::from_str(record)?;
                    execution.metadata.webhook_dispatch = stored.metadata.webhook_dispatch;
                    transaction.execute(
                        "UPDATE executions SET status = ?2, record = ?3 WHERE execution_id = ?1",
                        params![id, execution.status.as_str(), serde_json::to_string(&execution)?],
                    )?;
                }
                None => insert_execution(&transaction, &execution)?,
            }
            if execution.log.is_some() || execution.error.is_some() {
                transaction.execute(
                    "INSERT INTO outputs (execution_id, log, error) VALUES (?1, ?2, ?3)
                     ON CONFLICT (execution_id) DO UPDATE SET log = excluded.log, error = excluded.error",
                    params![id, execution.log, execution.error],
                )?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    async fn create_execution(&self, execution: &Execution) -> Result<bool, StoreError> {
        let execution = execution.clone();
        self.with(move |connection| {
            let inserted = connection.execute(
                "INSERT OR IGNORE INTO executions (execution_id, job_id, status, record) VALUES (?1, ?2, ?3, ?4)",
                params![
                    execution.execution_id.to_string(),
                    execution.job_id.to_string(),
                    execution.status.as_str(),
                    serde_json::to_string(&execution)?
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
        .map_err(StoreError::from)
    }

    async fn update_job(&self, job: &Job) -> Result<(), StoreError> {
        let job = job.clone();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            write_job(&transaction, &job)?;
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    async fn update_schedule(
        &self,
        job_id: Uuid,
        expected: Option<Timestamp>,
        schedule: Option<&fastlane_proto::schedule::JobSchedule>,
    ) -> Result<bool, StoreError> {
        let schedule = schedule.cloned();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let record: Option<String> = transaction
                .query_row(
                    "SELECT record FROM jobs WHERE job_id = ?1",
                    params![job_id.to_string()],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(record) = record else {
                return Ok(false);
            };
            let mut job: Job = serde_json::from_str(&record)?;
            if job
                .schedule
                .as_ref()
                .and_then(|current| current.next_fire_at)
                != expected
            {
                return Ok(false);
            }
            job.scheduled = schedule
                .as_ref()
                .is_some_and(|schedule| schedule.cron.is_some());
            job.schedule = schedule;
            job.last_modified_at = Timestamp::now();
            write_job(&transaction, &job)?;
            transaction.commit()?;
            Ok(true)
        })
        .await
        .map_err(StoreError::from)
    }

    async fn scheduled_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.with(|connection| {
            records(
                connection,
                "SELECT jobs.record FROM schedules JOIN jobs ON jobs.job_id = schedules.job_id
                 ORDER BY schedules.next_fire_at",
                [],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    async fn scheduled_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT schedules.job_id, jobs.task_id, schedules.next_fire_at
                 FROM schedules JOIN jobs ON jobs.job_id = schedules.job_id
                 WHERE schedules.next_fire_at <= ?1 ORDER BY schedules.next_fire_at LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![before.0, limit as i64], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(job_id, task_id, next)| {
                    let job_id = Uuid::parse_str(&job_id)
                        .map_err(|error| DbError::Corrupt(error.to_string()))?;
                    Ok((job_id, task_id, Timestamp(next)))
                })
                .collect()
        })
        .await
        .map_err(StoreError::from)
    }

    async fn append_webhook_dispatch(
        &self,
        execution_id: Uuid,
        entry: serde_json::Value,
        keep: usize,
    ) -> Result<(), StoreError> {
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let id = execution_id.to_string();
            let record: Option<String> = transaction
                .query_row(
                    "SELECT record FROM executions WHERE execution_id = ?1",
                    params![id],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(record) = record else { return Ok(()) };
            let mut execution: Execution = serde_json::from_str(&record)?;
            let dispatch = &mut execution.metadata.webhook_dispatch;
            dispatch.push(entry);
            if dispatch.len() > keep {
                let excess = dispatch.len() - keep;
                dispatch.drain(..excess);
            }
            transaction.execute(
                "UPDATE executions SET record = ?2 WHERE execution_id = ?1",
                params![id, serde_json::to_string(&execution)?],
            )?;
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    async fn executions_in(
        &self,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<Execution>, StoreError> {
        let statuses: Vec<&'static str> = statuses.iter().map(|status| status.as_str()).collect();
        let statuses =
            serde_json::to_string(&statuses).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.with(move |connection| {
            records(
                connection,
                "SELECT record FROM executions WHERE status IN (SELECT value FROM json_each(?1)) ORDER BY seq",
                params![statuses],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.with(|connection| {
            let (tasks, jobs): (i64, i64) = connection.query_row(
                "SELECT (SELECT COUNT(*) FROM tasks), (SELECT COUNT(*) FROM jobs)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            Ok(StoreCounts {
                tasks: tasks as u64,
                jobs: jobs as u64,
            })
        })
        .await
        .map_err(StoreError::from)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(
            |connection| Ok(connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?),
        )
        .await
        .map(|_| ())
        .map_err(StoreError::from)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MessageBody {
    task_id: String,
    job_id: Uuid,
    execution_id: Uuid,
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

#[async_trait]
impl Queue for Embedded {
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError> {
        let body = serde_json::to_string(&MessageBody {
            task_id: message.task_id.clone(),
            job_id: message.job_id,
            execution_id: message.execution_id,
        })
        .map_err(|e| QueueError::Internal(e.to_string()))?;
        let id = message.id.clone();
        self.with(move |connection| {
            connection.execute(
                "INSERT OR IGNORE INTO queue (id, body, due_at)
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE id = ?1)",
                params![id, body, due.unix_millis()],
            )?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let consumer = consumer.to_string();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let now = Timestamp::now().unix_millis();
            // An expired lease is a failed delivery, counted once.
            transaction.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL, failures = failures + 1,
                 last_error = 'its lease expired: the node running it stopped answering'
                 WHERE lease_until < ?1",
                params![now],
            )?;
            bury_failed(&transaction, now)?;
            let deliveries = lease_due(&transaction, &consumer, now, lease_for, max)?;
            transaction.commit()?;
            Ok(deliveries)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn renew(
        &self,
        consumer: &str,
        ids: &[String],
        lease_for: Duration,
    ) -> Result<(), QueueError> {
        let consumer = consumer.to_string();
        let ids = serde_json::to_string(ids).map_err(|e| QueueError::Internal(e.to_string()))?;
        self.with(move |connection| {
            let until = Timestamp::now().unix_millis() + millis(lease_for);
            connection.execute(
                "UPDATE queue SET lease_until = ?1
                 WHERE lease_owner = ?2 AND id IN (SELECT value FROM json_each(?3))",
                params![until, consumer, ids],
            )?;
            connection.execute(
                "UPDATE slots SET until = ?1 WHERE holder IN (SELECT value FROM json_each(?2))",
                params![until, ids],
            )?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn ack(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.with(move |connection| {
            connection.execute("DELETE FROM queue WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn release(&self, id: &str, delay: Duration) -> Result<(), QueueError> {
        let id = id.to_string();
        self.with(move |connection| {
            let due = Timestamp::now().unix_millis() + millis(delay);
            connection.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = ?2 WHERE id = ?1",
                params![id, due],
            )?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn fail(&self, id: &str, delay: Duration, reason: &str) -> Result<bool, QueueError> {
        let id = id.to_string();
        let reason = reason.to_string();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let now = Timestamp::now().unix_millis();
            transaction.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = ?2,
                 failures = failures + 1, last_error = ?3 WHERE id = ?1",
                params![id, now + millis(delay), reason],
            )?;
            let buried = bury_failed(&transaction, now)? > 0;
            transaction.commit()?;
            Ok(buried)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        let reason = reason.to_string();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            bury(&transaction, &id, &reason, Timestamp::now().unix_millis())?;
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, body, reason, at, deliveries FROM dead_letters ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = statement
                .query_map(params![limit as i64], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(id, body, reason, at, deliveries)| {
                    let body = serde_json::from_str::<MessageBody>(&body).ok();
                    DeadLetter {
                        message: QueueMessage {
                            id,
                            task_id: body.as_ref().map(|b| b.task_id.clone()).unwrap_or_default(),
                            job_id: body.as_ref().map(|b| b.job_id).unwrap_or_default(),
                            execution_id: body.map(|b| b.execution_id).unwrap_or_default(),
                        },
                        reason,
                        at: Timestamp::from_unix_millis(at),
                        deliveries: deliveries as u32,
                    }
                })
                .collect())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn release_all(&self, consumer: &str, failed: bool) -> Result<u64, QueueError> {
        let consumer = consumer.to_string();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let released = transaction.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL,
                 failures = failures + ?2,
                 last_error = CASE WHEN ?2 = 1 THEN 'the node running it restarted before it finished' ELSE last_error END
                 WHERE lease_owner = ?1",
                params![consumer, i64::from(failed)],
            )?;
            bury_failed(&transaction, Timestamp::now().unix_millis())?;
            transaction.commit()?;
            Ok(released as u64)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.with(|connection| {
            let now = Timestamp::now().unix_millis();
            let (ready, delayed, leased, dead): (i64, i64, i64, i64) = connection.query_row(
                "SELECT
                   COALESCE(SUM(due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)), 0),
                   COALESCE(SUM(due_at > ?1 AND (lease_until IS NULL OR lease_until < ?1)), 0),
                   COALESCE(SUM(lease_until >= ?1), 0),
                   (SELECT COUNT(*) FROM dead_letters)
                 FROM queue",
                params![now],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            Ok(QueueStats {
                ready: ready as u64,
                delayed: delayed as u64,
                leased: leased as u64,
                dead: dead as u64,
            })
        })
        .await
        .map_err(QueueError::from)
    }

    async fn acquire_slots(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        lease_for: Duration,
    ) -> Result<bool, QueueError> {
        let holder = holder.to_string();
        let pools = pools.to_vec();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let now = Timestamp::now().unix_millis();
            for (pool, limit) in &pools {
                transaction.execute(
                    "DELETE FROM slots WHERE pool = ?1 AND until < ?2",
                    params![pool, now],
                )?;
                let held: bool = transaction.query_row(
                    "SELECT EXISTS (SELECT 1 FROM slots WHERE pool = ?1 AND holder = ?2)",
                    params![pool, holder],
                    |row| row.get(0),
                )?;
                if held {
                    continue;
                }
                let used: i64 = transaction.query_row(
                    "SELECT COUNT(*) FROM slots WHERE pool = ?1",
                    params![pool],
                    |row| row.get(0),
                )?;
                if used >= i64::from(*limit) {
                    // All or none: dropping the transaction gives back what this call took.
                    return Ok(false);
                }
                transaction.execute(
                    "INSERT INTO slots (pool, holder, until) VALUES (?1, ?2, ?3)",
                    params![pool, holder, now + millis(lease_for)],
                )?;
            }
            transaction.commit()?;
            Ok(true)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn release_slots(&self, holder: &str) -> Result<(), QueueError> {
        let holder = holder.to_string();
        self.with(move |connection| {
            connection.execute("DELETE FROM slots WHERE holder = ?1", params![holder])?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn slots_in_use(&self) -> Result<Vec<(String, u64)>, QueueError> {
        self.with(|connection| {
            let now = Timestamp::now().unix_millis();
            let mut statement = connection.prepare_cached(
                "SELECT pool, COUNT(*) FROM slots WHERE until >= ?1 GROUP BY pool ORDER BY pool",
            )?;
            let rows = statement
                .query_map(params![now], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn blacklist_add(&self, host: &str) -> Result<(), QueueError> {
        let host = host.to_string();
        self.with(move |connection| {
            connection.execute(
                "INSERT OR IGNORE INTO blacklist (host) VALUES (?1)",
                params![host],
            )?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn blacklist_remove(&self, host: &str) -> Result<(), QueueError> {
        let host = host.to_string();
        self.with(move |connection| {
            connection.execute("DELETE FROM blacklist WHERE host = ?1", params![host])?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn blacklist(&self) -> Result<Vec<String>, QueueError> {
        self.with(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT host FROM blacklist ORDER BY host")?;
            let hosts = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(hosts)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Store::ping(self)
            .await
            .map_err(|error| QueueError::Unavailable(error.to_string()))
    }
}

/// Leases up to `max` due messages, oldest first. A message whose body cannot be read is
/// dead-lettered instead of failing every lease after it.
fn lease_due(
    connection: &Connection,
    consumer: &str,
    now: i64,
    lease_for: Duration,
    max: usize,
) -> Result<Vec<Delivery>, DbError> {
    let mut statement = connection.prepare_cached(
        "UPDATE queue SET lease_owner = ?1, lease_until = ?2, deliveries = deliveries + 1
         WHERE seq IN (
             SELECT seq FROM queue
             WHERE due_at <= ?3 AND lease_until IS NULL
             ORDER BY due_at, seq LIMIT ?4)
         RETURNING id, body, deliveries, due_at, seq",
    )?;
    let mut rows = statement
        .query_map(
            params![consumer, now + millis(lease_for), now, max as i64],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee: restore FIFO.
    rows.sort_by_key(|row| (row.3, row.4));
    let mut deliveries = Vec::with_capacity(rows.len());
    for (id, body, count, _, _) in rows {
        match serde_json::from_str::<MessageBody>(&body) {
            Ok(body) => deliveries.push(Delivery {
                message: QueueMessage {
                    id,
                    task_id: body.task_id,
                    job_id: body.job_id,
                    execution_id: body.execution_id,
                },
                deliveries: count as u32,
            }),
            Err(error) => bury(
                connection,
                &id,
                &format!("unreadable message: {error}"),
                now,
            )?,
        }
    }
    Ok(deliveries)
}

/// Moves one message to the dead-letter list.
fn bury(connection: &Connection, id: &str, reason: &str, now: i64) -> Result<(), DbError> {
    connection.execute(
        "INSERT OR IGNORE INTO dead_letters (id, body, reason, at, deliveries)
         SELECT id, body, ?2, ?3, deliveries FROM queue WHERE id = ?1",
        params![id, reason, now],
    )?;
    connection.execute("DELETE FROM queue WHERE id = ?1", params![id])?;
    Ok(())
}

/// Moves every message that failed [`MAX_FAILED_DELIVERIES`] times to the dead-letter list.
fn bury_failed(connection: &Connection, now: i64) -> Result<u64, DbError> {
    connection.execute(
        "INSERT OR IGNORE INTO dead_letters (id, body, reason, at, deliveries)
         SELECT id, body, COALESCE(last_error, 'failed'), ?1, deliveries FROM queue
         WHERE failures >= ?2",
        params![now, MAX_FAILED_DELIVERIES],
    )?;
    let buried = connection.execute(
        "DELETE FROM queue WHERE failures >= ?1",
        params![MAX_FAILED_DELIVERIES],
    )?;
    Ok(buried as u64)
}
