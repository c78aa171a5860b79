//! The [`Store`] port on MongoDB: tasks, jobs and executions, written in an order that leaves
//! nothing visible half-done (see the module comment of `mod.rs`).

use super::outputs::{execution_without_output, output_pointers};
use super::{bounded, integer, internal, is_duplicate, readable_record, to_document, MongoStore};
use async_trait::async_trait;
use fastlane_actors::ports::{
    ExecutionFilter, ExecutionTail, OutputStream, Page, Paged, Store, StoreCounts, StoreError,
    OUTBOXES_COUNTED,
};
use fastlane_proto::idempotency::IdempotencyRecord;
use fastlane_proto::outbox::{Outbox, OwedNotification};
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use mongodb::bson::{doc, Bson, Document};
use uuid::Uuid;

/// The job's document. `next_fire_at` is when the scheduler must look at it
/// ([`Job::attention_at`]: its next firing or a pending run's grace); `version` is kept beside
/// the record so that writes can be conditional on it.
fn job_document(job: &Job) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": job.job_id.to_string(),
        "task_id": &job.task_id,
        "last_modified_at": job.last_modified_at.0,
        "next_fire_at": job.attention_at().map(|next| next.0),
        "version": job.version as i64,
        "record": to_document(job)?,
    })
}

/// The execution's record without its webhook attempts (kept apart).
fn execution_record(execution: &Execution) -> Result<Document, StoreError> {
    let mut record = execution.clone();
    record.metadata.webhook_dispatch.clear();
    to_document(&record)
}

fn task_summary(document: &Document) -> Result<TaskSummary, StoreError> {
    Ok(TaskSummary {
        task: Task {
            task_id: document.get_str("_id").map_err(internal)?.to_string(),
            created_at: Timestamp(document.get_i64("created_at").map_err(internal)?),
            last_modified_at: Timestamp(document.get_i64("last_modified_at").map_err(internal)?),
        },
        jobs_count: integer(document, "jobs_count").max(0) as u64,
    })
}

impl MongoStore {
    /// The records of the job's newest `limit` executions, newest first.
    pub(super) async fn newest_executions(
        &self,
        job_id: Uuid,
        limit: u64,
    ) -> Result<Vec<Document>, StoreError> {
        self.collect(
            self.executions
                .find(doc! {"job_id": job_id.to_string()})
                .sort(doc! {"created_at": -1, "_id": -1})
                .limit(limit.min(i64::MAX as u64) as i64),
        )
        .await
    }

    /// Inserts the execution record, pointing at the output `versions` already written.
    async fn insert_execution(
        &self,
        execution: &Execution,
        versions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut document = doc! {
            "_id": execution.execution_id.to_string(),
            "job_id": execution.job_id.to_string(),
            "status": execution.status.as_str(),
            "created_at": execution.created_at.0,
            "record": execution_record(execution)?,
            "output": output_pointers(versions),
            "webhook_dispatch": execution
                .metadata
                .webhook_dispatch
                .iter()
                .map(|entry| mongodb::bson::to_bson(entry).map_err(internal))
                .collect::<Result<Vec<_>, _>>()?,
        };
        super::outbox::insert_fields(execution, &mut document)?;
        bounded(self.executions.insert_one(document))
            .await
            .map(|_| ())
    }

    /// Replaces the job if its stored version is still `job.version` (documents written
    /// before versions existed have none: they count as 0), as `job.version + 1`.
    async fn write_job(&self, job: &Job) -> Result<(), StoreError> {
        let document = job_document(&Job {
            version: job.version + 1,
            ..job.clone()
        })?;
        let mut filter = doc! {"_id": job.job_id.to_string(), "task_id": &job.task_id};
        if job.version == 0 {
            filter.insert(
                "$or",
                vec![
                    doc! {"version": 0_i64},
                    doc! {"version": {"$exists": false}},
                ],
            );
        } else {
            filter.insert("version", job.version as i64);
        }
        let result = bounded(self.jobs.replace_one(filter, document)).await?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict(format!(
                "job {} was changed by another writer since version {} was read, or is gone",
                job.job_id, job.version
            )));
        }
        Ok(())
    }

    /// An update (PUT) of a job that exists: refused if it belongs to another task or was
    /// written since `job.version` was read; the execution is written first (and removed again
    /// when the job's write is refused), so a failure leaves the job as it was.
    async fn update_existing_job(
        &self,
        job: &Job,
        execution: Option<&Execution>,
        now: i64,
    ) -> Result<(), StoreError> {
        let existing = bounded(
            self.jobs
                .find_one(doc! {"_id": job.job_id.to_string()})
                .projection(doc! {"task_id": 1}),
        )
        .await?;
        if existing
            .as_ref()
            .and_then(|job| job.get_str("task_id").ok())
            != Some(job.task_id.as_str())
        {
            return Err(StoreError::Conflict(format!(
                "job {} belongs to another task",
                job.job_id
            )));
        }
        if let Some(execution) = execution {
            self.insert_execution(execution, &[]).await?;
        }
        if let Err(error) = self.write_job(job).await {
            // Lost to another writer (or failed): the new execution must not be left queued
            // behind a job that does not know it (the sweep would run it).
            if let Some(execution) = execution {
                let _ = bounded(
                    self.executions
                        .delete_one(doc! {"_id": execution.execution_id.to_string()}),
                )
                .await;
            }
            return Err(error);
        }
        bounded(self.tasks.update_one(
            doc! {"_id": &job.task_id},
            doc! {"$set": {"last_modified_at": now}},
        ))
        .await?;
        Ok(())
    }

    /// Creates the task or counts one more job in it.
    async fn add_job_to_task(&self, task_id: &str, now: i64) -> Result<(), StoreError> {
        let update = doc! {
            "$setOnInsert": {
                "created_at": now,
                "words": fastlane_proto::search::words(task_id),
            },
            "$set": {"last_modified_at": now},
            "$inc": {"jobs_count": 1_i64},
        };
        let upsert = || {
            self.tasks
                .update_one(doc! {"_id": task_id}, update.clone())
                .upsert(true)
        };
        match bounded(upsert()).await {
            // Two upserts of a new task raced: the loser's insert failed, its update won't.
            Err(error) if is_duplicate(&error) => bounded(upsert()).await.map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    async fn remove_job_from_task(&self, task_id: &str) -> Result<(), StoreError> {
        bounded(
            self.tasks
                .update_one(doc! {"_id": task_id}, doc! {"$inc": {"jobs_count": -1_i64}}),
        )
        .await?;
        // A task is only ever created with a job: without jobs it goes too.
        bounded(
            self.tasks
                .delete_one(doc! {"_id": task_id, "jobs_count": {"$lte": 0_i64}}),
        )
        .await?;
        Ok(())
    }

    async fn page_of_tasks(
        &self,
        filter: Document,
        page: Page,
    ) -> Result<Paged<TaskSummary>, StoreError> {
        let total = bounded(self.tasks.count_documents(filter.clone())).await?;
        let documents = self
            .collect(
                self.tasks
                    .find(filter)
                    .sort(doc! {"created_at": 1, "_id": 1})
                    .skip(page.offset())
                    .limit(page.per_page.min(i64::MAX as u64) as i64),
            )
            .await?;
        Ok(Paged {
            items: documents
                .iter()
                .map(task_summary)
                .collect::<Result<_, _>>()?,
            total,
        })
    }

    /// `(job id, task id, attention time)` of up to `limit` jobs matching `filter`, in `sort`
    /// order, read from the index entries' fields only (a projection).
    async fn schedule_rows(
        &self,
        filter: Document,
        sort: Document,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        self.collect(
            self.jobs
                .find(filter)
                .projection(doc! {"task_id": 1, "next_fire_at": 1})
                .sort(sort)
                .limit(limit.min(i64::MAX as usize) as i64),
        )
        .await?
        .iter()
        .map(|document| {
            let job_id =
                Uuid::parse_str(document.get_str("_id").map_err(internal)?).map_err(internal)?;
            let task_id = document.get_str("task_id").map_err(internal)?.to_string();
            Ok((
                job_id,
                task_id,
                Timestamp(integer(document, "next_fire_at")),
            ))
        })
        .collect()
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn create_job(&self, job: &Job, execution: Option<&Execution>) -> Result<(), StoreError> {
        let now = job.last_modified_at.0;
        // A new job (every POST) costs two writes: the task's count, then the job. Only when
        // the job exists already (a PUT) is that undone and the job updated instead.
        self.add_job_to_task(&job.task_id, now).await?;
        if let Err(error) = bounded(self.jobs.insert_one(job_document(job)?)).await {
            let _ = self.remove_job_from_task(&job.task_id).await;
            if !is_duplicate(&error) {
                return Err(error);
            }
            // The count's upsert may have created the task just now: it goes again if empty.
            let _ = bounded(
                self.tasks
                    .delete_one(doc! {"_id": &job.task_id, "jobs_count": {"$lte": 0_i64}}),
            )
            .await;
            return self.update_existing_job(job, execution, now).await;
        }
        if let Some(execution) = execution {
            if let Err(error) = self.insert_execution(execution, &[]).await {
                let _ = self.delete_job(job.job_id).await;
                return Err(error);
            }
        }
        Ok(())
    }

    async fn delete_job(&self, job_id: Uuid) -> Result<(), StoreError> {
        let id = job_id.to_string();
        let Some(job) = bounded(self.jobs.find_one(doc! {"_id": &id})).await? else {
            return Ok(());
        };
        let task_id = job.get_str("task_id").map_err(internal)?.to_string();
        let executions = self
            .collect(
                self.executions
                    .find(doc! {"job_id": &id})
                    .projection(doc! {"_id": 1}),
            )
            .await?;
        let execution_ids: Vec<Bson> = executions
            .iter()
            .filter_map(|document| document.get("_id").cloned())
            .collect();
        bounded(
            self.outputs
                .delete_many(doc! {"execution_id": {"$in": execution_ids}}),
        )
        .await?;
        bounded(self.executions.delete_many(doc! {"job_id": &id})).await?;
        self.forget_removed(&id).await?;
        let deleted = bounded(self.jobs.delete_one(doc! {"_id": &id})).await?;
        if deleted.deleted_count == 1 {
            self.remove_job_from_task(&task_id).await?;
        }
        Ok(())
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
        self.page_of_tasks(doc! {}, page).await
    }

    async fn search_tasks(
        &self,
        words: &[String],
        page: Page,
    ) -> Result<Paged<TaskSummary>, StoreError> {
        self.page_of_tasks(doc! {"words": {"$in": words}}, page)
            .await
    }

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        bounded(self.tasks.find_one(doc! {"_id": task_id}))
            .await?
            .map(|document| task_summary(&document).map(|summary| summary.task))
            .transpose()
    }

    async fn list_jobs(&self, task_id: &str, page: Page) -> Result<Paged<Job>, StoreError> {
        // Both served by the index (task_id, last_modified_at desc, _id desc): the sort is the
        // index order, so a page reads offset + per_page entries, never the whole task.
        let total = bounded(self.jobs.count_documents(doc! {"task_id": task_id})).await?;
        let items = self
            .collect(
                self.jobs
                    .find(doc! {"task_id": task_id})
                    .sort(doc! {"last_modified_at": -1, "_id": -1})
                    .skip(page.offset())
                    .limit(page.per_page.min(i64::MAX as u64) as i64),
            )
            .await?
            .iter()
            .filter_map(readable_record)
            .collect();
        Ok(Paged { items, total })
    }

    async fn get_job(&self, task_id: &str, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        Ok(bounded(
            self.jobs
                .find_one(doc! {"_id": job_id.to_string(), "task_id": task_id}),
        )
        .await?
        // An unparsable record reads as absent (logged), as in the embedded store.
        .and_then(|document| readable_record(&document)))
    }

    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError> {
        let id = job_id.to_string();
        let stored = bounded(self.executions.count_documents(doc! {"job_id": &id})).await?;
        Ok(stored.saturating_add(self.removed_count(&id).await?))
    }

    async fn list_executions(
        &self,
        job_id: Uuid,
        limit: u64,
    ) -> Result<Vec<Execution>, StoreError> {
        let documents = self.newest_executions(job_id, limit).await?;
        let mut executions = Vec::with_capacity(documents.len());
        for document in &documents {
            executions.extend(self.read_execution(document).await?);
        }
        Ok(executions)
    }

    async fn list_execution_tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError> {
        self.execution_tails(job_id, limit, max_bytes).await
    }

    async fn last_execution(&self, job_id: Uuid) -> Result<Option<Execution>, StoreError> {
        // The record only: its output chunks are not fetched.
        let found = bounded(
            self.executions
                .find_one(doc! {"job_id": job_id.to_string()})
                .sort(doc! {"created_at": -1, "_id": -1}),
        )
        .await?;
        Ok(found.and_then(|document| execution_without_output(&document)))
    }

    async fn get_execution(&self, execution_id: Uuid) -> Result<Option<Execution>, StoreError> {
        match bounded(
            self.executions
                .find_one(doc! {"_id": execution_id.to_string()}),
        )
        .await?
        {
            Some(document) => self.read_execution(&document).await,
            None => Ok(None),
        }
    }

    async fn get_execution_tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError> {
        self.execution_tail(execution_id, max_bytes).await
    }

    async fn output_len(&self, id: Uuid, stream: OutputStream) -> Result<Option<u64>, StoreError> {
        MongoStore::output_len(self, id, stream).await
    }

    async fn read_output(
        &self,
        id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        MongoStore::read_output(self, id, stream, offset, max_len).await
    }

    async fn update_execution(
        &self,
        execution: &Execution,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        let id = execution.execution_id.to_string();
        let status = execution.status.as_str();
        let terminal: Vec<&str> = ExecutionStatus::ALL
            .iter()
            .filter(|status| status.is_terminal())
            .map(|status| status.as_str())
            .collect();
        let record = execution_record(execution)?;
        let versions = self.write_outputs(execution).await?;
        let mut set = doc! {
            "job_id": execution.job_id.to_string(),
            "status": status,
            "created_at": execution.created_at.0,
            "record": record,
        };
        for (kind, version) in &versions {
            set.insert(format!("output.{kind}"), version);
        }
        // A status change that owes notifications records them in the same update.
        match self
            .write_status_change(execution, &set, &terminal, fence)
            .await
        {
            Ok(false) => {}
            done => {
                self.drop_outputs(&id, &versions, done.is_err()).await;
                return done.map(|_| ());
            }
        }
        // A terminal status is final: only an execution not yet terminal, or already in this
        // very status, is written. Status and output pointers change in one update.
        let mut filter =
            doc! {"_id": &id, "$or": [{"status": {"$nin": terminal}}, {"status": status}]};
        if let Some(fence) = fence {
            // A runner's write: only while its claim is the newest.
            filter.insert("fence", fence as i64);
        }
        let written = bounded(self.executions.update_one(filter, doc! {"$set": set})).await;
        let written = match written {
            Ok(written) if written.matched_count == 0 => {
                match self.refused(&id, fence).await {
                    Ok(()) => {}
                    Err(error) => {
                        self.drop_outputs(&id, &versions, true).await;
                        return Err(error);
                    }
                }
                match self.insert_execution(execution, &versions).await {
                    Ok(()) => Ok(()),
                    Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                        "execution {id} is already terminal, it cannot become {status}"
                    ))),
                    Err(error) => Err(error),
                }
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        // The versions now pointed at stay and older ones go (or, refused, the new ones go).
        self.drop_outputs(&id, &versions, written.is_err()).await;
        written
    }

    async fn claim_execution(&self, execution_id: Uuid) -> Result<Option<u64>, StoreError> {
        self.claim(&execution_id.to_string()).await
    }

    async fn create_execution(&self, execution: &Execution) -> Result<bool, StoreError> {
        match self.insert_execution(execution, &[]).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn update_job(&self, job: &Job) -> Result<(), StoreError> {
        self.write_job(job).await
    }

    async fn scheduled_page(
        &self,
        after: Option<(Timestamp, Uuid)>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        // Keyset paging on the index (next_fire_at, _id): later, or as late with a greater id.
        let filter = match after {
            None => doc! {"next_fire_at": {"$ne": Bson::Null}},
            Some((at, job_id)) => doc! {
                "next_fire_at": {"$gte": at.0},
                "$or": [
                    {"next_fire_at": {"$gt": at.0}},
                    {"next_fire_at": at.0, "_id": {"$gt": job_id.to_string()}},
                ],
            },
        };
        self.schedule_rows(filter, doc! {"next_fire_at": 1, "_id": 1}, limit)
            .await
    }

    async fn scheduled_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        self.schedule_rows(
            doc! {"next_fire_at": {"$ne": Bson::Null, "$lte": before.0}},
            doc! {"next_fire_at": 1},
            limit,
        )
        .await
    }

    async fn append_webhook_dispatch(
        &self,
        execution_id: Uuid,
        entry: serde_json::Value,
        keep: usize,
    ) -> Result<(), StoreError> {
        let entry = mongodb::bson::to_bson(&entry).map_err(internal)?;
        bounded(self.executions.update_one(
            doc! {"_id": execution_id.to_string()},
            doc! {"$push": {"webhook_dispatch": {
                "$each": [entry],
                "$slice": -(keep.min(i32::MAX as usize) as i32),
            }}},
        ))
        .await
        .map(|_| ())
    }

    async fn due_outboxes(&self, now: Timestamp, limit: usize) -> Result<Vec<Outbox>, StoreError> {
        MongoStore::due_outboxes(self, now, limit).await
    }

    async fn get_outbox(&self, execution_id: Uuid) -> Result<Option<Outbox>, StoreError> {
        MongoStore::get_outbox(self, execution_id).await
    }

    async fn replace_outbox(
        &self,
        execution_id: Uuid,
        expected: u64,
        entries: &[OwedNotification],
    ) -> Result<bool, StoreError> {
        MongoStore::replace_outbox(self, execution_id, expected, entries).await
    }

    async fn executions_in(
        &self,
        status: ExecutionStatus,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let documents = self
            .collect(
                self.executions
                    .find(doc! {"status": status.as_str(), "_id": {"$gt": after}})
                    .sort(doc! {"_id": 1})
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await?;
        Ok(documents
            .iter()
            .filter_map(execution_without_output)
            .collect())
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
        let (owed_emails, owed_webhooks) = self.owed_counts(OUTBOXES_COUNTED).await?;
        Ok(StoreCounts {
            tasks: bounded(self.tasks.estimated_document_count()).await?,
            jobs: bounded(self.jobs.estimated_document_count()).await?,
            scheduled: bounded(
                self.jobs
                    .count_documents(doc! {"next_fire_at": {"$ne": Bson::Null, "$lte": i64::MAX}}),
            )
            .await?,
            owed_emails,
            owed_webhooks,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded(self.database.run_command(doc! {"ping": 1}))
            .await
            .map(|_| ())
    }
}
