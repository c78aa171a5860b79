//! The thread that owns the SQLite connection, and how a call reaches it.
//!
//! SQLite serializes writers anyway, so one thread owns the connection and runs the calls sent
//! to it. It commits in groups: the calls waiting when it takes one are run together in one
//! transaction, each inside its own savepoint (a failing call rolls back only itself), and
//! every caller gets its answer only after that transaction committed. Under load this turns
//! hundreds of commits (each a WAL write) into one; an idle node's calls run alone, at once.

use super::{DbError, Embedded};
use rusqlite::Connection;
use std::sync::mpsc;

/// Where calls are sent to the database thread.
pub(super) type Calls = mpsc::Sender<Call>;

/// A call to the database thread: runs on the connection and says whether it succeeded; its
/// answer is sent by the returned [`Answer`] once the group's transaction ended (with the
/// commit's error, if it failed).
type Call = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Option<String>) + Send>;

/// Most calls committed together.
const GROUP: usize = 256;

/// Starts the database thread on `connection`.
pub(super) fn spawn(connection: Connection) -> std::io::Result<Calls> {
    let (calls, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("fastlane-db".into())
        .spawn(move || serve(connection, receiver))?;
    Ok(calls)
}

/// The database thread: takes a call, adds those already waiting, runs them in one
/// transaction, each in a savepoint, and answers them after the commit.
fn serve(mut connection: Connection, calls: mpsc::Receiver<Call>) {
    while let Ok(first) = calls.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match calls.try_recv() {
                Ok(call) => group.push(call),
                Err(_) => break,
            }
        }
        if let Err(error) = connection.execute_batch("BEGIN") {
            // Nothing runs outside a transaction: the dropped calls answer their callers
            // with an error.
            tracing::error!(%error, "could not begin a transaction");
            continue;
        }
        let mut answers = Vec::with_capacity(group.len());
        for call in group {
            if let Err(error) = run_cached(&connection, "SAVEPOINT call") {
                tracing::error!(%error, "could not open a savepoint");
                continue;
            }
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut connection)));
            let ok = matches!(ran, Ok((true, _)));
            let undo = if ok {
                run_cached(&connection, "RELEASE call")
            } else {
                connection.execute_batch("ROLLBACK TO call; RELEASE call")
            };
            if let Err(error) = undo {
                tracing::error!(%error, "could not end a savepoint");
            }
            // A call that panicked drops its answer: its caller gets an error.
            answers.push(ran.ok().map(|(_, answer)| answer));
        }
        let failed = match connection.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                Some(format!("the transaction did not commit: {error}"))
            }
        };
        for answer in answers.into_iter().flatten() {
            answer(failed.clone());
        }
    }
}

/// Runs a statement without parameters from the connection's statement cache.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

impl Embedded {
    /// Runs `work` on the database thread, in a savepoint of the group's transaction; answers
    /// once that transaction committed.
    pub(super) async fn with<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move |connection| {
            let result = work(connection);
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |failed: Option<String>| {
                let _ = reply.send(match failed {
                    Some(error) => Err(DbError::Unavailable(error)),
                    None => result,
                });
            });
            (ok, answer)
        });
        self.calls
            .send(call)
            .map_err(|_| DbError::Unavailable("the database thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the database call did not complete".into()))?
    }
}
