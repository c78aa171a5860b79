//! Execution history and retention on the embedded database: the executions table carries the
//! task and creation time of each row (columns added to databases made before, filled from the
//! records once), indexed so that every filter of the history routes is an index range read
//! in creation order; retention removes finished executions in small batches and counts them
//! on their job (`removed_executions`), so `executionCount` stays the total ever run.

use super::records::records;
use super::{DbError, Embedded};
use fastlane_actors::ports::{ExecutionFilter, Page, Paged, StoreError};
use fastlane_proto::{Execution, Timestamp};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use uuid::Uuid;

/// The indexes of the history, and the count of removed executions per job. Each history index
/// ends with `created_at`, then the row id (implicit), which is the history's order.
const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS executions_history ON executions (created_at);
CREATE INDEX IF NOT EXISTS executions_history_by_job ON executions (job_id, created_at);
CREATE INDEX IF NOT EXISTS executions_history_by_job_status ON executions (job_id, status, created_at);
CREATE INDEX IF NOT EXISTS executions_history_by_task ON executions (task_id, created_at);
CREATE INDEX IF NOT EXISTS executions_history_by_task_status ON executions (task_id, status, created_at);
CREATE INDEX IF NOT EXISTS executions_history_by_status ON executions (status, created_at);
CREATE TABLE IF NOT EXISTS removed_executions (
    job_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
";

/// Adds the `task_id` and `created_at` columns to a database made before them and fills them
/// from the records, then creates the history's indexes: in one transaction, so a node killed
/// meanwhile finds the database as it was (the fill runs again for rows it did not reach).
pub(super) fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for column in ["task_id TEXT", "created_at INTEGER"] {
        let name = column.split(' ').next().unwrap_or(column);
        let present: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('executions') WHERE name = ?1)",
            params![name],
            |row| row.get(0),
        )?;
        if !present {
            transaction.execute_batch(&format!("ALTER TABLE executions ADD COLUMN {column}"))?;
        }
    }
    transaction.execute_batch(
        "UPDATE executions SET task_id = json_extract(record, '$.task_id'),
                               created_at = COALESCE(json_extract(record, '$.created_at'), 0)
         WHERE created_at IS NULL OR task_id IS NULL;",
    )?;
    transaction.execute_batch(SCHEMA)?;
    transaction.commit()
}

/// The WHERE clause of `filter` and its values, numbered from `?1`.
fn conditions(filter: &ExecutionFilter) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut add = |clause: &str, value: Value| {
        values.push(value);
        clauses.push(clause.replace('?', &format!("?{}", values.len())));
    };
    // A job's rows are all of its task (the caller checked the job is in it): the job's index
    // serves alone.
    if let (Some(task_id), None) = (&filter.task_id, filter.job_id) {
        add("task_id = ?", Value::Text(task_id.clone()));
    }
    if let Some(job_id) = filter.job_id {
        add("job_id = ?", Value::Text(job_id.to_string()));
    }
    if let Some(status) = filter.status {
        add("status = ?", Value::Text(status.as_str().to_string()));
    }
    if let Some(since) = filter.since {
        add("created_at >= ?", Value::Integer(since.0));
    }
    if let Some(until) = filter.until {
        add("created_at < ?", Value::Integer(until.0));
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (clause, values)
}

fn find(
    connection: &Connection,
    filter: &ExecutionFilter,
    page: Page,
) -> Result<Paged<Execution>, DbError> {
    let (clause, mut values) = conditions(filter);
    let total: i64 = connection
        .prepare_cached(&format!("SELECT COUNT(*) FROM executions {clause}"))?
        .query_row(params_from_iter(values.iter()), |row| row.get(0))?;
    let limit = i64::try_from(page.per_page).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.offset()).unwrap_or(i64::MAX);
    values.push(Value::Integer(limit));
    values.push(Value::Integer(offset));
    let count = values.len();
    let items = records(
        connection,
        &format!(
            "SELECT execution_id, record FROM executions {clause}
             ORDER BY created_at DESC, seq DESC LIMIT ?{} OFFSET ?{count}",
            count - 1
        ),
        params_from_iter(values.iter()),
    )?;
    Ok(Paged {
        items,
        total: total.max(0) as u64,
    })
}

/// Rows retention may remove: terminal, owing no notification.
const REMOVABLE: &str = "status IN ('done', 'failed', 'timedout', 'expired', 'stopped')
    AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.execution_id = executions.execution_id
                    AND outbox.due_at IS NOT NULL)";

/// When a row finished (its last write when it never ran), from its record.
const FINISHED_AT: &str =
    "COALESCE(json_extract(record, '$.finished_at'), json_extract(record, '$.last_modified_at'))";

fn ids(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Uuid>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(params, |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

impl Embedded {
    pub(super) async fn history(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> Result<Paged<Execution>, StoreError> {
        let filter = filter.clone();
        let found = self.read(move |connection| find(connection, &filter, page));
        found.await.map_err(StoreError::from)
    }

    pub(super) async fn finished_before_time(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            ids(
                connection,
                &format!(
                    "SELECT execution_id FROM executions INDEXED BY executions_history
                     WHERE created_at < ?1 AND {FINISHED_AT} < ?1 AND {REMOVABLE}
                     AND EXISTS (SELECT 1 FROM executions AS newer
                                 WHERE newer.job_id = executions.job_id
                                 AND newer.created_at > executions.created_at)
                     ORDER BY created_at LIMIT ?2"
                ),
                params![before.0, limit],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    pub(super) async fn finished_beyond_kept(
        &self,
        job_id: Uuid,
        keep: u64,
        settled: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let job_id = job_id.to_string();
        self.with(move |connection| {
            // The newest execution past those kept: it and every older one may go.
            let first_gone: Option<(i64, i64)> = connection
                .prepare_cached(
                    "SELECT COALESCE(created_at, 0), seq FROM executions WHERE job_id = ?1
                     ORDER BY created_at DESC, seq DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![job_id, keep], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((created_at, seq)) = first_gone else {
                return Ok(Vec::new());
            };
            ids(
                connection,
                &format!(
                    "SELECT execution_id FROM executions
                     WHERE job_id = ?1 AND (created_at < ?2 OR (created_at = ?2 AND seq <= ?3))
                     AND {FINISHED_AT} < ?4 AND {REMOVABLE} ORDER BY created_at, seq LIMIT ?5"
                ),
                params![job_id, created_at, seq, settled.0, limit],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    pub(super) async fn jobs_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            ids(
                connection,
                "SELECT job_id FROM jobs WHERE job_id > ?1 ORDER BY job_id LIMIT ?2",
                params![after, limit],
            )
        })
        .await
        .map_err(StoreError::from)
    }

    pub(super) async fn remove_finished(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.with(move |connection| {
            let mut removed = 0;
            for id in &ids {
                let job_id: Option<String> = connection
                    .prepare_cached(&format!(
                        "DELETE FROM executions WHERE execution_id = ?1 AND {REMOVABLE}
                         RETURNING job_id"
                    ))?
                    .query_row(params![id], |row| row.get(0))
                    .optional()?;
                let Some(job_id) = job_id else {
                    continue;
                };
                connection
                    .prepare_cached("DELETE FROM outputs WHERE execution_id = ?1")?
                    .execute(params![id])?;
                connection
                    .prepare_cached("DELETE FROM outbox WHERE execution_id = ?1")?
                    .execute(params![id])?;
                connection
                    .prepare_cached(
                        "INSERT INTO removed_executions (job_id, count) VALUES (?1, 1)
                         ON CONFLICT (job_id) DO UPDATE SET count = count + 1",
                    )?
                    .execute(params![job_id])?;
                removed += 1;
            }
            Ok(removed)
        })
        .await
        .map_err(StoreError::from)
    }
}

/// Removed executions of a job, counted into `executionCount`.
pub(super) fn removed_count(connection: &Connection, job_id: &str) -> Result<i64, DbError> {
    let removed: Option<i64> = connection
        .prepare_cached("SELECT count FROM removed_executions WHERE job_id = ?1")?
        .query_row(params![job_id], |row| row.get(0))
        .optional()?;
    Ok(removed.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastlane_proto::ExecutionStatus;

    /// The plan of `sql` with `values` bound, one detail per line.
    fn plan(connection: &Connection, sql: &str, values: &[Value]) -> Vec<String> {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let mut rows = statement.query(params_from_iter(values.iter())).unwrap();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        details
    }

    /// Every filter of the history reads the executions through an index, in the history's
    /// order (no sort in memory), and its count through an index too: a page costs the same
    /// with 100 or 10 million executions stored.
    #[test]
    fn every_history_filter_is_an_index_range_read_in_order() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(super::super::SCHEMA).unwrap();
        migrate(&mut connection).unwrap();
        let job = Some(Uuid::new_v4());
        let task = Some("t".to_string());
        let status = Some(ExecutionStatus::Running);
        let since = Some(Timestamp(1));
        for filter in [
            ExecutionFilter::default(),
            ExecutionFilter {
                job_id: job,
                task_id: task.clone(),
                ..Default::default()
            },
            ExecutionFilter {
                job_id: job,
                task_id: task.clone(),
                status,
                since,
                ..Default::default()
            },
            ExecutionFilter {
                task_id: task.clone(),
                ..Default::default()
            },
            ExecutionFilter {
                task_id: task.clone(),
                status,
                ..Default::default()
            },
            ExecutionFilter {
                status,
                until: since,
                ..Default::default()
            },
            ExecutionFilter {
                since,
                ..Default::default()
            },
        ] {
            let (clause, mut values) = conditions(&filter);
            let count = plan(
                &connection,
                &format!("SELECT COUNT(*) FROM executions {clause}"),
                &values,
            );
            values.push(Value::Integer(20));
            values.push(Value::Integer(0));
            let n = values.len();
            let page = plan(
                &connection,
                &format!(
                    "SELECT execution_id, record FROM executions {clause}
                     ORDER BY created_at DESC, seq DESC LIMIT ?{} OFFSET ?{n}",
                    n - 1
                ),
                &values,
            );
            for details in [&count, &page] {
                assert!(
                    details
                        .iter()
                        .all(|detail| !detail.starts_with("SCAN executions")
                            || detail.contains("COVERING INDEX")
                            || detail.contains("USING INDEX")),
                    "{filter:?}: {details:?}"
                );
            }
            assert!(
                page.iter()
                    .any(|detail| detail.contains("INDEX executions_history")),
                "{filter:?}: {page:?}"
            );
            assert!(
                !page.iter().any(|detail| detail.contains("TEMP B-TREE")),
                "{filter:?}: sorted in memory: {page:?}"
            );
        }
    }

    #[test]
    fn conditions_number_their_values_in_order() {
        let filter = ExecutionFilter {
            task_id: Some("t".into()),
            status: Some(ExecutionStatus::Running),
            until: Some(Timestamp(5)),
            ..Default::default()
        };
        let (clause, values) = conditions(&filter);
        assert_eq!(
            clause,
            "WHERE task_id = ?1 AND status = ?2 AND created_at < ?3"
        );
        assert_eq!(values.len(), 3);
        assert_eq!(conditions(&ExecutionFilter::default()).0, "");
    }
}
