//! The MongoDB store: the [`Store`] port with the official `mongodb` driver, using standard
//! MongoDB features only (no transactions, no `$text`), so a replica set, a standalone server
//! and wire-compatible servers behave the same.
//!
//! Collections (created with their indexes at start):
//! - `tasks`: `_id` = task id, `created_at`, `last_modified_at`, `jobs_count`, `words` (the id's
//!   words, lowercased: the word-search index; `$text` would stem and stop-word them).
//! - `jobs`: `_id` = job id, `task_id`, `last_modified_at`, `next_fire_at` (the schedule index),
//!   `record` (the job as a document).
//! - `executions`: `_id` = execution id, `job_id`, `status`, `created_at`, `record`,
//!   `output` (`{log: version, error: version}`: which chunks are current), and
//!   `webhook_dispatch` apart (appended atomically with `$push`/`$slice`).
//! - `outputs`: stdout/stderr in 4 MiB binary chunks (`execution_id`, `kind`, `v`, `n`, `data`),
//!   so output of any size fits under the 16 MiB document limit. A write adds a new version's
//!   chunks first, then points the execution at it in the same update that sets its status, then
//!   drops older versions: a reader never sees a finished execution without its output.
//!
//! Without transactions, multi-document writes are ordered so a crash leaves nothing visible
//! half-done: `create_job` undoes what it wrote when a later step fails; terminal statuses are
//! final through a conditional update.

use async_trait::async_trait;
use fastlane_actors::ports::{Page, Paged, Store, StoreCounts, StoreError};
use fastlane_proto::schedule::JobSchedule;
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::future::IntoFuture;
use std::time::Duration;
use uuid::Uuid;

/// Bound on every MongoDB call (server selection, reconnection and retries included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Output chunk size: well under the 16 MiB document limit.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Where the store lives: a connection URI and a database name.
#[derive(Clone, Debug, PartialEq)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    pub server_selection_timeout: Duration,
}

impl MongoSettings {
    /// From `MONGODB_CONFIG` (the original's `{"host": URI, "db": NAME,
    /// "serverSelectionTimeoutMS": N}`, as an object or a JSON string) or, when that is null,
    /// `MONGODB_URL` (the database from the URI's path, else `fastlane`). `None` when neither.
    pub fn from_options(
        config: &serde_json::Value,
        url: Option<&str>,
    ) -> Result<Option<MongoSettings>, String> {
        let config = match config {
            serde_json::Value::String(text) if !text.trim().is_empty() => {
                serde_json::from_str(text)
                    .map_err(|error| format!("invalid MONGODB_CONFIG: {error}"))?
            }
            serde_json::Value::String(_) => serde_json::Value::Null,
            other => other.clone(),
        };
        let (uri, database, timeout) = match (&config, url) {
            (serde_json::Value::Object(object), _) => {
                let uri = object
                    .get("host")
                    .and_then(|host| host.as_str())
                    .ok_or("invalid MONGODB_CONFIG: \"host\" (a mongodb:// URI) is required")?;
                let database = object
                    .get("db")
                    .and_then(|db| db.as_str())
                    .map(String::from)
                    .or_else(|| database_of(uri))
                    .unwrap_or_else(|| "fastlane".into());
                let timeout = object
                    .get("serverSelectionTimeoutMS")
                    .and_then(|timeout| timeout.as_u64());
                (uri.to_string(), database, timeout)
            }
            (serde_json::Value::Null, Some(url)) => (
                url.to_string(),
                database_of(url).unwrap_or_else(|| "fastlane".into()),
                None,
            ),
            (serde_json::Value::Null, None) => return Ok(None),
            _ => return Err("invalid MONGODB_CONFIG: expected a JSON object".into()),
        };
        if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
            return Err(format!(
                "invalid MongoDB URI {uri:?}: expected mongodb:// or mongodb+srv://"
            ));
        }
        Ok(Some(MongoSettings {
            uri,
            database,
            // The original's 100 ms is too tight for a busy server; never below 1 s.
            server_selection_timeout: Duration::from_millis(timeout.unwrap_or(5_000).max(1_000)),
        }))
    }
}

/// The database named in a URI's path, if any.
fn database_of(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let name = path.split('?').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The MongoDB store. Cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    database: Database,
    tasks: Collection<Document>,
    jobs: Collection<Document>,
    executions: Collection<Document>,
    outputs: Collection<Document>,
}

impl MongoStore {
    /// Connects and creates the collections' indexes. The driver reconnects on its own.
    pub async fn connect(settings: &MongoSettings) -> anyhow::Result<MongoStore> {
        let mut options = ClientOptions::parse(&settings.uri).await?;
        options.server_selection_timeout = Some(settings.server_selection_timeout);
        options.connect_timeout = Some(Duration::from_secs(5));
        options.app_name = Some("fastlane-node".into());
        let client = Client::with_options(options)?;
        let database = client.database(&settings.database);
        let store = MongoStore {
            tasks: database.collection("tasks"),
            jobs: database.collection("jobs"),
            executions: database.collection("executions"),
            outputs: database.collection("outputs"),
            database,
        };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> anyhow::Result<()> {
        let index = |keys: Document, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(unique).build())
                .build()
        };
        bounded(
            self.tasks
                .create_index(index(doc! {"created_at": 1, "_id": 1}, false)),
        )
        .await?;
        bounded(self.tasks.create_index(index(doc! {"words": 1}, false))).await?;
        bounded(
            self.jobs
                .create_index(index(doc! {"task_id": 1, "last_modified_at": -1}, false)),
        )
        .await?;
        bounded(
            self.jobs
                .create_index(index(doc! {"next_fire_at": 1}, false)),
        )
        .await?;
        bounded(
            self.executions
                .create_index(index(doc! {"job_id": 1, "created_at": -1}, false)),
        )
        .await?;
        bounded(
            self.executions
                .create_index(index(doc! {"status": 1}, false)),
        )
        .await?;
        bounded(self.outputs.create_index(index(
            doc! {"execution_id": 1, "kind": 1, "v": 1, "n": 1},
            true,
        )))
        .await?;
        Ok(())
    }

    /// Drops the database (tests only use it, on their own database).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        bounded(self.database.drop()).await
    }
}

/// Runs one driver call with [`CALL_TIMEOUT`].
async fn bounded<T>(
    call: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call.into_future()).await {
        Ok(result) => result.map_err(store_error),
        Err(_) => Err(StoreError::Unavailable(format!(
            "MongoDB did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

fn is_duplicate(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict(_))
}

fn store_error(error: mongodb::error::Error) -> StoreError {
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == 11000 => {
            StoreError::Conflict(error.to_string())
        }
        ErrorKind::Command(command) if command.code == 11000 => {
            StoreError::Conflict(error.to_string())
        }
        ErrorKind::Write(_)
        | ErrorKind::Command(_)
        | ErrorKind::InvalidArgument { .. }
        | ErrorKind::BsonDeserialization(_)
        | ErrorKind::BsonSerialization(_) => StoreError::Internal(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}

fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

/// A record as a BSON document, through JSON so ids stay strings and the document reads
/// naturally in a Mongo shell.
fn to_document<T: serde::Serialize>(record: &T) -> Result<Document, StoreError> {
    let json = serde_json::to_value(record).map_err(internal)?;
    match mongodb::bson::to_bson(&json).map_err(internal)? {
        Bson::Document(document) => Ok(document),
        _ => Err(internal("record is not an object")),
    }
}

fn from_document<T: serde::de::DeserializeOwned>(document: &Document) -> Result<T, StoreError> {
    let json = Bson::Document(document.clone()).into_relaxed_extjson();
    serde_json::from_value(json).map_err(internal)
}

fn record_of<T: serde::de::DeserializeOwned>(document: &Document) -> Result<T, StoreError> {
    from_document(
        document
            .get_document("record")
            .map_err(|_| internal("document without record"))?,
    )
}

fn job_document(job: &Job) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": job.job_id.to_string(),
        "task_id": &job.task_id,
        "last_modified_at": job.last_modified_at.0,
        "next_fire_at": next_fire_at(job),
        "record": to_document(job)?,
    })
}

fn next_fire_at(job: &Job) -> Option<i64> {
    job.schedule
        .as_ref()
        .and_then(|schedule| schedule.next_fire_at)
        .map(|next| next.0)
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

/// The execution's `output` field: `{kind: version}`.
fn output_pointers(versions: &[(String, String)]) -> Document {
    versions
        .iter()
        .map(|(kind, version)| (kind.clone(), Bson::String(version.clone())))
        .collect()
}

/// An integer field whatever its BSON width.
fn integer(document: &Document, field: &str) -> i64 {
    match document.get(field) {
        Some(Bson::Int32(value)) => i64::from(*value),
        Some(Bson::Int64(value)) => *value,
        Some(Bson::Double(value)) => *value as i64,
        _ => 0,
    }
}

impl MongoStore {
    async fn collect(
        &self,
        find: mongodb::action::Find<'_, Document>,
    ) -> Result<Vec<Document>, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, async { find.await?.try_collect().await }).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError::Unavailable("MongoDB find timed out".into())),
        }
    }

    /// The execution with its output and webhook attempts.
    async fn read_execution(&self, document: &Document) -> Result<Execution, StoreError> {
        let mut execution: Execution = record_of(document)?;
        if let Ok(dispatch) = document.get_array("webhook_dispatch") {
            execution.metadata.webhook_dispatch = dispatch
                .iter()
                .map(|entry| entry.clone().into_relaxed_extjson())
                .collect();
        }
        let current: Vec<Document> = document
            .get_document("output")
            .map(|versions| {
                versions
                    .iter()
                    .map(|(kind, version)| doc! {"kind": kind, "v": version.clone()})
                    .collect()
            })
            .unwrap_or_default();
        if current.is_empty() {
            return Ok(execution);
        }
        let chunks = self
            .collect(
                self.outputs
                    .find(doc! {
                        "execution_id": execution.execution_id.to_string(),
                        "$or": current,
                    })
                    .sort(doc! {"kind": 1, "n": 1}),
            )
            .await?;
        for chunk in chunks {
            let data = match chunk.get("data") {
                Some(Bson::Binary(binary)) => binary.bytes.as_slice(),
                _ => &[],
            };
            let target = match chunk.get_str("kind") {
                Ok("log") => &mut execution.log,
                Ok("error") => &mut execution.error,
                _ => continue,
            };
            target.get_or_insert_with(Vec::new).extend_from_slice(data);
        }
        Ok(execution)
    }

    /// Writes the execution's `log` and `error` (those set) as new output versions; returns
    /// `(kind, version)` of each. Nothing reads them until the execution record points at them;
    /// on failure, what was written is removed.
    async fn write_outputs(
        &self,
        execution: &Execution,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let id = execution.execution_id.to_string();
        let mut versions = Vec::new();
        for (kind, bytes) in [("log", &execution.log), ("error", &execution.error)] {
            let Some(bytes) = bytes else { continue };
            // Time-ordered, so a writer only ever drops versions older than its own.
            let version = Uuid::now_v7().to_string();
            versions.push((kind.to_string(), version.clone()));
            if let Err(error) = self.write_output(&id, kind, &version, bytes).await {
                self.drop_outputs(&id, &versions, true).await;
                return Err(error);
            }
        }
        Ok(versions)
    }

    /// Removes the `versions` chunks (`these`) or the older versions of their kinds. Best
    /// effort: a leftover chunk is never read, only wasted space.
    async fn drop_outputs(&self, execution_id: &str, versions: &[(String, String)], these: bool) {
        for (kind, version) in versions {
            let v = if these {
                Bson::String(version.clone())
            } else {
                Bson::Document(doc! {"$lt": version})
            };
            if let Err(error) = bounded(
                self.outputs
                    .delete_many(doc! {"execution_id": execution_id, "kind": kind, "v": v}),
            )
            .await
            {
                tracing::warn!(execution_id, kind, %error, "could not remove stale output chunks");
            }
        }
    }

    /// Writes one version of the execution's `kind` output, in chunks.
    async fn write_output(
        &self,
        execution_id: &str,
        kind: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let chunks: Vec<Document> = bytes
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(n, data)| {
                doc! {
                    "execution_id": execution_id,
                    "kind": kind,
                    "v": version,
                    "n": n as i64,
                    "data": Bson::Binary(mongodb::bson::Binary {
                        subtype: mongodb::bson::spec::BinarySubtype::Generic,
                        bytes: data.to_vec(),
                    }),
                }
            })
            .collect();
        let chunks = if chunks.is_empty() {
            // Present but empty: one empty chunk, so it reads back as Some(empty).
            vec![doc! {
                "execution_id": execution_id, "kind": kind, "v": version, "n": 0_i64,
                "data": Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: Vec::new(),
                }),
            }]
        } else {
            chunks
        };
        for chunk in chunks {
            bounded(self.outputs.insert_one(chunk)).await?;
        }
        Ok(())
    }

    /// Inserts the execution record, pointing at the output `versions` already written.
    async fn insert_execution(
        &self,
        execution: &Execution,
        versions: &[(String, String)],
    ) -> Result<(), StoreError> {
        bounded(self.executions.insert_one(doc! {
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
        }))
        .await
        .map(|_| ())
    }

    async fn write_job(&self, job: &Job) -> Result<(), StoreError> {
        let document = job_document(job)?;
        let result = bounded(self.jobs.replace_one(
            doc! {"_id": job.job_id.to_string(), "task_id": &job.task_id},
            document,
        ))
        .await?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict(format!(
                "job {} does not exist",
                job.job_id
            )));
        }
        Ok(())
    }

    /// An update (PUT) of a job that exists: refused if it belongs to another task; the
    /// execution is written first, so a failure leaves the job as it was.
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
        self.write_job(job).await?;
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
        let deleted = bounded(self.jobs.delete_one(doc! {"_id": &id})).await?;
        if deleted.deleted_count == 1 {
            self.remove_job_from_task(&task_id).await?;
        }
        Ok(())
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

    async fn list_jobs(&self, task_id: &str) -> Result<Vec<Job>, StoreError> {
        self.collect(
            self.jobs
                .find(doc! {"task_id": task_id})
                .sort(doc! {"last_modified_at": -1}),
        )
        .await?
        .iter()
        .map(record_of)
        .collect()
    }

    async fn get_job(&self, task_id: &str, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        bounded(
            self.jobs
                .find_one(doc! {"_id": job_id.to_string(), "task_id": task_id}),
        )
        .await?
        .map(|document| record_of(&document))
        .transpose()
    }

    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError> {
        bounded(
            self.executions
                .count_documents(doc! {"job_id": job_id.to_string()}),
        )
        .await
    }

    async fn list_executions(
        &self,
        job_id: Uuid,
        limit: u64,
    ) -> Result<Vec<Execution>, StoreError> {
        let documents = self
            .collect(
                self.executions
                    .find(doc! {"job_id": job_id.to_string()})
                    .sort(doc! {"created_at": -1, "_id": -1})
                    .limit(limit.min(i64::MAX as u64) as i64),
            )
            .await?;
        let mut executions = Vec::with_capacity(documents.len());
        for document in &documents {
            executions.push(self.read_execution(document).await?);
        }
        Ok(executions)
    }

    async fn get_execution(&self, execution_id: Uuid) -> Result<Option<Execution>, StoreError> {
        match bounded(
            self.executions
                .find_one(doc! {"_id": execution_id.to_string()}),
        )
        .await?
        {
            Some(document) => Ok(Some(self.read_execution(&document).await?)),
            None => Ok(None),
        }
    }

    async fn update_execution(&self, execution: &Execution) -> Result<(), StoreError> {
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
        // A terminal status is final: only an execution not yet terminal, or already in this
        // very status, is written. Status and output pointers change in one update.
        let written = bounded(self.executions.update_one(
            doc! {"_id": &id, "$or": [{"status": {"$nin": terminal}}, {"status": status}]},
            doc! {"$set": set},
        ))
        .await;
        let written = match written {
            Ok(written) if written.matched_count == 0 => {
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

    async fn update_schedule(
        &self,
        job_id: Uuid,
        expected: Option<Timestamp>,
        schedule: Option<&JobSchedule>,
    ) -> Result<bool, StoreError> {
        let id = job_id.to_string();
        let Some(document) = bounded(self.jobs.find_one(doc! {"_id": &id})).await? else {
            return Ok(false);
        };
        let mut job: Job = record_of(&document)?;
        if job
            .schedule
            .as_ref()
            .and_then(|current| current.next_fire_at)
            != expected
        {
            return Ok(false);
        }
        let read_version = integer(&document, "last_modified_at");
        job.scheduled = schedule.is_some_and(|schedule| schedule.cron.is_some());
        job.schedule = schedule.cloned();
        job.last_modified_at = Timestamp::now().max(Timestamp(read_version + 1));
        // Compare-and-set: written only if nobody changed the job since it was read.
        let written = bounded(self.jobs.replace_one(
            doc! {
                "_id": &id,
                "last_modified_at": read_version,
                "next_fire_at": expected.map(|next| next.0),
            },
            job_document(&job)?,
        ))
        .await?;
        Ok(written.matched_count == 1)
    }

    async fn scheduled_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.collect(
            self.jobs
                .find(doc! {"next_fire_at": {"$ne": Bson::Null}})
                .sort(doc! {"next_fire_at": 1}),
        )
        .await?
        .iter()
        .map(record_of)
        .collect()
    }

    async fn scheduled_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        self.collect(
            self.jobs
                .find(doc! {"next_fire_at": {"$ne": Bson::Null, "$lte": before.0}})
                .projection(doc! {"task_id": 1, "next_fire_at": 1})
                .sort(doc! {"next_fire_at": 1})
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

    async fn executions_in(
        &self,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<Execution>, StoreError> {
        let statuses: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
        let documents = self
            .collect(
                self.executions
                    .find(doc! {"status": {"$in": statuses}})
                    .sort(doc! {"created_at": 1, "_id": 1}),
            )
            .await?;
        let mut executions = Vec::with_capacity(documents.len());
        for document in &documents {
            executions.push(self.read_execution(document).await?);
        }
        Ok(executions)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        Ok(StoreCounts {
            tasks: bounded(self.tasks.estimated_document_count()).await?,
            jobs: bounded(self.jobs.estimated_document_count()).await?,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded(self.database.run_command(doc! {"ping": 1}))
            .await
            .map(|_| ())
    }
}
