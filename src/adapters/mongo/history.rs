//! Execution history and retention on MongoDB: the history's filters are index range reads in
//! creation order (the task is read from `record.task_id`, present in every execution ever
//! stored); retention removes finished executions one conditional delete at a time and counts
//! them on their job in `removed_executions` (`_id` = job id, `count`), so `executionCount`
//! stays the total ever run.

use super::outputs::execution_without_output;
use super::{bounded, integer, internal, MongoStore};
use fastlane_actors::ports::{ExecutionFilter, Page, Paged, StoreError};
use fastlane_proto::{Execution, Timestamp};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use uuid::Uuid;

/// The statuses retention may remove.
const TERMINAL: [&str; 5] = ["done", "failed", "timedout", "expired", "stopped"];

/// What retention may remove: terminal, owing no notification, finished (or, never run,
/// last written) before `settled`.
fn removable(settled: Timestamp) -> Document {
    doc! {
        "status": {"$in": TERMINAL.to_vec()},
        "notify_due_at": {"$exists": false},
        "$or": [
            {"record.finished_at": {"$lt": settled.0}},
            {"record.finished_at": Bson::Null, "record.last_modified_at": {"$lt": settled.0}},
        ],
    }
}

/// The query of `filter`.
fn query(filter: &ExecutionFilter) -> Document {
    let mut query = Document::new();
    if let Some(task_id) = &filter.task_id {
        query.insert("record.task_id", task_id);
    }
    if let Some(job_id) = filter.job_id {
        query.insert("job_id", job_id.to_string());
    }
    if let Some(status) = filter.status {
        query.insert("status", status.as_str());
    }
    let mut created = Document::new();
    if let Some(since) = filter.since {
        created.insert("$gte", since.0);
    }
    if let Some(until) = filter.until {
        created.insert("$lt", until.0);
    }
    if !created.is_empty() {
        query.insert("created_at", created);
    }
    query
}

fn ids(documents: &[Document]) -> Vec<Uuid> {
    documents
        .iter()
        .filter_map(|document| document.get_str("_id").ok())
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

impl MongoStore {
    fn removed_executions(&self) -> Collection<Document> {
        self.database.collection("removed_executions")
    }

    /// The history's indexes: each filter, then the creation time.
    pub(super) async fn create_history_indexes(&self) -> Result<(), StoreError> {
        // Each ends with the history's order, creation time then id, so that a page is an
        // index range read with no sort in memory.
        for keys in [
            doc! {"created_at": -1, "_id": -1},
            doc! {"job_id": 1, "created_at": -1, "_id": -1},
            doc! {"job_id": 1, "status": 1, "created_at": -1, "_id": -1},
            doc! {"record.task_id": 1, "created_at": -1, "_id": -1},
            doc! {"record.task_id": 1, "status": 1, "created_at": -1, "_id": -1},
            doc! {"status": 1, "created_at": -1, "_id": -1},
        ] {
            let index = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().build())
                .build();
            bounded(self.executions.create_index(index)).await?;
        }
        Ok(())
    }

    pub(super) async fn history(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> Result<Paged<Execution>, StoreError> {
        let query = query(filter);
        // Unfiltered, the collection's count from its metadata: a count of every document
        // would read the whole collection.
        let total = if query.is_empty() {
            bounded(self.executions.estimated_document_count()).await?
        } else {
            bounded(self.executions.count_documents(query.clone())).await?
        };
        let documents = self
            .collect(
                self.executions
                    .find(query)
                    .sort(doc! {"created_at": -1, "_id": -1})
                    .skip(page.offset())
                    .limit(i64::try_from(page.per_page).unwrap_or(i64::MAX)),
            )
            .await?;
        Ok(Paged {
            items: documents
                .iter()
                .filter_map(execution_without_output)
                .collect(),
            total,
        })
    }

    pub(super) async fn finished_before_time(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut query = removable(before);
        query.insert("created_at", doc! {"$lt": before.0});
        let documents = self
            .collect(
                self.executions
                    .find(query)
                    .sort(doc! {"created_at": 1, "_id": 1})
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                    .projection(doc! {"_id": 1, "job_id": 1, "created_at": 1}),
            )
            .await?;
        // A job always keeps its newest execution: one index probe per candidate.
        let mut found = Vec::with_capacity(documents.len());
        for document in &documents {
            let (Ok(job_id), Ok(created_at)) =
                (document.get_str("job_id"), document.get_i64("created_at"))
            else {
                continue;
            };
            let newer = doc! {"job_id": job_id, "created_at": {"$gt": created_at}};
            if bounded(self.executions.find_one(newer).projection(doc! {"_id": 1}))
                .await?
                .is_some()
            {
                found.extend(ids(std::slice::from_ref(document)));
            }
        }
        Ok(found)
    }

    pub(super) async fn finished_beyond_kept(
        &self,
        job_id: Uuid,
        keep: u64,
        settled: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let job_id = job_id.to_string();
        // The newest execution past those kept: it and every older one may go.
        let first_gone = self
            .collect(
                self.executions
                    .find(doc! {"job_id": &job_id})
                    .sort(doc! {"created_at": -1, "_id": -1})
                    .skip(keep)
                    .limit(1)
                    .projection(doc! {"_id": 1, "created_at": 1}),
            )
            .await?;
        let Some(first_gone) = first_gone.first() else {
            return Ok(Vec::new());
        };
        let created_at = first_gone.get_i64("created_at").map_err(internal)?;
        let id = first_gone.get_str("_id").map_err(internal)?;
        let query = doc! {
            "job_id": &job_id,
            "$and": [
                removable(settled),
                {"$or": [
                    {"created_at": {"$lt": created_at}},
                    {"created_at": created_at, "_id": {"$lte": id}},
                ]},
            ],
        };
        let documents = self
            .collect(
                self.executions
                    .find(query)
                    .sort(doc! {"created_at": 1, "_id": 1})
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                    .projection(doc! {"_id": 1}),
            )
            .await?;
        Ok(ids(&documents))
    }

    pub(super) async fn jobs_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let documents = self
            .collect(
                self.jobs
                    .find(doc! {"_id": {"$gt": after}})
                    .sort(doc! {"_id": 1})
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                    .projection(doc! {"_id": 1}),
            )
            .await?;
        Ok(ids(&documents))
    }

    pub(super) async fn remove_finished(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for id in ids {
            let id = id.to_string();
            // Removable now, whenever it finished: the caller chose it.
            let mut query = removable(Timestamp(i64::MAX));
            query.insert("_id", &id);
            // The output goes first: a node stopped between the two deletes leaves a
            // removable execution that the next round removes, never an output nothing
            // refers to. (A finished execution stays removable; what a racing rewrite of
            // the same end adds meanwhile is removed after the execution, below.)
            let still = bounded(
                self.executions
                    .find_one(query.clone())
                    .projection(doc! {"_id": 1}),
            );
            if still.await?.is_none() {
                continue;
            }
            bounded(self.outputs.delete_many(doc! {"execution_id": &id})).await?;
            let Some(gone) = bounded(
                self.executions
                    .find_one_and_delete(query)
                    .projection(doc! {"job_id": 1}),
            )
            .await?
            else {
                continue;
            };
            bounded(self.outputs.delete_many(doc! {"execution_id": &id})).await?;
            let job_id = gone.get_str("job_id").map_err(internal)?;
            bounded(
                self.removed_executions()
                    .update_one(doc! {"_id": job_id}, doc! {"$inc": {"count": 1_i64}})
                    .upsert(true),
            )
            .await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removed executions of a job, counted into `executionCount`.
    pub(super) async fn removed_count(&self, job_id: &str) -> Result<u64, StoreError> {
        let found = bounded(self.removed_executions().find_one(doc! {"_id": job_id})).await?;
        Ok(found.map_or(0, |document| integer(&document, "count").max(0) as u64))
    }

    /// Forgets the removed executions of a deleted job.
    pub(super) async fn forget_removed(&self, job_id: &str) -> Result<(), StoreError> {
        bounded(self.removed_executions().delete_one(doc! {"_id": job_id})).await?;
        Ok(())
    }
}
