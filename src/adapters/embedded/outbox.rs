//! The notification outbox on the embedded database: one row per execution that owes or owed
//! notifications (`outbox`), written in the transaction that writes the execution, with its due
//! time indexed (settled deliveries leave the index). See `fastlane_proto::outbox`.

use super::DbError;
use fastlane_proto::outbox::{self, Outbox, OwedNotification};
use fastlane_proto::{Execution, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

/// The table and its due index, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    execution_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    entries TEXT NOT NULL,
    due_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox (due_at) WHERE due_at IS NOT NULL;
";

/// Adds the entries of `execution.outbox` the stored outbox does not hold, inside the caller's
/// transaction (the write that changes the execution's status).
pub(super) fn add_owed(transaction: &Connection, execution: &Execution) -> Result<(), DbError> {
    if execution.outbox.is_empty() {
        return Ok(());
    }
    let id = execution.execution_id.to_string();
    let (version, mut entries) = match read(transaction, &id)? {
        Some(stored) => (stored.version, stored.entries),
        None => (0, Vec::new()),
    };
    if !outbox::merge(&mut entries, &execution.outbox) {
        return Ok(());
    }
    transaction
        .prepare_cached(
            "INSERT INTO outbox (execution_id, task_id, job_id, version, entries, due_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (execution_id) DO UPDATE SET
                version = excluded.version, entries = excluded.entries, due_at = excluded.due_at",
        )?
        .execute(params![
            id,
            execution.task_id,
            execution.job_id.to_string(),
            (version + 1) as i64,
            serde_json::to_string(&entries)?,
            outbox::due_at(&entries).map(|at| at.0),
        ])?;
    Ok(())
}

/// Up to `limit` outboxes due at `now`, soonest first; an unparsable row is skipped (logged) and
/// taken out of the due index.
pub(super) fn due(
    connection: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Outbox>, DbError> {
    let mut statement = connection.prepare_cached(
        "SELECT execution_id, task_id, job_id, version, entries FROM outbox
         WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![now.0, limit.min(i64::MAX as usize) as i64], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.0.clone();
        match parse(row) {
            Some(outbox) => due.push(outbox),
            // Out of the due index, or it would come first in every round for ever.
            None => {
                connection.execute(
                    "UPDATE outbox SET due_at = NULL WHERE execution_id = ?1",
                    params![id],
                )?;
            }
        }
    }
    Ok(due)
}

/// E-mails and webhook calls owed (entries not settled), over at most `limit` outboxes that owe
/// something (those in the due index).
pub(super) fn owed_counts(connection: &Connection, limit: usize) -> Result<(u64, u64), DbError> {
    let mut statement = connection.prepare_cached(
        "SELECT json_extract(entry.value, '$.kind'), COUNT(*)
         FROM (SELECT entries FROM outbox WHERE due_at IS NOT NULL LIMIT ?1) AS owing,
              json_each(owing.entries) AS entry
         WHERE json_type(entry.value, '$.nextAt') NOT IN ('null')
         GROUP BY 1",
    )?;
    let rows = statement
        .query_map(params![limit.min(i64::MAX as usize) as i64], |row| {
            Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let count = |kind: &str| {
        rows.iter()
            .filter(|(name, _)| name.as_deref() == Some(kind))
            .map(|(_, count)| *count as u64)
            .sum()
    };
    Ok((count("email"), count("webhook")))
}

/// The outbox of `execution_id`.
pub(super) fn get(connection: &Connection, execution_id: Uuid) -> Result<Option<Outbox>, DbError> {
    read(connection, &execution_id.to_string())
}

/// Replaces the entries if the version is still `expected`; `true` when written.
pub(super) fn replace(
    connection: &Connection,
    execution_id: Uuid,
    expected: u64,
    entries: &[OwedNotification],
) -> Result<bool, DbError> {
    let written = connection
        .prepare_cached(
            "UPDATE outbox SET version = version + 1, entries = ?3, due_at = ?4
             WHERE execution_id = ?1 AND version = ?2",
        )?
        .execute(params![
            execution_id.to_string(),
            expected as i64,
            serde_json::to_string(entries)?,
            outbox::due_at(entries).map(|at| at.0),
        ])?;
    Ok(written == 1)
}

/// Removes the outboxes of a job's executions (the job is being deleted).
pub(super) fn delete_of_job(transaction: &Connection, job_id: &str) -> Result<(), DbError> {
    transaction.execute("DELETE FROM outbox WHERE job_id = ?1", params![job_id])?;
    Ok(())
}

type Row = (String, String, String, i64, String);

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn read(connection: &Connection, id: &str) -> Result<Option<Outbox>, DbError> {
    let found = connection
        .prepare_cached(
            "SELECT execution_id, task_id, job_id, version, entries FROM outbox WHERE execution_id = ?1",
        )?
        .query_row(params![id], row)
        .optional()?;
    Ok(found.and_then(parse))
}

/// The outbox of a row, or `None` with an error logged: one bad row must not stop deliveries.
fn parse((execution_id, task_id, job_id, version, entries): Row) -> Option<Outbox> {
    let entries = super::records::parsed::<Vec<OwedNotification>>(&execution_id, &entries)?;
    let (Ok(execution), Ok(job)) = (Uuid::parse_str(&execution_id), Uuid::parse_str(&job_id))
    else {
        tracing::error!(row_id = %execution_id, "skipping an outbox row with a malformed id");
        return None;
    };
    Some(Outbox {
        execution_id: execution,
        task_id,
        job_id: job,
        version: version.max(0) as u64,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row that cannot be parsed is skipped and leaves the due index, so that rows like it can
    /// never fill every round and stop deliveries.
    #[test]
    fn a_bad_row_leaves_the_due_index() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA).unwrap();
        let good = Uuid::new_v4();
        for (id, entries) in [
            ("not-a-uuid", "[]"),
            ("bad-json", "{"),
            (&good.to_string()[..], "[]"),
        ] {
            connection
                .execute(
                    "INSERT INTO outbox VALUES (?1, 'task', ?2, 1, ?3, 5)",
                    params![id, Uuid::new_v4().to_string(), entries],
                )
                .unwrap();
        }
        let found = due(&connection, Timestamp(10), 10).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].execution_id, good);
        let still_due: i64 = connection
            .query_row(
                "SELECT count(*) FROM outbox WHERE due_at IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(still_due, 1);
    }
}
