//! The read-only connections that serve reads of stored outputs, beside the database thread.
//!
//! A piece of a large output or a tail is a BLOB read that may walk a long overflow-page chain;
//! queued on the one database thread, it delays the writes every job needs (a trivial job posted
//! while 20 clients read 200 MB outputs took seconds). Under WAL, readers run beside the writer
//! and see only committed transactions, so these reads go to a small fixed pool of threads,
//! each owning its own read-only connection. Their queue is bounded: when it is full, callers
//! wait for room (their own timeouts still apply) instead of piling work up in memory.

use super::{DbError, Embedded};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where reads are sent to the reader threads.
pub(super) type Reads = mpsc::Sender<Read>;

/// A read: runs on one reader connection inside its own read transaction (one snapshot).
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads, each with its own connection: two reads of outputs run at once, and a third
/// waits; more would only compete for the 2 cores and the disk with the writer.
const READERS: usize = 2;

/// Most reads waiting for a reader; beyond it, callers wait to enqueue.
const QUEUE: usize = 64;

/// Opens [`READERS`] read-only connections on the database at `path` (already created, in WAL
/// mode, by the writer's connection) and starts a thread for each.
pub(super) fn spawn(path: &Path, busy_timeout: Duration) -> anyhow::Result<Reads> {
    let (reads, receiver) = mpsc::channel(QUEUE);
    let receiver = Arc::new(Mutex::new(receiver));
    for index in 0..READERS {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(busy_timeout)?;
        connection.set_prepared_statement_cache_capacity(16);
        let receiver = Arc::clone(&receiver);
        std::thread::Builder::new()
            .name(format!("fastlane-db-read-{index}"))
            .spawn(move || serve(connection, &receiver))?;
    }
    Ok(reads)
}

/// A reader thread: takes the next read (one thread waits on the queue at a time, the other
/// runs a read) and runs it in a read transaction; ends when every sender is gone.
fn serve(connection: Connection, reads: &Mutex<mpsc::Receiver<Read>>) {
    loop {
        // A poisoned lock only means another reader panicked while waiting; the queue is fine.
        let next = reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .blocking_recv();
        let Some(read) = next else {
            return;
        };
        if let Err(error) = connection.execute_batch("BEGIN") {
            // The dropped read answers its caller with an error.
            tracing::error!(%error, "could not begin a read transaction");
            continue;
        }
        // A read that panicked drops its answer: its caller gets an error.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&connection)));
        if let Err(error) = connection.execute_batch("COMMIT") {
            tracing::error!(%error, "could not end a read transaction");
            let _ = connection.execute_batch("ROLLBACK");
        }
    }
}

impl Embedded {
    /// Runs `work` on a reader connection, which sees only committed data; for reads of outputs,
    /// which must not wait behind (or delay) the writes on the database thread.
    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: Read = Box::new(move |connection| {
            // A caller that went away (a client that disconnected) costs no read.
            if !reply.is_closed() {
                let _ = reply.send(work(connection));
            }
        });
        self.reads
            .send(read)
            .await
            .map_err(|_| DbError::Unavailable("the database readers have stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the database read did not complete".into()))?
    }
}
