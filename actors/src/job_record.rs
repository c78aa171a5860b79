//! Conditional writes of a job record, and the runs they decide.
//!
//! Every write of a job goes through [`change_job`]: read, change, write on condition that the
//! version read is still stored; on a conflict read again and decide again, at most
//! [`ATTEMPTS`] times. So a stop, a PUT, a retry and a firing cannot overwrite each other, and
//! a stop cannot be undone by a writer that read the job before it.
//!
//! A firing or an automatic retry is decided by such a write, which records it on the job as a
//! [`PendingRun`]; only then is its execution created and queued ([`complete_pending`]), and
//! the run taken off the job. A stop takes the pending runs off the job in its own write and
//! ends them ([`end_pending`]). Whichever of the two writes comes second sees the first: a run
//! decided before the stop is ended by the stop, one decided after it is never decided.

use crate::lifecycle::stop_execution;
use crate::messages::wake_poller;
use crate::ports::{QueueMessage, Store, StoreError};
use crate::Services;
use fastlane_proto::{ExecutionStatus, Job, PendingRun, Timestamp};
use uuid::Uuid;

/// Reads of a job per [`change_job`] before it gives up: enough for writers racing on one
/// job (a stop, a PUT, a firing, a retry), small enough to bound a request's time.
pub(crate) const ATTEMPTS: usize = 8;

/// What [`change_job`] did.
pub(crate) enum Change<T> {
    /// No such job.
    Missing,
    /// The change decided there was nothing to write; the job as read.
    Unchanged(Job),
    /// Written: the job as stored now (its new version), and what the change returned.
    Written(Job, T),
}

/// Reads the job, lets `change` edit it (returning `None` when there is nothing to write) and
/// writes it on condition that nobody wrote it since it was read; reads and decides again after
/// a lost race. `Conflict` after [`ATTEMPTS`] lost races.
pub(crate) async fn change_job<T>(
    store: &dyn Store,
    task_id: &str,
    job_id: Uuid,
    mut change: impl FnMut(&mut Job) -> Option<T>,
) -> Result<Change<T>, StoreError> {
    for _ in 0..ATTEMPTS {
        let Some(read) = store.get_job(task_id, job_id).await? else {
            return Ok(Change::Missing);
        };
        let mut job = read.clone();
        let Some(value) = change(&mut job) else {
            return Ok(Change::Unchanged(read));
        };
        job.version = read.version;
        match store.update_job(&job).await {
            Ok(()) => {
                job.version += 1;
                return Ok(Change::Written(job, value));
            }
            Err(StoreError::Conflict(reason)) => {
                tracing::debug!(%job_id, %reason, "job changed meanwhile, reading it again");
            }
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Conflict(format!(
        "job {job_id} kept changing while it was being written; try again"
    )))
}

/// Writes `job` once, on condition of its version; `false` when another writer came first.
pub(crate) async fn try_write(store: &dyn Store, job: &Job) -> Result<bool, StoreError> {
    match store.update_job(job).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Creates and queues the executions of the job's pending runs (insert-if-absent, idempotent
/// push), then takes them off the job. Returns the job as stored afterwards (`None` when it
/// is gone). Run by whoever recorded the runs, right after; by the scheduler after a crash.
pub(crate) async fn complete_pending(
    services: &Services,
    job: Job,
) -> Result<Option<Job>, StoreError> {
    if job.pending.is_empty() {
        return Ok(Some(job));
    }
    let now = Timestamp::now();
    for run in &job.pending {
        let execution = run.execution(&job, now);
        if services.store.create_execution(&execution).await? {
            tracing::info!(job_id = %job.job_id, execution_id = %run.execution_id, retry_of = ?run.retry_of, scheduled_at = ?run.scheduled_at.map(|slot| slot.iso()), "run created");
        }
        // Pushed even when the execution existed: a crash may have come between the two. A
        // stop that ended it first makes the JobActor only acknowledge the message.
        services
            .queue
            .push(&QueueMessage::run(&execution), run.due)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
    }
    wake_poller();
    // Usually nobody wrote the job meanwhile: take the runs off the copy in hand, reading it
    // again only after a lost race.
    let done: Vec<Uuid> = job.pending.iter().map(|run| run.execution_id).collect();
    let completed = Job {
        pending: Vec::new(),
        ..job
    };
    if try_write(services.store.as_ref(), &completed).await? {
        return Ok(Some(Job {
            version: completed.version + 1,
            ..completed
        }));
    }
    let outcome = change_job(
        services.store.as_ref(),
        &completed.task_id,
        completed.job_id,
        |job| {
            let before = job.pending.len();
            job.pending.retain(|run| !done.contains(&run.execution_id));
            (job.pending.len() != before).then_some(())
        },
    )
    .await?;
    Ok(match outcome {
        Change::Missing => None,
        Change::Unchanged(job) | Change::Written(job, ()) => Some(job),
    })
}

/// Ends runs a stop took off the job: each execution is created `stopped` when absent, and
/// stopped like any other when a writer created it first.
pub(crate) async fn end_pending(
    services: &Services,
    job: &Job,
    runs: &[PendingRun],
    message: &str,
) -> Result<(), StoreError> {
    let now = Timestamp::now();
    for run in runs {
        let mut execution = run.execution(job, now);
        execution.status = ExecutionStatus::Stopped;
        execution.finished_at = Some(now);
        if !services.store.create_execution(&execution).await? {
            stop_execution(services, run.execution_id, message).await?;
        }
        tracing::info!(job_id = %job.job_id, execution_id = %run.execution_id, "pending run ended by a stop");
    }
    Ok(())
}
