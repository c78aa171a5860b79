//! Retention: finished executions (with their outputs) and dead letters do not pile up
//! forever. Run by the RootActor in a task of its own every `retention.interval`.
//!
//! Each round removes, in batches of [`BATCH`] with a pause between batches so that the store
//! serves everything else meanwhile:
//! - executions older than `retention.max_age` (`EXECUTION_RETENTION_SECONDS`), oldest first;
//! - the executions of each job beyond its newest `retention.kept_per_job`
//!   (`EXECUTIONS_KEPT_PER_JOB`), paging through the jobs with a cursor kept between rounds
//!   ([`JOBS_PER_ROUND`] jobs a round, so a round's work is bounded however many jobs exist);
//! - dead letters older than `retention.max_age`.
//!
//! Only terminal executions that owe no notification go (the store checks it in the delete
//! itself, so an execution retried or owing a webhook meanwhile stays), finished at least
//! `retention.settle` ago (by age: finished before the age limit too), and never the newest of a job by
//! age, so a monthly job still shows its last run. Their job keeps counting them in
//! `executionCount`. A runner's fenced write never brings a removed execution back (the store
//! refuses it). Several nodes may run rounds at once: a delete of what another node removed
//! removes nothing.

use crate::Services;
use fastlane_proto::Timestamp;
use std::time::Duration;
use uuid::Uuid;

/// Executions (or dead letters) removed per store call.
pub const BATCH: usize = 100;
/// Batches per kind and round: at most `BATCH × BATCHES_PER_ROUND` go per round.
const BATCHES_PER_ROUND: usize = 50;
/// Jobs looked at per round for `kept_per_job`.
const JOBS_PER_ROUND: usize = 500;
/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);

/// What retention keeps (`None`: no limit of that kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// How often a round runs; `None`: never.
    pub interval: Option<Duration>,
    /// Executions kept per job (the newest), `EXECUTIONS_KEPT_PER_JOB`.
    pub kept_per_job: Option<u64>,
    /// Age past which finished executions and dead letters go, `EXECUTION_RETENTION_SECONDS`.
    pub max_age: Option<Duration>,
    /// How long ago an execution must have finished before `kept_per_job` may remove it: a
    /// stopped or timed-out run is written again by its runner when its container exits (within
    /// the longest stop grace period, while it holds its lease), and that write must find it.
    pub settle: Duration,
}

/// Runs rounds every interval until aborted; returns at once when retention is off.
pub(crate) async fn run(services: Services) {
    let retention = services.settings.retention;
    let Some(interval) = retention.interval else {
        return;
    };
    if retention.kept_per_job.is_none() && retention.max_age.is_none() {
        return;
    }
    let mut cursor = None;
    loop {
        tokio::time::sleep(interval).await;
        match round(&services, &mut cursor).await {
            Ok(removed) if removed.executions + removed.dead_letters > 0 => {
                tracing::info!(
                    executions = removed.executions,
                    dead_letters = removed.dead_letters,
                    "retention removed old records"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention round"),
        }
    }
}

/// What a round removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub executions: u64,
    pub dead_letters: u64,
}

/// One round; `cursor` is the last job looked at for `kept_per_job` (`None`: from the first).
pub async fn round(services: &Services, cursor: &mut Option<Uuid>) -> Result<Removed, String> {
    let retention = services.settings.retention;
    let store = &services.store;
    let mut removed = Removed::default();
    if let Some(max_age) = retention.max_age {
        let before =
            Timestamp(Timestamp::now().0 - max_age.as_micros().min(i64::MAX as u128) as i64);
        for _ in 0..BATCHES_PER_ROUND {
            let ids = store
                .finished_before(before, BATCH)
                .await
                .map_err(|error| error.to_string())?;
            if ids.is_empty() {
                break;
            }
            let gone = store
                .remove_executions(&ids)
                .await
                .map_err(|error| error.to_string())?;
            removed.executions += gone;
            if gone == 0 {
                // Every one is kept (a concurrent retry, or owed notifications): next round.
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        for _ in 0..BATCHES_PER_ROUND {
            let gone = services
                .queue
                .remove_dead_letters_before(before, BATCH)
                .await
                .map_err(|error| error.to_string())?;
            removed.dead_letters += gone;
            if gone < BATCH as u64 {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    if let Some(keep) = retention.kept_per_job {
        let jobs = store
            .job_ids_after(*cursor, JOBS_PER_ROUND)
            .await
            .map_err(|error| error.to_string())?;
        let at_end = jobs.len() < JOBS_PER_ROUND;
        let settle = i64::try_from(retention.settle.as_micros()).unwrap_or(i64::MAX / 2);
        let settled = Timestamp(Timestamp::now().0.saturating_sub(settle));
        let mut batches = 0;
        for job_id in jobs {
            loop {
                let ids = match store.finished_beyond(job_id, keep, settled, BATCH).await {
                    Ok(ids) => ids,
                    Err(error) => {
                        // One job's rows must not stop the others': it is tried next cycle.
                        tracing::warn!(%job_id, %error, "retention skipped a job");
                        break;
                    }
                };
                if ids.is_empty() {
                    break;
                }
                let gone = store
                    .remove_executions(&ids)
                    .await
                    .map_err(|error| error.to_string())?;
                removed.executions += gone;
                batches += 1;
                tokio::time::sleep(PAUSE).await;
                if gone < ids.len() as u64 || batches >= BATCHES_PER_ROUND {
                    break;
                }
            }
            if batches >= BATCHES_PER_ROUND {
                // This job again next round: it may have more to remove.
                return Ok(removed);
            }
            *cursor = Some(job_id);
        }
        if at_end {
            // Every job looked at: the next round starts again from the first.
            *cursor = None;
        }
    }
    Ok(removed)
}
