//! The queue sweeps: the queue can lose nothing the store has, and nothing waits forever in the
//! dead-letter list. Run by the RootActor: [`reconcile`] before anything else runs, then [`run`]
//! in a task of its own until the root stops.
//!
//! - Unfinished executions are pushed again (pushes of queued, leased or dead ids change
//!   nothing), so a message a crash or a Redis failover lost comes back.
//! - Executions whose message was dead-lettered end `failed`, with their `fails` notifications
//!   (owed in the write that ends them: `end_unowned`) and an error report.
//!
//! Both read in pages of [`SWEEP_PAGE`] through a cursor, so one read costs the same with 100
//! or 100 000 executions waiting: the unfinished executions by status and id, the dead letters
//! by their position (kept between sweeps: each dead letter is looked at once per life of the
//! node, every one of them, not only the newest).

use crate::lifecycle::{end_unowned, report_context};
use crate::ports::{DeadLetter, QueueMessage};
use crate::Services;
use fastlane_proto::{ExecutionStatus, Timestamp};
use ractor::ActorProcessingErr;

/// Ends dead-lettered executions now, then every `queue_sweep_interval` pushes unfinished
/// executions again (with a queue that may lose messages: `push_unfinished_periodically`; each
/// push costs a write per waiting execution) and ends newly dead-lettered ones; returns only
/// when sweeping is off.
pub(crate) async fn run(services: Services) {
    let mut dead_letters_seen = 0;
    loop {
        if let Err(error) = finish_dead_lettered(&services, &mut dead_letters_seen).await {
            tracing::warn!(%error, "sweep of dead-lettered executions");
        }
        let Some(interval) = services.settings.queue_sweep_interval else {
            return;
        };
        tokio::time::sleep(interval).await;
        if !services.settings.push_unfinished_periodically {
            continue;
        }
        match push_unfinished(&services, SWEEP_SETTLE_MS, true).await {
            Ok(pushed) => tracing::debug!(pushed, "swept unfinished executions"),
            Err(error) => tracing::warn!(%error, "sweep of unfinished executions"),
        }
    }
}

/// Brings the queue in line with the store before anything runs: this node's leases from its
/// previous lives are released, and every execution that has not finished is pushed again (a
/// no-op when its message is still there). This is what makes a crash between writing an
/// execution and queueing it harmless.
pub(crate) async fn reconcile(services: &Services) -> Result<(), ActorProcessingErr> {
    let mut released = 0;
    for consumer in &services.settings.previous_consumers {
        released += services.queue.release_all(consumer, true).await?;
    }
    let unfinished = push_unfinished(services, 0, false).await?;
    tracing::info!(released, unfinished, "reconciled queue with store");
    Ok(())
}

/// Rows read at once by the sweeps.
pub(crate) const SWEEP_PAGE: usize = 100;

/// Ends as `failed` every execution whose message was dead-lettered (it failed
/// [`MAX_FAILED_DELIVERIES`](crate::ports::MAX_FAILED_DELIVERIES) times, or could not be read)
/// while the store still shows it unfinished, so that its API, its `fails` notifications and
/// the error tracker tell what happened instead of it waiting forever. It is not retried: a
/// message that crashed its runners repeatedly would crash the retry too. Reads the dead
/// letters after position `seen`, page by page, and moves `seen` past each page once it is
/// handled. Returns how many it ended.
pub(crate) async fn finish_dead_lettered(
    services: &Services,
    seen: &mut u64,
) -> Result<usize, ActorProcessingErr> {
    let mut finished = 0;
    loop {
        let (page, next) = services.queue.dead_letters_after(*seen, SWEEP_PAGE).await?;
        if page.is_empty() {
            return Ok(finished);
        }
        for dead in &page {
            finished += finish_one_dead_lettered(services, dead).await?;
        }
        *seen = next;
    }
}

/// Ends the execution of one dead letter if the store still shows it unfinished; 1 when ended.
async fn finish_one_dead_lettered(
    services: &Services,
    dead: &DeadLetter,
) -> Result<usize, ActorProcessingErr> {
    let Some(mut execution) = services
        .store
        .get_execution(dead.message.execution_id)
        .await?
    else {
        return Ok(0);
    };
    if execution.status.is_terminal() {
        return Ok(0);
    }
    let reason = format!(
        "dead-lettered after {} deliveries: {}",
        dead.deliveries, dead.reason
    );
    if !end_unowned(services, &mut execution, ExecutionStatus::Failed, &reason).await? {
        return Ok(0);
    }
    tracing::warn!(
        task_id = %execution.task_id,
        job_id = %execution.job_id,
        execution_id = %execution.execution_id,
        %reason,
        "execution dead-lettered"
    );
    let extra = report_context("dead-letter", &dead.message, Some(&execution));
    services.reporter.report(&reason, &extra);
    Ok(1)
}

/// How old an execution must be before the periodic sweep pushes it: younger ones may be
/// between being stored and being pushed (a retry with its back-off delay, say), and pushing
/// them due now would start them early.
const SWEEP_SETTLE_MS: i64 = 10_000;

/// With `paced`, the periodic sweep rests this many times as long as each page took before the
/// next one: it uses the store and the queue at most a fifth of the time, however large the
/// backlog, so that the starts and finishes of the jobs do not queue behind a burst of a
/// thousand page reads (100 000 waiting on Redis + MongoDB) every interval. A lost message then
/// comes back within about five times the unpaced sweep's length.
const SWEEP_REST_FACTOR: u32 = 4;

/// Pushes every execution that has not finished and was created at least `settle_ms` ago to
/// the queue, due now; returns how many. Pushing an id that is queued, leased or dead changes
/// nothing, so this only restores messages that were lost. An execution that finishes
/// meanwhile and gets pushed is acknowledged by the JobActor that leases it, without running.
/// `paced`: rests between pages ([`SWEEP_REST_FACTOR`]); not at start, before anything runs.
async fn push_unfinished(
    services: &Services,
    settle_ms: i64,
    paced: bool,
) -> Result<usize, ActorProcessingErr> {
    let now = Timestamp::now();
    let settled = now.unix_millis() - settle_ms;
    let mut pushed = 0;
    for status in [
        ExecutionStatus::Enqueued,
        ExecutionStatus::Pulling,
        ExecutionStatus::Running,
    ] {
        let mut after = None;
        loop {
            let page_began = std::time::Instant::now();
            let page = services
                .store
                .executions_in(status, after, SWEEP_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.execution_id);
            // A page's pushes at once: the embedded queue commits them together (one flush
            // instead of one each), Redis pipelines them. At most SWEEP_PAGE in flight.
            let mut pushes = tokio::task::JoinSet::new();
            for execution in page
                .iter()
                .filter(|execution| execution.created_at.unix_millis() <= settled)
            {
                let (queue, message) = (services.queue.clone(), QueueMessage::run(execution));
                pushes.spawn(async move { queue.push(&message, now).await });
            }
            while let Some(done) = pushes.join_next().await {
                done.map_err(|error| format!("sweep push: {error}"))??;
                pushed += 1;
            }
            if paced {
                tokio::time::sleep(page_began.elapsed() * SWEEP_REST_FACTOR).await;
            }
        }
    }
    Ok(pushed)
}
