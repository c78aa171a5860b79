//! Idempotency keys on MongoDB (see `fastlane_proto::idempotency`): collection
//! `idempotency_keys`, one document per task and key, claimed by an upsert that only matches an
//! expired document — a live one makes it fail as a duplicate `_id`, so two nodes claiming the
//! same key at once cannot both win.

use super::{bounded, from_document, is_duplicate, to_document, MongoStore};
use fastlane_actors::ports::StoreError;
use fastlane_proto::idempotency::IdempotencyRecord;
use fastlane_proto::Timestamp;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use uuid::Uuid;

/// Expired documents removed per claim: the collection shrinks at least as fast as it grows.
const EXPIRED_PER_CLAIM: i64 = 16;

/// One `_id` per task and key, unambiguous whatever either holds.
fn id_of(task_id: &str, key: &str) -> String {
    format!("{}:{task_id}{key}", task_id.len())
}

fn fields(record: &IdempotencyRecord) -> Result<Document, StoreError> {
    Ok(doc! {
        "task_id": &record.task_id,
        "key": &record.key,
        "job_id": record.job_id.to_string(),
        "expires_at": record.expires_at.0,
        "record": to_document(record)?,
    })
}

impl MongoStore {
    pub(super) async fn claim_key(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let expired: Vec<Document> = bounded(
            self.idempotency_keys
                .find(doc! {"expires_at": {"$lte": now.0}})
                .projection(doc! {"_id": 1})
                .limit(EXPIRED_PER_CLAIM),
        )
        .await?
        .try_collect()
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        if !expired.is_empty() {
            let ids: Vec<_> = expired
                .iter()
                .filter_map(|d| d.get("_id").cloned())
                .collect();
            bounded(self.idempotency_keys.delete_many(doc! {
                "_id": {"$in": ids}, "expires_at": {"$lte": now.0}
            }))
            .await?;
        }
        let id = id_of(&record.task_id, &record.key);
        // A few rounds: the live document that refused the upsert may expire or be released
        // before it is read.
        for _ in 0..3 {
            let claimed = bounded(
                self.idempotency_keys
                    .update_one(
                        doc! {"_id": &id, "expires_at": {"$lte": now.0}},
                        doc! {"$set": fields(record)?},
                    )
                    .upsert(true),
            )
            .await;
            match claimed {
                Ok(_) => return Ok(None),
                Err(error) if is_duplicate(&error) => {
                    if let Some(live) = self.get_key(&record.task_id, &record.key).await? {
                        return Ok(Some(live));
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict(
            "the idempotency key changed hands while it was claimed".into(),
        ))
    }

    pub(super) async fn get_key(
        &self,
        task_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(document) = bounded(
            self.idempotency_keys
                .find_one(doc! {"_id": id_of(task_id, key)}),
        )
        .await?
        else {
            return Ok(None);
        };
        match document.get_document("record").map_err(|e| e.to_string()) {
            Ok(record) => match from_document::<IdempotencyRecord>(record) {
                Ok(record) => Ok(Some(record)),
                Err(error) => {
                    tracing::error!(task_id, %error, "skipping an idempotency key that cannot be parsed");
                    Ok(None)
                }
            },
            Err(error) => {
                tracing::error!(task_id, %error, "skipping an idempotency key that cannot be parsed");
                Ok(None)
            }
        }
    }

    pub(super) async fn complete_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<bool, StoreError> {
        let result = bounded(self.idempotency_keys.update_one(
            doc! {"_id": id_of(&record.task_id, &record.key), "job_id": record.job_id.to_string()},
            doc! {"$set": fields(record)?},
        ))
        .await?;
        Ok(result.matched_count == 1)
    }

    pub(super) async fn release_key(
        &self,
        task_id: &str,
        key: &str,
        job_id: Uuid,
    ) -> Result<(), StoreError> {
        bounded(
            self.idempotency_keys
                .delete_one(doc! {"_id": id_of(task_id, key), "job_id": job_id.to_string()}),
        )
        .await?;
        Ok(())
    }
}
