//! The [`Queue`] port on the embedded database: messages in `queue`, leases as columns of their
//! rows, dead letters in `dead_letters`. Every operation is one call to the database thread, so
//! it runs in one transaction.

use super::{DbError, Embedded};
use crate::adapters::message::{self, millis};
use async_trait::async_trait;
use fastlane_actors::ports::{
    DeadLetter, Delivery, Queue, QueueError, QueueMessage, QueueStats, Store, MAX_FAILED_DELIVERIES,
};
use fastlane_proto::Timestamp;
use rusqlite::{params, Connection};
use std::time::Duration;

// The statements every lease runs, whatever the backlog: each is an index range scan
// (`queue_ready`, `queue_by_lease`, `queue_by_failures`), checked by the query-plan test below.

/// ?1: now on the lease clock. Expired leases become failed deliveries.
const TAKE_BACK_EXPIRED: &str =
    "UPDATE queue SET lease_owner = NULL, lease_until = NULL, failures = failures + 1,
     last_error = 'its lease expired: the node running it stopped answering'
     WHERE lease_until < ?1";

/// ?1: consumer, ?2: lease until, ?3: now (wall clock), ?4: max.
const LEASE_DUE: &str =
    "UPDATE queue SET lease_owner = ?1, lease_until = ?2, deliveries = deliveries + 1
     WHERE seq IN (
         SELECT seq FROM queue INDEXED BY queue_ready
         WHERE due_at <= ?3 AND lease_until IS NULL
         ORDER BY due_at, seq LIMIT ?4)
     RETURNING id, body, deliveries, due_at, seq";

/// ?1: now, ?2: failure limit.
const COPY_FAILED: &str = "INSERT OR IGNORE INTO dead_letters (id, body, reason, at, deliveries)
     SELECT id, body, COALESCE(last_error, 'failed'), ?1, deliveries FROM queue
     WHERE failures >= ?2";

/// ?1: failure limit.
const DELETE_FAILED: &str = "DELETE FROM queue WHERE failures >= ?1";

#[async_trait]
impl Queue for Embedded {
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError> {
        let body = message::encode(message).map_err(|e| QueueError::Internal(e.to_string()))?;
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
        let clock = self.clock;
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let now = Timestamp::now().unix_millis();
            let lease_now = clock.now_ms();
            // An expired lease is a failed delivery, counted once.
            transaction.execute(TAKE_BACK_EXPIRED, params![lease_now])?;
            bury_failed(&transaction, now)?;
            let lease_until = lease_now + millis(lease_for);
            let deliveries = lease_due(&transaction, &consumer, now, lease_until, max)?;
            transaction.commit()?;
            Ok(deliveries)
        })
        .await
        .map_err(QueueError::from)
    }

    // The ids' slots are extended in the same call (see `Slots`). A lease that expired but was
    // not taken by anyone yet is still the consumer's: renewing it keeps the run going.
    async fn renew(
        &self,
        consumer: &str,
        ids: &[String],
        lease_for: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let consumer = consumer.to_string();
        let ids = serde_json::to_string(ids).map_err(|e| QueueError::Internal(e.to_string()))?;
        let clock = self.clock;
        self.with(move |connection| {
            let until = clock.now_ms() + millis(lease_for);
            connection.execute(
                "UPDATE queue SET lease_until = ?1
                 WHERE lease_owner = ?2 AND id IN (SELECT value FROM json_each(?3))",
                params![until, consumer, ids],
            )?;
            connection.execute(
                "UPDATE slots SET until = ?1 WHERE holder IN (SELECT value FROM json_each(?2))",
                params![until, ids],
            )?;
            let mut statement = connection.prepare_cached(
                "SELECT value FROM json_each(?1) WHERE value NOT IN
                 (SELECT id FROM queue WHERE lease_owner = ?2)",
            )?;
            let lost = statement
                .query_map(params![ids, consumer], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(lost)
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            let rows = dead_letter_rows(
                connection,
                "SELECT id, body, reason, at, deliveries, seq FROM dead_letters
                 ORDER BY seq DESC LIMIT ?1",
                params![limit],
            )?;
            Ok(rows.into_iter().map(|(letter, _)| letter).collect())
        })
        .await
        .map_err(QueueError::from)
    }

    // The position is the row's `seq` (AUTOINCREMENT: it only grows).
    async fn dead_letters_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, u64), QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let from = i64::try_from(after).unwrap_or(i64::MAX);
        self.with(move |connection| {
            let rows = dead_letter_rows(
                connection,
                "SELECT id, body, reason, at, deliveries, seq FROM dead_letters
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![from, limit],
            )?;
            let next = rows.last().map_or(after, |(_, seq)| *seq);
            Ok((rows.into_iter().map(|(letter, _)| letter).collect(), next))
        })
        .await
        .map_err(QueueError::from)
    }

    async fn remove_dead_letters_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            // The oldest `limit` by position (the primary key), of which those buried before.
            let removed = connection.execute(
                "DELETE FROM dead_letters WHERE seq IN (
                     SELECT seq FROM (SELECT seq, at FROM dead_letters ORDER BY seq LIMIT ?2)
                     WHERE at < ?1)",
                params![before.unix_millis(), limit],
            )?;
            Ok(removed as u64)
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
        let clock = self.clock;
        self.with(move |connection| {
            let now = Timestamp::now().unix_millis();
            let (ready, delayed, leased, dead): (i64, i64, i64, i64) = connection.query_row(
                "SELECT
                   COALESCE(SUM(due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?2)), 0),
                   COALESCE(SUM(due_at > ?1 AND (lease_until IS NULL OR lease_until < ?2)), 0),
                   COALESCE(SUM(lease_until >= ?2), 0),
                   (SELECT COUNT(*) FROM dead_letters)
                 FROM queue",
                params![now, clock.now_ms()],
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

    async fn ping(&self) -> Result<(), QueueError> {
        Store::ping(self)
            .await
            .map_err(|error| QueueError::Unavailable(error.to_string()))
    }
}

/// Leases up to `max` due messages (due on the wall clock at `now`), oldest first, until
/// `lease_until` on the lease clock. A message whose body cannot be read is
/// dead-lettered instead of failing every lease after it.
fn lease_due(
    connection: &Connection,
    consumer: &str,
    now: i64,
    lease_until: i64,
    max: usize,
) -> Result<Vec<Delivery>, DbError> {
    let mut statement = connection.prepare_cached(LEASE_DUE)?;
    let mut rows = statement
        .query_map(params![consumer, lease_until, now, max as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee: restore FIFO.
    rows.sort_by_key(|row| (row.3, row.4));
    let mut deliveries = Vec::with_capacity(rows.len());
    for (id, body, count, _, _) in rows {
        match message::decode(&id, &body) {
            Ok(message) => deliveries.push(Delivery {
                message,
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

/// The dead letters `sql` selects (id, body, reason, at, deliveries, seq), with their `seq`.
fn dead_letter_rows(
    connection: &Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
) -> Result<Vec<(DeadLetter, u64)>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(parameters, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(id, body, reason, at, deliveries, seq)| {
            let letter = DeadLetter {
                message: message::decode_leniently(&id, &body),
                reason,
                at: Timestamp::from_unix_millis(at),
                deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
            };
            (letter, u64::try_from(seq).unwrap_or_default())
        })
        .collect())
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
    connection.execute(COPY_FAILED, params![now, MAX_FAILED_DELIVERIES])?;
    let buried = connection.execute(DELETE_FAILED, params![MAX_FAILED_DELIVERIES])?;
    Ok(buried as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of `sql` as SQLite reports it, one detail per line.
    fn plan(connection: &Connection, sql: &str, parameters: usize) -> Vec<String> {
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
        details
    }

    /// What every lease runs (take back expired leases, bury failed messages, lease due ones)
    /// reads the queue through an index, never by scanning the table: its cost grows with the
    /// log of the backlog, not with the backlog.
    #[test]
    fn every_lease_statement_is_an_index_range_scan() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(super::super::SCHEMA).unwrap();
        for (sql, parameters) in [
            (TAKE_BACK_EXPIRED, 1),
            (LEASE_DUE, 4),
            (COPY_FAILED, 2),
            (DELETE_FAILED, 1),
        ] {
            let details = plan(&connection, sql, parameters);
            assert!(
                details
                    .iter()
                    .any(|detail| detail.starts_with("SEARCH queue USING")),
                "{sql}: {details:?}"
            );
            // `SCAN` (of the table or of a whole index) is linear; `SEARCH` is a range scan.
            assert!(
                !details
                    .iter()
                    .any(|detail| detail.starts_with("SCAN queue")),
                "{sql} scans the queue: {details:?}"
            );
        }
    }
}
