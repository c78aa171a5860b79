//! Output of executions in MongoDB: stdout and stderr in 4 MiB binary chunks of the `outputs`
//! collection, each write a new version, so output of any size fits under the 16 MiB document
//! limit and a reader never sees a version half written (see the module comment of `mod.rs`).

use super::{bounded, readable_record, MongoStore};
use fastlane_actors::ports::{ExecutionTail, OutputStream, StoreError};
use fastlane_proto::Execution;
use mongodb::bson::{doc, Bson, Document};
use uuid::Uuid;

/// Output chunk size: well under the 16 MiB document limit.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The execution's `output` field: `{kind: version}`.
pub(super) fn output_pointers(versions: &[(String, String)]) -> Document {
    versions
        .iter()
        .map(|(kind, version)| (kind.clone(), Bson::String(version.clone())))
        .collect()
}

/// The execution with its webhook attempts, its output not read (`log` and `error` are `None`);
/// `None` (logged) when the record cannot be parsed.
pub(super) fn execution_without_output(document: &Document) -> Option<Execution> {
    let mut execution: Execution = readable_record(document)?;
    if let Ok(dispatch) = document.get_array("webhook_dispatch") {
        execution.metadata.webhook_dispatch = dispatch
            .iter()
            .map(|entry| entry.clone().into_relaxed_extjson())
            .collect();
    }
    Some(execution)
}

impl MongoStore {
    /// The execution with its output and webhook attempts; `None` (logged) when its record
    /// cannot be parsed.
    pub(super) async fn read_execution(
        &self,
        document: &Document,
    ) -> Result<Option<Execution>, StoreError> {
        let Some(mut execution) = execution_without_output(document) else {
            return Ok(None);
        };
        self.read_outputs(&mut execution, document).await?;
        Ok(Some(execution))
    }

    /// The job's newest `limit` executions, newest first, each with the last `max_bytes` of its
    /// outputs.
    pub(super) async fn execution_tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError> {
        let documents = self.newest_executions(job_id, limit).await?;
        let mut executions = Vec::with_capacity(documents.len());
        for document in &documents {
            let Some(mut execution) = execution_without_output(document) else {
                continue;
            };
            let (log_cut, error_cut) = self
                .read_output_tails(&mut execution, document, max_bytes)
                .await?;
            executions.push(ExecutionTail {
                execution,
                log_cut,
                error_cut,
            });
        }
        Ok(executions)
    }

    /// Reads into `execution` the output versions the execution `document` points at.
    pub(super) async fn read_outputs(
        &self,
        execution: &mut Execution,
        document: &Document,
    ) -> Result<(), StoreError> {
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
            return Ok(());
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
        Ok(())
    }

    /// `Store::get_execution_tail`: the record, and the ends of its outputs when asked.
    pub(super) async fn execution_tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError> {
        let found = bounded(
            self.executions
                .find_one(doc! {"_id": execution_id.to_string()}),
        );
        let Some(document) = found.await? else {
            return Ok(None);
        };
        let Some(mut execution) = execution_without_output(&document) else {
            return Ok(None);
        };
        let (log_cut, error_cut) = match max_bytes {
            Some(max_bytes) => {
                self.read_output_tails(&mut execution, &document, max_bytes)
                    .await?
            }
            None => (false, false),
        };
        Ok(Some(ExecutionTail {
            execution,
            log_cut,
            error_cut,
        }))
    }

    /// The output version the execution record points at for `stream`; `None` when it has none.
    async fn output_version(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<String>, StoreError> {
        let found = bounded(
            self.executions
                .find_one(doc! {"_id": execution_id.to_string()})
                .projection(doc! {"output": 1}),
        )
        .await?;
        Ok(found.and_then(|document| {
            let versions = document.get_document("output").ok()?;
            Some(versions.get_str(stream.field()).ok()?.to_string())
        }))
    }

    /// `Store::output_len`: every chunk but the last holds [`CHUNK_BYTES`], so the last chunk
    /// alone gives the length.
    pub(super) async fn output_len(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<u64>, StoreError> {
        let Some(version) = self.output_version(execution_id, stream).await? else {
            return Ok(None);
        };
        let last = bounded(
            self.outputs
                .find_one(doc! {
                    "execution_id": execution_id.to_string(),
                    "kind": stream.field(),
                    "v": version,
                })
                .sort(doc! {"n": -1}),
        )
        .await?;
        Ok(last.map(|chunk| {
            let n = chunk.get_i64("n").unwrap_or(0).max(0) as u64;
            n * CHUNK_BYTES as u64 + chunk_data(&chunk).len() as u64
        }))
    }

    /// `Store::read_output`: fetches only the chunks the range touches.
    pub(super) async fn read_output(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(version) = self.output_version(execution_id, stream).await? else {
            return Ok(Vec::new());
        };
        if max_len == 0 {
            return Ok(Vec::new());
        }
        let chunk = CHUNK_BYTES as u64;
        let first = (offset / chunk).min(i64::MAX as u64) as i64;
        let last = (offset.saturating_add(max_len - 1) / chunk).min(i64::MAX as u64) as i64;
        let chunks = self
            .collect(
                self.outputs
                    .find(doc! {
                        "execution_id": execution_id.to_string(),
                        "kind": stream.field(),
                        "v": version,
                        "n": {"$gte": first, "$lte": last},
                    })
                    .sort(doc! {"n": 1}),
            )
            .await?;
        let mut bytes = Vec::new();
        let mut skip = (offset % chunk) as usize;
        for chunk_document in &chunks {
            let data = chunk_data(chunk_document);
            let wanted = max_len as usize - bytes.len();
            let start = skip.min(data.len());
            bytes.extend_from_slice(&data[start..data.len().min(start + wanted)]);
            skip = 0;
        }
        Ok(bytes)
    }

    /// Writes the execution's `log` and `error` (those set) as new output versions; returns
    /// `(kind, version)` of each. Nothing reads them until the execution record points at them;
    /// on failure, what was written is removed.
    /// Reads only the end of each output: its last chunks, at most `max_bytes` of them kept (0 =
    /// whole). Returns whether `log` and `error` lost their beginnings.
    pub(super) async fn read_output_tails(
        &self,
        execution: &mut Execution,
        document: &Document,
        max_bytes: u64,
    ) -> Result<(bool, bool), StoreError> {
        if max_bytes == 0 {
            self.read_outputs(execution, document).await?;
            return Ok((false, false));
        }
        let mut cut = (false, false);
        let Ok(versions) = document.get_document("output") else {
            return Ok(cut);
        };
        let keep = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        // Enough of the newest chunks to hold `keep` bytes even when the last one is short.
        let chunks_needed = (keep / CHUNK_BYTES + 2).min(i64::MAX as usize) as i64;
        for (kind, version) in versions {
            let chunks = self
                .collect(
                    self.outputs
                        .find(doc! {
                            "execution_id": execution.execution_id.to_string(),
                            "kind": kind,
                            "v": version.clone(),
                        })
                        .sort(doc! {"n": -1})
                        .limit(chunks_needed),
                )
                .await?;
            if chunks.is_empty() {
                // As `read_outputs`: an output without chunks reads as none.
                continue;
            }
            let first_n = chunks.last().and_then(|chunk| chunk.get_i64("n").ok());
            let mut bytes = Vec::new();
            for chunk in chunks.iter().rev() {
                if let Some(Bson::Binary(binary)) = chunk.get("data") {
                    bytes.extend_from_slice(&binary.bytes);
                }
            }
            let mut was_cut = first_n.is_some_and(|n| n > 0);
            if bytes.len() > keep {
                bytes.drain(..bytes.len() - keep);
                was_cut = true;
            }
            match kind.as_str() {
                "log" => (execution.log, cut.0) = (Some(bytes), was_cut),
                "error" => (execution.error, cut.1) = (Some(bytes), was_cut),
                _ => {}
            }
        }
        Ok(cut)
    }

    pub(super) async fn write_outputs(
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
    pub(super) async fn drop_outputs(
        &self,
        execution_id: &str,
        versions: &[(String, String)],
        these: bool,
    ) {
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
}

/// The bytes of one output chunk (none when the chunk is malformed).
fn chunk_data(chunk: &Document) -> &[u8] {
    match chunk.get("data") {
        Some(Bson::Binary(binary)) => binary.bytes.as_slice(),
        _ => &[],
    }
}
