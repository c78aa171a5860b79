//! The [`Store`] port on the embedded database: tasks, jobs, executions and their outputs.

use super::records::{
    index_schedule, insert_execution, newest_execution_rows, parsed, read_execution, records,
    task_from_row, write_job,
};
use super::{history, outbox, DbError, Embedded};
use async_trait::async_trait;
use fastlane_actors::ports::{
    ExecutionFilter, ExecutionTail, OutputStream, Page, Paged, Store, StoreCounts, StoreError,
    OUTBOXES_COUNTED,
};
use fastlane_proto::idempotency::IdempotencyRecord;
use fastlane_proto::outbox::{Outbox, OwedNotification};
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

/// How many jobs a task has (`Store::list_jobs`' total).
const COUNT_JOBS_OF_TASK: &str =
    "SELECT COUNT(*) FROM jobs INDEXED BY jobs_by_task WHERE task_id = ?1";
/// One page of a task's jobs, newest change first; the rowid breaks ties in index order.
const PAGE_OF_JOBS_OF_TASK: &str =
    "SELECT job_id, record FROM jobs INDEXED BY jobs_by_task WHERE task_id = ?1
     ORDER BY last_modified_at DESC, rowid DESC LIMIT ?2 OFFSET ?3";

/// A page of the scheduler's index at start: (attention time, job id) after the cursor, in
/// the order of `schedules_by_time_id`, so each page is a range scan of it.
const SCHEDULED_PAGE: &str = "SELECT schedules.job_id, jobs.task_id, schedules.next_fire_at
     FROM schedules INDEXED BY schedules_by_time_id JOIN jobs ON jobs.job_id = schedules.job_id
     WHERE (schedules.next_fire_at, schedules.job_id) > (?1, ?2)
     ORDER BY schedules.next_fire_at, schedules.job_id LIMIT ?3";

/// `(job id, task id, attention time)` rows of a schedules query.
fn schedule_rows(
    connection: &rusqlite::Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
) -> Result<Vec<(Uuid, String, Timestamp)>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(parameters, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(job_id, task_id, next)| {
            let job_id =
                Uuid::parse_str(&job_id).map_err(|error| DbError::Corrupt(error.to_string()))?;
            Ok((job_id, task_id, Timestamp(next)))
        })
        .collect()
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
            outbox::delete_of_job(&transaction, &job_id)?;
            transaction.execute("DELETE FROM executions WHERE job_id = ?1", params![job_id])?;
            transaction.execute("DELETE FROM jobs WHERE job_id = ?1", params![job_id])?;
            transaction.execute("DELETE FROM schedules WHERE job_id = ?1", params![job_id])?;
            transaction.execute("DELETE FROM removed_executions WHERE job_id = ?1", params![job_id])?;
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

    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.claim_key(record, now).await
    }

    async fn get_idempotency_key(
        &self,
        task_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_key(task_id, key).await
    }

    async fn complete_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<bool, StoreError> {
        self.complete_key(record).await
    }

    async fn release_idempotency_key(
        &self,
        task_id: &str,
        key: &str,
        job_id: Uuid,
    ) -> Result<(), StoreError> {
        self.release_key(task_id, key, job_id).await
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

    async fn list_jobs(&self, task_id: &str, page: Page) -> Result<Paged<Job>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |connection| {
            // Both walk `jobs_by_task` (whose entries end with the rowid, the tie-break): the
            // count reads the task's index entries only, the page at most offset + per_page.
            let total: i64 =
                connection.query_row(COUNT_JOBS_OF_TASK, params![task_id], |row| row.get(0))?;
            let items = records(
                connection,
                PAGE_OF_JOBS_OF_TASK,
                params![
                    task_id,
                    page.per_page.min(i64::MAX as u64) as i64,
                    page.offset().min(i64::MAX as u64) as i64
                ],
            )?;
            Ok(Paged {
                items,
                total: total as u64,
            })
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
            // A record that cannot be parsed reads as absent (logged): the job's routes answer
            // 404 and its JobActor ends, instead of every read of the task failing.
            Ok(record.and_then(|record| parsed(&job_id.to_string(), &record)))
        })
        .await
        .map_err(StoreError::from)
    }

    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError> {
        self.with(move |connection| {
            let job_id = job_id.to_string();
            let count: i64 = connection.query_row(
                "SELECT COUNT(*) FROM executions WHERE job_id = ?1",
                params![job_id],
                |row| row.get(0),
            )?;
            let removed = history::removed_count(connection, &job_id)?;
            Ok(count.saturating_add(removed).max(0) as u64)
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
            let records = newest_execution_rows(connection, job_id, limit)?;
            let mut executions = Vec::with_capacity(records.len());
            for (id, record) in &records {
                executions.extend(read_execution(connection, id, record)?);
            }
            Ok(executions)
        })
        .await
        .map_err(StoreError::from)
    }

    async fn list_execution_tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError> {
        self.tails(job_id, limit, max_bytes).await
    }

    async fn get_execution_tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError> {
        self.tail(execution_id, max_bytes).await
    }

    async fn output_len(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<u64>, StoreError> {
        self.stored_len(execution_id, stream).await
    }

    async fn read_output(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.piece(execution_id, stream, offset, max_len).await
    }

    async fn last_execution(&self, job_id: Uuid) -> Result<Option<Execution>, StoreError> {
        self.with(move |connection| {
            // The record only: the outputs table is not read.
            let row: Option<(String, String)> = connection
                .prepare_cached(
                    "SELECT execution_id, record FROM executions WHERE job_id = ?1 \
                     ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![job_id.to_string()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            // As `get_execution`: an unparsable record reads as absent, with an error logged.
            Ok(row.and_then(|(id, record)| parsed::<Execution>(&id, &record)))
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
            // As `get_job`: an unparsable record reads as absent, with an error logged.
            match record {
                Some(record) => read_execution(connection, &execution_id.to_string(), &record),
                None => Ok(None),
            }
        })
        .await
        .map_err(StoreError::from)
    }

    async fn update_execution(
        &self,
        execution: &Execution,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        let execution = execution.clone();
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let id = execution.execution_id.to_string();
            let stored: Option<(String, String, i64)> = transaction
                .query_row("SELECT status, record, fence FROM executions WHERE execution_id = ?1", params![id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            if fence.is_some() && stored.is_none() {
                // A runner's claim is on a stored execution: gone since (deleted, or removed
                // by retention), it is not written back.
                return Err(DbError::Fenced(format!("execution {id} is gone")));
            }
            if let (Some(fence), Some((_, _, stored))) = (fence, &stored) {
                if *stored != fence as i64 {
                    return Err(DbError::Fenced(format!(
                        "execution {id} was claimed by another runner ({stored}, this one {fence})"
                    )));
                }
            }
            let stored = stored.map(|(status, record, _)| (status, record));
            let mut execution = execution;
            match stored.as_ref().and_then(|(status, record)| Some((ExecutionStatus::parse(status)?, record))) {
                Some((stored, _)) if stored.is_terminal() && stored != execution.status => {
                    return Err(DbError::Conflict(format!(
                        "execution {id} is already {stored}, it cannot become {}",
                        execution.status
                    )));
                }
                Some((stored_status, record)) => {
                    // Owed notifications come with the write that changes the status.
                    if stored_status != execution.status {
                        outbox::add_owed(&transaction, &execution)?;
                    }
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

    async fn claim_execution(&self, execution_id: Uuid) -> Result<Option<u64>, StoreError> {
        self.with(move |connection| {
            let fence: Option<i64> = connection
                .query_row(
                    "UPDATE executions SET fence = fence + 1 WHERE execution_id = ?1 RETURNING fence",
                    params![execution_id.to_string()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(fence.map(|fence| fence as u64))
        })
        .await
        .map_err(StoreError::from)
    }

    async fn create_execution(&self, execution: &Execution) -> Result<bool, StoreError> {
        let execution = execution.clone();
        self.with(move |connection| {
            let inserted = connection.execute(
                "INSERT OR IGNORE INTO executions (execution_id, job_id, status, record, task_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    execution.execution_id.to_string(),
                    execution.job_id.to_string(),
                    execution.status.as_str(),
                    serde_json::to_string(&execution)?,
                    execution.task_id,
                    execution.created_at.0
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

    async fn scheduled_page(
        &self,
        after: Option<(Timestamp, Uuid)>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        let (at, job_id) = match after {
            Some((at, job_id)) => (at.0, job_id.to_string()),
            None => (i64::MIN, String::new()),
        };
        self.with(move |connection| {
            schedule_rows(
                connection,
                SCHEDULED_PAGE,
                params![at, job_id, limit.min(i64::MAX as usize) as i64],
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
            schedule_rows(
                connection,
                "SELECT schedules.job_id, jobs.task_id, schedules.next_fire_at
                 FROM schedules JOIN jobs ON jobs.job_id = schedules.job_id
                 WHERE schedules.next_fire_at <= ?1 ORDER BY schedules.next_fire_at LIMIT ?2",
                params![before.0, limit.min(i64::MAX as usize) as i64],
            )
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

    async fn due_outboxes(&self, now: Timestamp, limit: usize) -> Result<Vec<Outbox>, StoreError> {
        let due = self.with(move |connection| outbox::due(connection, now, limit));
        due.await.map_err(StoreError::from)
    }

    async fn get_outbox(&self, execution_id: Uuid) -> Result<Option<Outbox>, StoreError> {
        let found = self.with(move |connection| outbox::get(connection, execution_id));
        found.await.map_err(StoreError::from)
    }

    async fn replace_outbox(
        &self,
        execution_id: Uuid,
        expected: u64,
        entries: &[OwedNotification],
    ) -> Result<bool, StoreError> {
        let entries = entries.to_vec();
        let written = self
            .with(move |connection| outbox::replace(connection, execution_id, expected, &entries));
        written.await.map_err(StoreError::from)
    }

    async fn executions_in(
        &self,
        status: ExecutionStatus,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        // Every id sorts after "": no cursor reads from the first.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            records(
                connection,
                "SELECT execution_id, record FROM executions INDEXED BY executions_by_status_id
                 WHERE status = ?1 AND execution_id > ?2 ORDER BY execution_id LIMIT ?3",
                params![status.as_str(), after, limit],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    async fn find_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> Result<Paged<Execution>, StoreError> {
        self.history(filter, page).await
    }

    async fn finished_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.finished_before_time(before, limit).await
    }

    async fn finished_beyond(
        &self,
        job_id: Uuid,
        keep: u64,
        settled: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.finished_beyond_kept(job_id, keep, settled, limit)
            .await
    }

    async fn job_ids_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.jobs_after(after, limit).await
    }

    async fn remove_executions(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        self.remove_finished(ids).await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.with(|connection| {
            let (tasks, jobs, scheduled): (i64, i64, i64) = connection.query_row(
                "SELECT (SELECT COUNT(*) FROM tasks), (SELECT COUNT(*) FROM jobs),
                        (SELECT COUNT(*) FROM schedules)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            let (owed_emails, owed_webhooks) = outbox::owed_counts(connection, OUTBOXES_COUNTED)?;
            Ok(StoreCounts {
                tasks: tasks as u64,
                jobs: jobs as u64,
                scheduled: scheduled as u64,
                owed_emails,
                owed_webhooks,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of a task's jobs, their count and a page of the scheduler's index at start are
    /// index range scans, sorted by the index itself: their cost grows with the page and the
    /// log of the table, not with the task or the number of schedules.
    #[test]
    fn pages_are_index_range_scans_without_a_sort() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch(super::super::SCHEMA).unwrap();
        for (sql, parameters) in [
            (COUNT_JOBS_OF_TASK, 1),
            (PAGE_OF_JOBS_OF_TASK, 3),
            (SCHEDULED_PAGE, 3),
        ] {
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            for index in 1..=parameters {
                statement.raw_bind_parameter(index, 1_i64).unwrap();
            }
            let mut rows = statement.raw_query();
            let mut details = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                details.push(row.get::<_, String>(3).unwrap());
            }
            assert!(
                details.iter().any(|detail| detail.starts_with("SEARCH")),
                "{sql}: {details:?}"
            );
            assert!(
                !details
                    .iter()
                    .any(|detail| detail.starts_with("SCAN") || detail.contains("TEMP B-TREE")),
                "{sql}: {details:?}"
            );
        }
    }
}
