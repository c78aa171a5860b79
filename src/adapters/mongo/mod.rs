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
//!   `webhook_dispatch` apart (appended atomically with `$push`/`$slice`), and the notification
//!   outbox (`outbox`, `outbox_version`, `notify_due_at`: `outbox.rs`).
//! - `removed_executions`: `_id` = job id, `count` of its executions retention removed
//!   (`history.rs`, with the history's indexes).
//! - `outputs`: stdout/stderr in 4 MiB binary chunks (`execution_id`, `kind`, `v`, `n`, `data`),
//!   so output of any size fits under the 16 MiB document limit. A write adds a new version's
//!   chunks first, then points the execution at it in the same update that sets its status, then
//!   drops older versions: a reader never sees a finished execution without its output.
//!
//! Without transactions, multi-document writes are ordered so a crash leaves nothing visible
//! half-done: `create_job` undoes what it wrote when a later step fails; terminal statuses are
//! final through a conditional update.
//!
//! Here: the settings, the connection, the collections and their indexes, and the conversions
//! every file uses; `store.rs` implements the port, `outputs.rs` the chunked, versioned output.
//!
//! [`Store`]: fastlane_actors::ports::Store

mod history;
mod idempotency;
mod outbox;
mod outputs;
mod store;

use fastlane_actors::ports::StoreError;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::future::IntoFuture;
use std::time::Duration;

/// Bound on every MongoDB call (server selection, reconnection and retries included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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
                "invalid MongoDB URI {:?}: expected mongodb:// or mongodb+srv://",
                fastlane_proto::redact::redact_url(&uri)
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
    idempotency_keys: Collection<Document>,
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
            idempotency_keys: database.collection("idempotency_keys"),
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
        bounded(self.jobs.create_index(index(
            doc! {"task_id": 1, "last_modified_at": -1, "_id": -1},
            false,
        )))
        .await?;
        bounded(
            self.jobs
                .create_index(index(doc! {"next_fire_at": 1}, false)),
        )
        .await?;
        // The scheduler loads its index at start page by page on (next_fire_at, _id).
        bounded(
            self.jobs
                .create_index(index(doc! {"next_fire_at": 1, "_id": 1}, false)),
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
        // The sweeps page unfinished executions by status and id (`Store::executions_in`).
        bounded(
            self.executions
                .create_index(index(doc! {"status": 1, "_id": 1}, false)),
        )
        .await?;
        self.create_history_indexes().await?;
        // Only executions owing a notification have `notify_due_at`: a sparse index.
        let due_index = IndexModel::builder()
            .keys(doc! {"notify_due_at": 1})
            .options(IndexOptions::builder().sparse(true).build())
            .build();
        bounded(self.executions.create_index(due_index)).await?;
        bounded(
            self.idempotency_keys
                .create_index(index(doc! {"expires_at": 1}, false)),
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

/// The document's record, or `None` with an error logged (naming the document) when it cannot be
/// parsed: one bad document never fails a listing, the scheduler's start-up or a sweep.
fn readable_record<T: serde::de::DeserializeOwned>(document: &Document) -> Option<T> {
    match record_of(document) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::error!(
                row_id = %document.get("_id").map(ToString::to_string).unwrap_or_default(),
                %error,
                "skipping a stored record that cannot be parsed"
            );
            None
        }
    }
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

    /// `Store::claim_execution`: `$inc` of the execution's `fence`, the new value returned.
    async fn claim(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let claimed = bounded(
            self.executions
                .find_one_and_update(doc! {"_id": id}, doc! {"$inc": {"fence": 1_i64}})
                .return_document(mongodb::options::ReturnDocument::After)
                .projection(doc! {"fence": 1}),
        )
        .await?;
        Ok(claimed.map(|document| integer(&document, "fence").max(0) as u64))
    }

    /// Why a fenced execution write matched nothing: `Fenced` when another runner claimed the
    /// execution after `fence`, or it is gone; `Ok` otherwise (terminal: the caller goes on as
    /// for an unfenced write).
    async fn refused(&self, id: &str, fence: Option<u64>) -> Result<(), StoreError> {
        let Some(fence) = fence else {
            return Ok(());
        };
        let stored = bounded(
            self.executions
                .find_one(doc! {"_id": id})
                .projection(doc! {"fence": 1}),
        )
        .await?;
        match stored {
            Some(document) if integer(&document, "fence") != fence as i64 => {
                Err(StoreError::Fenced(format!(
                    "execution {id} was claimed by another runner ({}, this one {fence})",
                    integer(&document, "fence")
                )))
            }
            // A runner's claim is on a stored execution: gone since (deleted, or removed by
            // retention), it is not written back.
            None => Err(StoreError::Fenced(format!("execution {id} is gone"))),
            _ => Ok(()),
        }
    }
}
