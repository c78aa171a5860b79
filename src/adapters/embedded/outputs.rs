//! Reading pieces of stored outputs from the embedded database with SQLite's incremental BLOB
//! I/O: `substr` or a plain column read would load a whole output (up to
//! `EXECUTION_OUTPUT_MAX_BYTES` per stream) into memory to return a few KiB of it, whereas
//! `length()` and `sqlite3_blob_read` touch only the pages needed. The [`Store`] calls reading
//! outputs run on the reader connections (`reader.rs`), not on the database thread.
//!
//! [`Store`]: fastlane_actors::ports::Store

use super::records::{newest_execution_rows, parsed};
use super::{DbError, Embedded};
use fastlane_actors::ports::{ExecutionTail, OutputStream, StoreError};
use fastlane_proto::Execution;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

impl Embedded {
    /// The last `limit` executions of the job, newest first, each with the last `max_bytes` of
    /// its outputs; on a reader connection.
    pub(super) async fn tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError> {
        self.read(move |connection| {
            let rows = newest_execution_rows(connection, job_id, limit)?;
            let mut tails = Vec::with_capacity(rows.len());
            for (id, record) in rows {
                // An unparsable record is skipped, with an error logged.
                if let Some(execution) = parsed(&id, &record) {
                    tails.push(tail_of(connection, execution, max_bytes)?);
                }
            }
            Ok(tails)
        })
        .await
        .map_err(StoreError::from)
    }

    /// The execution with the last `max_bytes` of its outputs (`None`: without outputs); on a
    /// reader connection.
    pub(super) async fn tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError> {
        self.read(move |connection| {
            let id = execution_id.to_string();
            let record: Option<String> = connection
                .prepare_cached("SELECT record FROM executions WHERE execution_id = ?1")?
                .query_row(params![id], |row| row.get(0))
                .optional()?;
            // As `get_execution`: an unparsable record reads as absent, with an error logged.
            let Some(execution) = record.and_then(|record| parsed::<Execution>(&id, &record))
            else {
                return Ok(None);
            };
            Ok(Some(match max_bytes {
                Some(max_bytes) => tail_of(connection, execution, max_bytes)?,
                None => ExecutionTail::of(execution, 0),
            }))
        })
        .await
        .map_err(StoreError::from)
    }

    /// The length of the execution's output; on a reader connection.
    pub(super) async fn stored_len(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<u64>, StoreError> {
        self.read(move |connection| {
            let found = output_len(connection, &execution_id.to_string(), stream)?;
            Ok(found.map(|(_, length)| length))
        })
        .await
        .map_err(StoreError::from)
    }

    /// A piece of the execution's output; on a reader connection.
    pub(super) async fn piece(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.read(move |connection| {
            let id = execution_id.to_string();
            read_output(connection, &id, stream, offset, max_len)
        })
        .await
        .map_err(StoreError::from)
    }
}

/// The output's row id and length in bytes; `None` when the execution has no such output.
pub(super) fn output_len(
    connection: &Connection,
    execution_id: &str,
    stream: OutputStream,
) -> Result<Option<(i64, u64)>, DbError> {
    // `length()` of a BLOB reads its size only, not its content.
    let sql = format!(
        "SELECT rowid, length({0}) FROM outputs WHERE execution_id = ?1",
        stream.field()
    );
    let row: Option<(i64, Option<i64>)> = connection
        .prepare_cached(&sql)?
        .query_row(params![execution_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(rowid, length)| Some((rowid, length?.max(0) as u64))))
}

/// At most `max_len` bytes of the output from `offset` (fewer only at its end).
pub(super) fn read_output(
    connection: &Connection,
    execution_id: &str,
    stream: OutputStream,
    offset: u64,
    max_len: u64,
) -> Result<Vec<u8>, DbError> {
    let Some((rowid, length)) = output_len(connection, execution_id, stream)? else {
        return Ok(Vec::new());
    };
    read_range(
        connection,
        rowid,
        stream,
        offset,
        max_len.min(length.saturating_sub(offset)),
    )
}

/// The output's last `max_bytes` (0 = whole) and whether its beginning was left out; `None`
/// when the execution has no such output.
pub(super) fn read_tail(
    connection: &Connection,
    execution_id: &str,
    stream: OutputStream,
    max_bytes: u64,
) -> Result<Option<(Vec<u8>, bool)>, DbError> {
    let Some((rowid, length)) = output_len(connection, execution_id, stream)? else {
        return Ok(None);
    };
    let keep = if max_bytes == 0 {
        length
    } else {
        length.min(max_bytes)
    };
    let bytes = read_range(connection, rowid, stream, length - keep, keep)?;
    Ok(Some((bytes, keep < length)))
}

/// The execution with the last `max_bytes` (0 = whole) of each output, read piecewise.
pub(super) fn tail_of(
    connection: &Connection,
    mut execution: Execution,
    max_bytes: u64,
) -> Result<ExecutionTail, DbError> {
    let id = execution.execution_id.to_string();
    let log = read_tail(connection, &id, OutputStream::Stdout, max_bytes)?;
    let error = read_tail(connection, &id, OutputStream::Stderr, max_bytes)?;
    let log_cut = log.as_ref().is_some_and(|(_, cut)| *cut);
    let error_cut = error.as_ref().is_some_and(|(_, cut)| *cut);
    execution.log = log.map(|(bytes, _)| bytes);
    execution.error = error.map(|(bytes, _)| bytes);
    Ok(ExecutionTail {
        execution,
        log_cut,
        error_cut,
    })
}

fn read_range(
    connection: &Connection,
    rowid: i64,
    stream: OutputStream,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, DbError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let blob = connection.blob_open("main", "outputs", stream.field(), rowid, true)?;
    let corrupt = |_| DbError::Corrupt("output offset out of range".into());
    let offset = usize::try_from(offset).map_err(corrupt)?;
    let mut bytes = vec![0; usize::try_from(len).map_err(corrupt)?];
    let read = blob.read_at(&mut bytes, offset)?;
    bytes.truncate(read);
    Ok(bytes)
}
