//! Idempotency keys on the embedded database (see `fastlane_proto::idempotency`): one row per
//! task and key, the record as JSON, its expiry indexed so that expired rows are removed in
//! small batches as new keys are claimed.

use super::{DbError, Embedded};
use fastlane_actors::ports::StoreError;
use fastlane_proto::idempotency::IdempotencyRecord;
use fastlane_proto::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

/// The table and its expiry index, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS idempotency_keys (
    task_id TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (task_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_at);
";

/// Expired rows removed per claim: the table shrinks at least as fast as it grows.
const EXPIRED_PER_CLAIM: i64 = 16;

fn read(
    connection: &Connection,
    task_id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, DbError> {
    let text: Option<String> = connection
        .prepare_cached("SELECT record FROM idempotency_keys WHERE task_id = ?1 AND key = ?2")?
        .query_row(params![task_id, key], |row| row.get(0))
        .optional()?;
    match text.map(|text| serde_json::from_str::<IdempotencyRecord>(&text)) {
        None => Ok(None),
        Some(Ok(record)) => Ok(Some(record)),
        Some(Err(error)) => {
            // An unreadable row is as good as absent: the key is used again.
            tracing::error!(task_id, %error, "skipping an idempotency key that cannot be parsed");
            Ok(None)
        }
    }
}

fn write(connection: &Connection, record: &IdempotencyRecord) -> Result<(), DbError> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (task_id, key, job_id, expires_at, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            record.task_id,
            record.key,
            record.job_id.to_string(),
            record.expires_at.0,
            serde_json::to_string(record)?
        ])?;
    Ok(())
}

impl Embedded {
    pub(super) async fn claim_key(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let record = record.clone();
        self.with(move |connection| {
            connection
                .prepare_cached(
                    "DELETE FROM idempotency_keys WHERE rowid IN
                     (SELECT rowid FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2)",
                )?
                .execute(params![now.0, EXPIRED_PER_CLAIM])?;
            if let Some(live) = read(connection, &record.task_id, &record.key)? {
                if live.expires_at > now {
                    return Ok(Some(live));
                }
            }
            write(connection, &record)?;
            Ok(None)
        })
        .await
        .map_err(StoreError::from)
    }

    pub(super) async fn get_key(
        &self,
        task_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (task_id, key) = (task_id.to_string(), key.to_string());
        self.with(move |connection| read(connection, &task_id, &key))
            .await
            .map_err(StoreError::from)
    }

    pub(super) async fn complete_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<bool, StoreError> {
        let record = record.clone();
        self.with(move |connection| {
            let current = read(connection, &record.task_id, &record.key)?;
            if current.is_none_or(|current| current.job_id != record.job_id) {
                return Ok(false);
            }
            write(connection, &record)?;
            Ok(true)
        })
        .await
        .map_err(StoreError::from)
    }

    pub(super) async fn release_key(
        &self,
        task_id: &str,
        key: &str,
        job_id: Uuid,
    ) -> Result<(), StoreError> {
        let (task_id, key) = (task_id.to_string(), key.to_string());
        self.with(move |connection| {
            connection
                .prepare_cached(
                    "DELETE FROM idempotency_keys WHERE task_id = ?1 AND key = ?2 AND job_id = ?3",
                )?
                .execute(params![task_id, key, job_id.to_string()])?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }
}
