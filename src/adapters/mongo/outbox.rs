//! The notification outbox on MongoDB: on the execution's own document, so the write that
//! records a status also records what it owes, atomically without transactions. Fields:
//! `outbox` (`{delivery id: entry}`), `outbox_version` (bumped by every change; replaces are
//! compare-and-set on it) and `notify_due_at` (the soonest unsettled delivery, indexed; absent
//! once everything is settled). See `fastlane_proto::outbox`.

use super::{bounded, from_document, internal, readable_record, to_document, MongoStore};
use fastlane_actors::ports::StoreError;
use fastlane_proto::outbox::{self, Outbox, OwedNotification};
use fastlane_proto::{Execution, Timestamp};
use mongodb::bson::{doc, Bson, Document};
use uuid::Uuid;

/// The outbox fields of a new execution document that owes `execution.outbox`.
pub(super) fn insert_fields(
    execution: &Execution,
    document: &mut Document,
) -> Result<(), StoreError> {
    if execution.outbox.is_empty() {
        return Ok(());
    }
    document.insert("outbox", entries_document(&execution.outbox)?);
    document.insert("outbox_version", 1_i64);
    if let Some(due) = outbox::due_at(&execution.outbox) {
        document.insert("notify_due_at", due.0);
    }
    Ok(())
}

fn entries_document(entries: &[OwedNotification]) -> Result<Document, StoreError> {
    let mut document = Document::new();
    for entry in entries {
        document.insert(entry.id.to_string(), to_document(entry)?);
    }
    Ok(document)
}

/// The outbox of an execution document (`None` when it never owed anything); entries that cannot
/// be parsed are skipped with an error logged.
fn outbox_of(document: &Document) -> Option<Outbox> {
    let version = match document.get("outbox_version")? {
        Bson::Int64(version) => *version,
        Bson::Int32(version) => i64::from(*version),
        _ => return None,
    };
    let execution: Execution = readable_record(document)?;
    let mut entries = Vec::new();
    if let Ok(stored) = document.get_document("outbox") {
        for (id, entry) in stored {
            let parsed = entry
                .as_document()
                .ok_or_else(|| internal("outbox entry is not a document"))
                .and_then(from_document::<OwedNotification>);
            match parsed {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    tracing::error!(execution_id = %execution.execution_id, delivery_id = %id, %error, "skipping an outbox entry that cannot be parsed")
                }
            }
        }
    }
    Some(Outbox {
        execution_id: execution.execution_id,
        task_id: execution.task_id,
        job_id: execution.job_id,
        version: version.max(0) as u64,
        entries,
    })
}

/// What an outbox read needs of an execution document (not its output or webhook attempts).
fn projection() -> Document {
    doc! {"record": 1, "outbox": 1, "outbox_version": 1}
}

impl MongoStore {
    /// The write of `set` that changes the execution's status and adds its owed notifications,
    /// when it has any and the stored status is neither terminal nor already this one: one
    /// conditional update, so the debt is recorded exactly with the status. `false` when that
    /// is not the case (the caller writes without touching the outbox).
    pub(super) async fn write_status_change(
        &self,
        execution: &Execution,
        set: &Document,
        terminal: &[&str],
        fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        let Some(due) = outbox::due_at(&execution.outbox) else {
            return Ok(false);
        };
        let mut set = set.clone();
        for entry in &execution.outbox {
            set.insert(format!("outbox.{}", entry.id), to_document(entry)?);
        }
        let mut other_statuses: Vec<&str> = terminal.to_vec();
        other_statuses.push(execution.status.as_str());
        let mut filter =
            doc! {"_id": execution.execution_id.to_string(), "status": {"$nin": other_statuses}};
        if let Some(fence) = fence {
            // A runner's write: only while its claim is the newest (else the caller's regular
            // update tells the refusal apart).
            filter.insert("fence", fence as i64);
        }
        let written = bounded(self.executions.update_one(
            filter,
            doc! {"$set": set, "$inc": {"outbox_version": 1_i64}, "$min": {"notify_due_at": due.0}},
        ))
        .await?;
        Ok(written.matched_count == 1)
    }

    /// E-mails and webhook calls owed (entries not settled), over at most `limit` executions
    /// that owe something (those with a `notify_due_at`).
    pub(super) async fn owed_counts(&self, limit: usize) -> Result<(u64, u64), StoreError> {
        let documents = self
            .collect(
                self.executions
                    .find(doc! {"notify_due_at": {"$lte": i64::MAX}})
                    .limit(limit.min(i64::MAX as usize) as i64)
                    .projection(doc! {"outbox": 1}),
            )
            .await?;
        let (mut emails, mut webhooks) = (0, 0);
        for document in &documents {
            let Ok(entries) = document.get_document("outbox") else {
                continue;
            };
            for entry in entries.values().filter_map(Bson::as_document) {
                if matches!(entry.get("nextAt"), None | Some(Bson::Null)) {
                    continue;
                }
                match entry.get_str("kind") {
                    Ok("email") => emails += 1,
                    Ok("webhook") => webhooks += 1,
                    _ => {}
                }
            }
        }
        Ok((emails, webhooks))
    }

    pub(super) async fn due_outboxes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Outbox>, StoreError> {
        let documents = self
            .collect(
                self.executions
                    .find(doc! {"notify_due_at": {"$lte": now.0}})
                    .sort(doc! {"notify_due_at": 1})
                    .limit(limit.min(i64::MAX as usize) as i64)
                    .projection(projection()),
            )
            .await?;
        let mut due = Vec::with_capacity(documents.len());
        for document in &documents {
            match outbox_of(document) {
                Some(outbox) => due.push(outbox),
                // Out of the due index, or it would come first in every round for ever.
                None => {
                    let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                    tracing::error!(execution_id = %id, "taking an unreadable outbox out of the due index");
                    bounded(
                        self.executions
                            .update_one(doc! {"_id": id}, doc! {"$unset": {"notify_due_at": ""}}),
                    )
                    .await?;
                }
            }
        }
        Ok(due)
    }

    pub(super) async fn get_outbox(
        &self,
        execution_id: Uuid,
    ) -> Result<Option<Outbox>, StoreError> {
        let document = bounded(
            self.executions
                .find_one(doc! {"_id": execution_id.to_string()})
                .projection(projection()),
        )
        .await?;
        Ok(document.as_ref().and_then(outbox_of))
    }

    pub(super) async fn replace_outbox(
        &self,
        execution_id: Uuid,
        expected: u64,
        entries: &[OwedNotification],
    ) -> Result<bool, StoreError> {
        let mut update = doc! {
            "$set": {"outbox": entries_document(entries)?},
            "$inc": {"outbox_version": 1_i64},
        };
        match outbox::due_at(entries) {
            Some(due) => update
                .get_document_mut("$set")
                .map_err(internal)?
                .insert("notify_due_at", due.0),
            None => update.insert("$unset", doc! {"notify_due_at": ""}),
        };
        let written = bounded(self.executions.update_one(
            doc! {"_id": execution_id.to_string(), "outbox_version": expected as i64},
            update,
        ))
        .await?;
        Ok(written.matched_count == 1)
    }
}
