//! Rows to records and back: the JSON records of jobs and executions, executions' outputs kept
//! apart, and the schedule index kept in line with each job written.

use super::DbError;
use fastlane_proto::{Execution, Job, Task, TaskSummary, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

/// `(execution id, JSON record)` of the job's newest `limit` executions, newest first: what a
/// listing of them reads before it adds their outputs (whole, or tails).
pub(super) fn newest_execution_rows(
    connection: &Connection,
    job_id: uuid::Uuid,
    limit: u64,
) -> Result<Vec<(String, String)>, DbError> {
    let mut statement = connection.prepare_cached(
        "SELECT execution_id, record FROM executions WHERE job_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![job_id.to_string(), limit as i64], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Runs `sql` and parses the JSON record in the second column of every row, the row's id being
/// the first. A record that cannot be parsed is skipped with an error logged (it names the row),
/// so that one bad row never fails a listing, the scheduler's start-up or a sweep.
pub(super) fn records<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .iter()
        .filter_map(|(id, record)| parsed(id, record))
        .collect())
}

/// The record, or `None` with an error logged when it cannot be parsed.
pub(super) fn parsed<T: serde::de::DeserializeOwned>(id: &str, record: &str) -> Option<T> {
    match serde_json::from_str(record) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(
                row_id = %id,
                record = std::any::type_name::<T>().rsplit("::").next().unwrap_or("record"),
                %error,
                "skipping a stored record that cannot be parsed"
            );
            None
        }
    }
}

/// The execution in `record` (row `id`) with its output; `None` (logged) when the record
/// cannot be parsed.
pub(super) fn read_execution(
    connection: &Connection,
    id: &str,
    record: &str,
) -> Result<Option<Execution>, DbError> {
    let Some(mut execution) = parsed::<Execution>(id, record) else {
        return Ok(None);
    };
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
    Ok(Some(execution))
}

pub(super) fn task_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskSummary> {
    Ok(TaskSummary {
        task: Task {
            task_id: row.get(0)?,
            created_at: Timestamp(row.get(1)?),
            last_modified_at: Timestamp(row.get(2)?),
        },
        jobs_count: row.get::<_, i64>(3)? as u64,
    })
}

/// Keeps the `schedules` index in line with when the scheduler must look at the job (its next
/// firing, or a pending run's grace: [`Job::attention_at`]).
pub(super) fn index_schedule(connection: &Connection, job: &Job) -> Result<(), DbError> {
    let job_id = job.job_id.to_string();
    match job.attention_at() {
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

/// Writes the job if its stored version is still `job.version` (0 for rows written before
/// versions existed), as `job.version + 1`: a compare-and-set in one statement.
pub(super) fn write_job(connection: &Connection, job: &Job) -> Result<(), DbError> {
    let written = Job {
        version: job.version + 1,
        ..job.clone()
    };
    let updated = connection
        .prepare_cached(
            "UPDATE jobs SET last_modified_at = ?2, record = ?3
             WHERE job_id = ?1 AND COALESCE(json_extract(record, '$.version'), 0) = ?4",
        )?
        .execute(params![
            job.job_id.to_string(),
            job.last_modified_at.0,
            serde_json::to_string(&written)?,
            job.version as i64
        ])?;
    if updated == 0 {
        return Err(DbError::Conflict(format!(
            "job {} was changed by another writer since version {} was read, or is gone",
            job.job_id, job.version
        )));
    }
    index_schedule(connection, &written)
}

pub(super) fn insert_execution(
    transaction: &Connection,
    execution: &Execution,
) -> Result<(), DbError> {
    transaction
        .prepare_cached(
            "INSERT INTO executions (execution_id, job_id, status, record, task_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            execution.execution_id.to_string(),
            execution.job_id.to_string(),
            execution.status.as_str(),
            serde_json::to_string(execution)?,
            execution.task_id,
            execution.created_at.0
        ])?;
    super::outbox::add_owed(transaction, execution)
}
