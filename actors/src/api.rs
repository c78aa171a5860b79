//! ApiActor: the front desk. The gateway turns each HTTP request into one call of this actor.
//! Started and restarted by the RootActor, registered under [`API_NAME`].
//!
//! In: `Enqueue` (POST and PUT), `StopJob`, `StopExecution`, `Retry`, `ListTasks`,
//! `SearchTasks`, `GetTask`, `GetJob`, `FindExecution`, `OutputLen`, `ReadOutput`, `Health`,
//! `Status`.
//! Out: store and queue operations; a wake-up to the poller after an enqueue; schedule changes
//! to the SchedulerActor; stop requests to JobActors.
//!
//! Each request is served by a spawned task that replies on the call's port, so a slow query
//! never holds up the mailbox; the handler itself only dispatches.

use crate::job_record::{self, change_job, end_pending, Change};
use crate::lifecycle::stop_execution;
use crate::messages::{
    schedule_changed, wake_poller, ApiError, ApiMessage, ApiResult, Enqueued, ExecutionLookup,
    Health, HostMessage, JobView, NodeStatus, RootMessage, ScheduledJob, SchedulerMessage,
    TaskDeletion, TaskView, WatchOutcome, SCHEDULER_NAME,
};
use crate::ports::{ExecutionFilter, Page, Paged, QueueMessage, StoreError};
use crate::Services;
use fastlane_proto::build::{new_job, NewJob, Origin};
use fastlane_proto::farm::farm_for;
use fastlane_proto::idempotency::{IdempotencyRecord, IdempotentAnswer};
use fastlane_proto::payload::EnqueueRequest;
use fastlane_proto::{ErrorKind, Execution, Timestamp};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// Dead letters shown in `/status/`.
pub const DEAD_LETTERS_SHOWN: usize = 20;

/// Scheduled jobs listed in `/status/` (the soonest; `jobs.scheduledCount` counts them all).
pub const SCHEDULED_JOBS_SHOWN: usize = 100;

/// Store reads `/status/` makes at once for the scheduled jobs.
const STATUS_READS_AT_ONCE: usize = 10;

/// Number of executions shown in the job details.
pub const JOB_EXECUTIONS_SHOWN: u64 = 20;

pub struct ApiActor;

pub struct ApiArgs {
    pub services: Services,
    pub root: ActorRef<RootMessage>,
}

pub struct ApiState {
    services: Services,
    root: ActorRef<RootMessage>,
}

impl Actor for ApiActor {
    type Msg = ApiMessage;
    type State = ApiState;
    type Arguments = ApiArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ApiMessage>,
        args: ApiArgs,
    ) -> Result<ApiState, ActorProcessingErr> {
        Ok(ApiState {
            services: args.services,
            root: args.root,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ApiMessage>,
        message: ApiMessage,
        state: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        let services = state.services.clone();
        match message {
            // A PUT names its job: it is idempotent without a key.
            ApiMessage::Enqueue {
                task_id,
                job_id: None,
                request,
                request_ip,
                idempotency: Some(idempotency),
                reply,
            } => serve(
                reply,
                enqueue_once(services, task_id, *request, request_ip, idempotency),
            ),
            ApiMessage::Enqueue {
                task_id,
                job_id,
                request,
                request_ip,
                idempotency: _,
                reply,
            } => serve(
                reply,
                enqueue(services, task_id, job_id, *request, request_ip),
            ),
            ApiMessage::StopJob {
                task_id,
                job_id,
                reply,
            } => serve(reply, stop_job(services, task_id, job_id)),
            ApiMessage::PauseJob {
                task_id,
                job_id,
                pause,
                reply,
            } => serve(reply, pause_job(services, task_id, job_id, pause)),
            ApiMessage::FindExecutions {
                filter,
                page,
                reply,
            } => serve(reply, find_executions(services, filter, page)),
            ApiMessage::DeleteJob {
                task_id,
                job_id,
                reply,
            } => serve(reply, delete_job(services, task_id, job_id)),
            ApiMessage::DeleteTask { task_id, reply } => {
                serve(reply, delete_task(services, task_id))
            }
            ApiMessage::StopExecution {
                task_id,
                job_id,
                execution_id,
                reply,
            } => serve(
                reply,
                stop_one_execution(services, task_id, job_id, execution_id),
            ),
            ApiMessage::Retry {
                task_id,
                job_id,
                reply,
            } => serve(reply, retry(services, task_id, job_id)),
            ApiMessage::ListTasks { page, reply } => {
                serve(
                    reply,
                    async move { Ok(services.store.list_tasks(page).await?) },
                )
            }
            ApiMessage::SearchTasks { words, page, reply } => serve(reply, async move {
                Ok(services.store.search_tasks(&words, page).await?)
            }),
            ApiMessage::GetTask {
                task_id,
                page,
                reply,
            } => serve(reply, get_task(services, task_id, page)),
            ApiMessage::GetJob {
                task_id,
                job_id,
                reply,
            } => serve(reply, get_job(services, task_id, job_id)),
            ApiMessage::FindExecution {
                task_id,
                job_id,
                execution_id,
                tails,
                reply,
            } => serve(
                reply,
                find_execution(services, task_id, job_id, execution_id, tails),
            ),
            ApiMessage::OutputLen {
                execution_id,
                stream,
                reply,
            } => serve(reply, async move {
                Ok(services.store.output_len(execution_id, stream).await?)
            }),
            ApiMessage::ReadOutput {
                execution_id,
                stream,
                offset,
                max_len,
                reply,
            } => serve(reply, async move {
                let store = &services.store;
                Ok(store
                    .read_output(execution_id, stream, offset, max_len)
                    .await?)
            }),
            ApiMessage::Health(reply) => serve(reply, health(services)),
            ApiMessage::Status(reply) => serve(reply, status(services, state.root.clone())),
            ApiMessage::Watch {
                task_id,
                job_id,
                execution_id,
                reply,
            } => serve(
                reply,
                watch(services, state.root.clone(), task_id, job_id, execution_id),
            ),
            ApiMessage::Blacklist { host, add, reply } => serve(reply, async move {
                let result = if add {
                    services.blacklist.add(&host).await
                } else {
                    services.blacklist.remove(&host).await
                };
                tracing::info!(%host, add, "blacklist changed");
                result.map_err(|error| ApiError {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                })
            }),
        }
        Ok(())
    }
}

/// Runs `work` in its own task and replies with its result.
fn serve<T: Send + 'static>(
    reply: RpcReplyPort<T>,
    work: impl Future<Output = T> + Send + 'static,
) {
    tokio::spawn(async move {
        let _ = reply.send(work.await);
    });
}

/// What replaced a job's queued execution.
const REPLACED: &str = "Job execution was replaced by an update of the job.";
const STOPPED: &str = "User stopped job execution manually.";
/// How many of a job's newest executions a stop looks at for unfinished ones (a cron job with
/// `overlap: allow` may have several).
const STOP_SCANNED: u64 = 100;

async fn enqueue(
    services: Services,
    task_id: String,
    job_id: Option<Uuid>,
    request: EnqueueRequest,
    request_ip: Option<String>,
) -> ApiResult<Enqueued> {
    refuse_unplaceable(&services, &task_id)?;
    refuse_beyond_limits(&services, &task_id, &request)?;
    let now = Timestamp::now();
    let (
        NewJob {
            job,
            execution,
            queue_id,
        },
        existed,
    ) = write_job_request(&services, &task_id, job_id, &request, request_ip, now).await?;
    if let Some(execution) = &execution {
        let message = QueueMessage::run(execution);
        if let Err(error) = services.queue.push(&message, now).await {
            // Undo a creation, so that nothing half-written is left behind (an update stays:
            // reconciliation at start queues its execution).
            if !existed {
                if let Err(undo) = services.store.delete_job(job.job_id).await {
                    tracing::error!(job_id = %job.job_id, %undo, "could not undo job after failed enqueue");
                }
            }
            return Err(ApiError {
                kind: ErrorKind::Unavailable,
                message: error.to_string(),
            });
        }
        wake_poller();
    }
    schedule_changed(&job);
    tracing::info!(%task_id, job_id = %job.job_id, updated = existed, scheduled = job.schedule.is_some(), "job enqueued");
    Ok(Enqueued {
        task_id,
        job_id: job.job_id,
        execution_id: execution.map(|execution| execution.execution_id),
        queue_message_id: queue_id,
    })
}

/// How long a repeat of an idempotent POST waits for the first one's answer before it finishes
/// the work itself (the first request's node died between recording the key and answering).
const IDEMPOTENT_WAIT: Duration = Duration::from_secs(5);

/// A POST with an `Idempotency-Key`: the key is recorded (with the body's digest and the id of
/// the job to create) before anything else is written, so that a repeat — from a client that
/// timed out, on any node — answers the first answer instead of creating a second job, and a
/// different body under the same key is refused (409).
async fn enqueue_once(
    services: Services,
    task_id: String,
    request: EnqueueRequest,
    request_ip: Option<String>,
    idempotency: crate::messages::Idempotency,
) -> ApiResult<Enqueued> {
    let now = Timestamp::now();
    let ttl_micros = i64::try_from(idempotency.ttl.as_micros()).unwrap_or(i64::MAX);
    let mut record = IdempotencyRecord {
        task_id: task_id.clone(),
        key: idempotency.key.clone(),
        body_sha256: idempotency.body_sha256.clone(),
        job_id: Uuid::new_v4(),
        answer: None,
        created_at: now,
        expires_at: Timestamp(now.0.saturating_add(ttl_micros)),
    };
    let Some(first) = services.store.claim_idempotency_key(&record, now).await? else {
        // This request is the first: create the job, then record the answer.
        let created = enqueue(
            services.clone(),
            task_id.clone(),
            Some(record.job_id),
            request,
            request_ip,
        )
        .await;
        match &created {
            Ok(enqueued) => {
                record.answer = Some(IdempotentAnswer {
                    execution_id: enqueued.execution_id,
                    queue_message_id: enqueued.queue_message_id.clone(),
                });
                if let Err(error) = services.store.complete_idempotency_key(&record).await {
                    // The job exists: a repeat finds it and answers from it.
                    tracing::warn!(%task_id, %error, "could not record the answer of an idempotent POST");
                }
            }
            Err(_) => {
                // Nothing was created: the key may be used again at once.
                let _ = services
                    .store
                    .release_idempotency_key(&task_id, &record.key, record.job_id)
                    .await;
            }
        }
        return created;
    };
    if first.body_sha256 != record.body_sha256 {
        return Err(ApiError {
            kind: ErrorKind::Conflict,
            message: format!(
                "The Idempotency-Key {:?} was used with a different request body (it holds until {}).",
                first.key,
                first.expires_at.iso()
            ),
        });
    }
    let deadline = tokio::time::Instant::now() + IDEMPOTENT_WAIT;
    let mut current = first;
    loop {
        if let Some(answer) = &current.answer {
            return Ok(Enqueued {
                task_id,
                job_id: current.job_id,
                execution_id: answer.execution_id,
                queue_message_id: answer.queue_message_id.clone(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        match services
            .store
            .get_idempotency_key(&task_id, &idempotency.key)
            .await?
        {
            Some(latest) if latest.job_id == current.job_id => current = latest,
            // Released (the first request failed) or replaced: decide again, as a first request.
            _ => {
                return Box::pin(enqueue_once(
                    services,
                    task_id,
                    request,
                    request_ip,
                    idempotency,
                ))
                .await
            }
        }
    }
    // The first request's node stopped before answering. If its job exists, answer from it;
    // else create it under the recorded id.
    if let Some(job) = services.store.get_job(&task_id, current.job_id).await? {
        let last = services.store.last_execution(job.job_id).await?;
        return Ok(Enqueued {
            task_id,
            job_id: job.job_id,
            execution_id: last.as_ref().map(|execution| execution.execution_id),
            queue_message_id: job
                .metadata
                .enqueued_id
                .clone()
                .or_else(|| last.map(|execution| execution.execution_id.to_string()))
                .unwrap_or_default(),
        });
    }
    let enqueued = enqueue(
        services.clone(),
        task_id,
        Some(current.job_id),
        request,
        request_ip,
    )
    .await?;
    current.answer = Some(IdempotentAnswer {
        execution_id: enqueued.execution_id,
        queue_message_id: enqueued.queue_message_id.clone(),
    });
    let _ = services.store.complete_idempotency_key(&current).await;
    Ok(enqueued)
}

/// Writes the job of a POST or PUT with its first execution; `true` when it replaced an
/// existing job. A PUT replaces the job only if nobody wrote it since it was read: after a lost
/// race (a firing, a retry, a stop) it is read and built again, at most
/// [`job_record::ATTEMPTS`] times (then 409). It keeps the runs already decided (a firing or
/// retry recorded before it) and stops the job's queued, not started, execution.
async fn write_job_request(
    services: &Services,
    task_id: &str,
    job_id: Option<Uuid>,
    request: &EnqueueRequest,
    request_ip: Option<String>,
    now: Timestamp,
) -> ApiResult<(NewJob, bool)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let existing = match job_id {
            Some(job_id) => services.store.get_job(task_id, job_id).await?,
            None => None,
        };
        let origin = Origin {
            task_id: task_id.to_string(),
            job_id: job_id.unwrap_or_else(Uuid::new_v4),
            request_ip: request_ip.clone(),
            created_at: existing.as_ref().map_or(now, |job| job.created_at),
            now,
        };
        let mut built = new_job(
            origin,
            request.clone(),
            services.settings.hard_timeout_seconds,
        );
        if let Some(existing) = &existing {
            built.job.version = existing.version;
            built.job.pending = existing.pending.clone();
            if let Some(last) = services.store.last_execution(existing.job_id).await? {
                if last.status == fastlane_proto::ExecutionStatus::Enqueued {
                    stop_execution(services, last.execution_id, REPLACED).await?;
                }
            }
        }
        match services
            .store
            .create_job(&built.job, built.execution.as_ref())
            .await
        {
            Ok(()) => return Ok((built, existing.is_some())),
            Err(StoreError::Conflict(reason))
                if existing.is_some() && attempts < job_record::ATTEMPTS =>
            {
                tracing::debug!(%task_id, %reason, "job changed while it was replaced, reading it again");
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Stops the job for good: one conditional write takes its schedule, its remaining retries and
/// its pending runs (firings and retries decided before this write), then those runs and the
/// job's unfinished executions are stopped. A firing or retry that read the job before this write loses its
/// own write and, reading again, finds nothing to do.
async fn stop_job(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<()>> {
    let outcome = change_job(services.store.as_ref(), &task_id, job_id, |job| {
        job.metadata.retry_count = job.metadata.retries + 1;
        job.schedule = None;
        job.scheduled = false;
        job.last_modified_at = Timestamp::now();
        Some(std::mem::take(&mut job.pending))
    })
    .await?;
    let (job, pending) = match outcome {
        Change::Missing => return Ok(None),
        Change::Unchanged(job) => (job, Vec::new()),
        Change::Written(job, pending) => (job, pending),
    };
    schedule_changed(&job);
    end_pending(&services, &job, &pending, STOPPED).await?;
    // Every unfinished execution among the newest, not only the last: an earlier firing still
    // queued must not start after the stop either. (Outputs cut to a byte: only statuses count.)
    for tail in services
        .store
        .list_execution_tails(job_id, STOP_SCANNED, 1)
        .await?
    {
        if !tail.execution.status.is_terminal() {
            stop_execution(&services, tail.execution.execution_id, STOPPED).await?;
        }
    }
    Ok(Some(()))
}

/// Pauses or resumes the job's schedule (a conditional write: a stop or PUT racing it wins or
/// is seen); a pause of a paused job, or a resume of a running one, writes nothing.
async fn pause_job(
    services: Services,
    task_id: String,
    job_id: Uuid,
    pause: bool,
) -> ApiResult<Option<()>> {
    let mut unscheduled = false;
    let outcome = change_job(services.store.as_ref(), &task_id, job_id, |job| {
        let now = Timestamp::now();
        let Some(schedule) = job.schedule.as_mut() else {
            unscheduled = true;
            return None;
        };
        unscheduled = false;
        if schedule.paused == pause {
            return None;
        }
        schedule.paused = pause;
        if pause {
            schedule.paused_at = Some(now);
            schedule.resumed_at = None;
        } else {
            schedule.resumed_at = Some(now);
        }
        job.last_modified_at = now;
        Some(())
    })
    .await?;
    match outcome {
        Change::Missing => Ok(None),
        Change::Unchanged(_) if unscheduled => Err(ApiError {
            kind: ErrorKind::Conflict,
            message: "The job has no schedule to pause or resume (only jobs with startAt, \
                      startIn or cron that have not fired their last time can be)."
                .into(),
        }),
        Change::Unchanged(_) => Ok(Some(())),
        Change::Written(job, ()) => {
            tracing::info!(%job_id, pause, "schedule paused or resumed");
            schedule_changed(&job);
            Ok(Some(()))
        }
    }
}

/// A page of the history; `None` when the filter names a job that is not in its task.
async fn find_executions(
    services: Services,
    filter: ExecutionFilter,
    page: Page,
) -> ApiResult<Option<Paged<Execution>>> {
    if let (Some(task_id), Some(job_id)) = (&filter.task_id, filter.job_id) {
        if services.store.get_job(task_id, job_id).await?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(services.store.find_executions(&filter, page).await?))
}

/// Stops the job (nothing of it runs, fires or retries afterwards), then removes its queue
/// messages and everything stored of it.
async fn delete_job(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<u64>> {
    let Some(job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    // Its messages still queued: each waiting execution's run, and the job's next firing or
    // retry. (A running execution's message is its JobActor's: stopped below, the actor ends
    // it and acknowledges it; the messages of finished executions are gone already.)
    let tails = services
        .store
        .list_execution_tails(job_id, STOP_SCANNED, 1)
        .await?;
    let (waiting, started): (Vec<_>, Vec<_>) = tails
        .iter()
        .map(|tail| &tail.execution)
        .partition(|execution| execution.status == fastlane_proto::ExecutionStatus::Enqueued);
    let mut messages: Vec<String> = waiting
        .iter()
        .map(|execution| execution.execution_id.to_string())
        .collect();
    messages.extend(job.metadata.enqueued_id.clone().filter(|id| {
        !started
            .iter()
            .any(|execution| execution.execution_id.to_string() == *id)
    }));
    if stop_job(services.clone(), task_id.clone(), job_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let executions = services.store.count_executions(job_id).await?;
    for id in messages {
        if let Err(error) = services.queue.ack(&id).await {
            tracing::warn!(%task_id, %job_id, message_id = %id, %error, "could not remove a deleted job's queue message");
        }
    }
    services.store.delete_job(job_id).await?;
    tracing::info!(%task_id, %job_id, executions, "job deleted");
    Ok(Some(executions))
}

/// Most jobs read at once while deleting a task.
const DELETE_BATCH: u64 = 100;
/// Jobs of a task deleted at once: their store writes share the group commit's flushes.
const DELETE_PARALLEL: usize = 8;
/// How long one `DELETE /tasks/{task}/` goes on deleting before it answers (under the
/// gateway's call timeout): a task of 100 000 jobs takes several calls, each answering what
/// is left, instead of one that times out.
const DELETE_TASK_BUDGET: std::time::Duration =
    std::time::Duration::from_millis(crate::CALL_TIMEOUT_MS / 2);

/// Deletes the jobs of a task, a batch at a time and several at once, for at most
/// [`DELETE_TASK_BUDGET`]; the task goes with its last job.
async fn delete_task(services: Services, task_id: String) -> ApiResult<Option<TaskDeletion>> {
    if services.store.get_task(&task_id).await?.is_none() {
        return Ok(None);
    }
    let started = tokio::time::Instant::now();
    let mut deleted = 0;
    loop {
        // Always the first page: the jobs of the round before are gone, so each round reads
        // at most DELETE_BATCH records, however many jobs the task has.
        let first = Page {
            number: 1,
            per_page: DELETE_BATCH,
        };
        let jobs = services.store.list_jobs(&task_id, first).await?;
        if jobs.items.is_empty() || started.elapsed() >= DELETE_TASK_BUDGET {
            return Ok(Some(TaskDeletion {
                deleted,
                left: jobs.total,
            }));
        }
        let mut progress = false;
        for chunk in jobs.items.chunks(DELETE_PARALLEL) {
            let mut running = tokio::task::JoinSet::new();
            for job in chunk {
                running.spawn(delete_job(services.clone(), task_id.clone(), job.job_id));
            }
            while let Some(done) = running.join_next().await {
                let done = done.map_err(|error| ApiError {
                    kind: ErrorKind::Internal,
                    message: error.to_string(),
                })?;
                if done?.is_some() {
                    deleted += 1;
                    progress = true;
                }
            }
        }
        // Only jobs left that cannot be deleted (gone meanwhile): never loop forever.
        if !progress {
            let left = services.store.list_jobs(&task_id, first).await?.total;
            return Ok(Some(TaskDeletion { deleted, left }));
        }
    }
}

async fn stop_one_execution(
    services: Services,
    task_id: String,
    job_id: Uuid,
    execution_id: Uuid,
) -> ApiResult<ExecutionLookup> {
    if services.store.get_job(&task_id, job_id).await?.is_none() {
        return Ok(ExecutionLookup::NoJob);
    }
    let Some(execution) = services
        .store
        .get_execution_tail(execution_id, None)
        .await?
        .filter(|found| found.execution.job_id == job_id)
    else {
        return Ok(ExecutionLookup::NoSuchExecution);
    };
    // No automatic retry after a stop: a retry deciding at this moment loses its write.
    let outcome = change_job(services.store.as_ref(), &task_id, job_id, |job| {
        job.metadata.retry_count = job.metadata.retries + 1;
        job.last_modified_at = Timestamp::now();
        Some(())
    })
    .await?;
    if matches!(outcome, Change::Missing) {
        return Ok(ExecutionLookup::NoJob);
    }
    stop_execution(&services, execution_id, STOPPED).await?;
    Ok(ExecutionLookup::Found(Box::new(execution)))
}

async fn retry(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<Enqueued>> {
    let Some(job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    refuse_unplaceable(&services, &task_id)?;
    let Some(last) = services.store.last_execution(job_id).await? else {
        return Err(ApiError {
            kind: ErrorKind::Invalid,
            message: "No execution yet to retry.".into(),
        });
    };
    if job
        .schedule
        .as_ref()
        .is_some_and(|schedule| schedule.cron.is_none())
    {
        return Err(ApiError {
            kind: ErrorKind::Invalid,
            message: "Can't retry a scheduled job.".into(),
        });
    }
    if !last.status.is_terminal() {
        stop_execution(
            &services,
            last.execution_id,
            "Job execution was stopped to be retried.",
        )
        .await?;
    }
    let now = Timestamp::now();
    let mut execution = Execution::new(&job, None, now);
    execution.image = last.image.clone();
    execution.command = last.command.clone();
    services.store.create_execution(&execution).await?;
    let message = QueueMessage::run(&execution);
    services
        .queue
        .push(&message, now)
        .await
        .map_err(|error| ApiError {
            kind: ErrorKind::Unavailable,
            message: error.to_string(),
        })?;
    wake_poller();
    let enqueued_id = message.id.clone();
    change_job(services.store.as_ref(), &task_id, job_id, |job| {
        job.metadata.enqueued_id = Some(enqueued_id.clone());
        job.last_modified_at = now;
        Some(())
    })
    .await?;
    Ok(Some(Enqueued {
        task_id,
        job_id,
        execution_id: Some(execution.execution_id),
        queue_message_id: message.id,
    }))
}

/// A request for a task no farm of `DOCKER_HOSTS` runs is refused before anything is written:
/// queued, it could never be placed.
fn refuse_unplaceable(services: &Services, task_id: &str) -> ApiResult<()> {
    if farm_for(&services.settings.farms, task_id).is_some() {
        return Ok(());
    }
    Err(ApiError {
        kind: ErrorKind::Invalid,
        message: crate::job::no_farm_message(task_id),
    })
}

/// A job asking for more resources than its farm's `limits` is refused before anything is
/// written.
fn refuse_beyond_limits(
    services: &Services,
    task_id: &str,
    request: &EnqueueRequest,
) -> ApiResult<()> {
    let Some(farm) = farm_for(&services.settings.farms, task_id) else {
        return Ok(());
    };
    match request.container.resources.beyond(&farm.limits) {
        None => Ok(()),
        Some(message) => Err(ApiError {
            kind: ErrorKind::Invalid,
            message,
        }),
    }
}

async fn get_task(services: Services, task_id: String, page: Page) -> ApiResult<Option<TaskView>> {
    let Some(task) = services.store.get_task(&task_id).await? else {
        return Ok(None);
    };
    let jobs = services.store.list_jobs(&task_id, page).await?;
    Ok(Some((task, jobs)))
}

async fn get_job(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<JobView>> {
    let Some(job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    let executions = services
        .store
        .list_execution_tails(
            job_id,
            JOB_EXECUTIONS_SHOWN,
            services.settings.job_details_output_max_bytes,
        )
        .await?;
    let execution_count = services.store.count_executions(job_id).await?;
    Ok(Some(JobView {
        job,
        executions,
        execution_count,
    }))
}

async fn find_execution(
    services: Services,
    task_id: String,
    job_id: Uuid,
    execution_id: Option<Uuid>,
    tails: bool,
) -> ApiResult<ExecutionLookup> {
    if services.store.get_job(&task_id, job_id).await?.is_none() {
        return Ok(ExecutionLookup::NoJob);
    }
    // Never the whole output: the ends when asked, else the record alone.
    let max_bytes = tails.then_some(services.settings.job_details_output_max_bytes);
    let execution_id = match execution_id {
        Some(execution_id) => execution_id,
        None => match services.store.last_execution(job_id).await? {
            Some(last) => last.execution_id,
            None => return Ok(ExecutionLookup::NoExecutions),
        },
    };
    let found = services
        .store
        .get_execution_tail(execution_id, max_bytes)
        .await?
        .filter(|found| found.execution.job_id == job_id && found.execution.task_id == task_id);
    Ok(match found {
        Some(found) => ExecutionLookup::Found(Box::new(found)),
        None if services.store.count_executions(job_id).await? == 0 => {
            ExecutionLookup::NoExecutions
        }
        None => ExecutionLookup::NoSuchExecution,
    })
}

async fn watch(
    services: Services,
    root: ActorRef<RootMessage>,
    task_id: String,
    job_id: Uuid,
    execution_id: Option<Uuid>,
) -> ApiResult<WatchOutcome> {
    let lookup = find_execution(services, task_id, job_id, execution_id, false).await?;
    let execution = match lookup {
        ExecutionLookup::NoJob => return Ok(WatchOutcome::NoJob),
        ExecutionLookup::NoExecutions | ExecutionLookup::NoSuchExecution => {
            return Ok(WatchOutcome::NoExecution)
        }
        ExecutionLookup::Found(found) => Box::new(found.execution),
    };
    if execution.status.is_terminal() {
        return Ok(WatchOutcome::Finished(execution));
    }
    let metadata = &execution.metadata;
    let (Some(host), Some(port), Some(container_id)) = (
        metadata.docker_host.clone(),
        metadata.docker_port,
        metadata.container_id.clone(),
    ) else {
        return Ok(WatchOutcome::Pending);
    };
    let unavailable = |message: String| ApiError {
        kind: ErrorKind::Unavailable,
        message,
    };
    let host = call_t!(
        root,
        |reply| RootMessage::HostFor { host, port, reply },
        crate::CALL_TIMEOUT_MS
    )
    .map_err(|error| unavailable(error.to_string()))?
    .ok_or_else(|| unavailable("the execution's host is not configured".into()))?;
    match call_t!(
        host,
        |reply| HostMessage::Watch {
            container_id,
            reply
        },
        crate::CALL_TIMEOUT_MS
    ) {
        Ok(Ok(watch)) => Ok(WatchOutcome::Live(watch)),
        // The container just ended (or went away): tell the watcher to come back for the result.
        Ok(Err(_)) => Ok(WatchOutcome::Pending),
        Err(error) => Err(unavailable(error.to_string())),
    }
}

async fn health(services: Services) -> Health {
    Health {
        store: described(services.store.ping().await),
        queue: described(services.queue.ping().await),
    }
}

/// A backend's answer for `/healthcheck` and `/status/`: the error as its message.
fn described<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, String> {
    result.map_err(|error| error.to_string())
}

async fn status(services: Services, root: ActorRef<RootMessage>) -> NodeStatus {
    let hosts =
        call_t!(root, RootMessage::HostStatuses, crate::CALL_TIMEOUT_MS).unwrap_or_default();
    let counts = described(services.store.counts().await);
    let scheduled_jobs = scheduled_jobs(&services).await;
    // The scheduler's index where one runs (api nodes); a worker has none and asks the store.
    let scheduled = match ActorRef::<SchedulerMessage>::where_is(SCHEDULER_NAME) {
        Some(scheduler) => {
            call_t!(scheduler, SchedulerMessage::Next, crate::CALL_TIMEOUT_MS).unwrap_or((0, None))
        }
        None => (
            counts
                .as_ref()
                .map_or(0, |counts| counts.scheduled as usize),
            scheduled_jobs
                .iter()
                .filter_map(|scheduled| scheduled.job.attention_at())
                .min(),
        ),
    };
    NodeStatus {
        scheduled_jobs,
        hosts,
        blacklist: services.blacklist.list().await.unwrap_or_default(),
        slots: services.slots.in_use().await.unwrap_or_default(),
        scheduled,
        queue: described(services.queue.stats().await),
        dead_letters: services
            .queue
            .dead_letters(DEAD_LETTERS_SHOWN)
            .await
            .unwrap_or_default(),
        counts,
    }
}

/// The soonest [`SCHEDULED_JOBS_SHOWN`] scheduled jobs with their execution counts, read
/// [`STATUS_READS_AT_ONCE`] at a time; a job that cannot be read is left out.
async fn scheduled_jobs(services: &Services) -> Vec<ScheduledJob> {
    let soonest = match services
        .store
        .scheduled_before(Timestamp(i64::MAX), SCHEDULED_JOBS_SHOWN)
        .await
    {
        Ok(soonest) => soonest,
        Err(error) => {
            tracing::warn!(%error, "status: could not list the scheduled jobs");
            return Vec::new();
        }
    };
    let mut shown = Vec::with_capacity(soonest.len());
    for chunk in soonest.chunks(STATUS_READS_AT_ONCE) {
        let mut reads = tokio::task::JoinSet::new();
        for (index, (job_id, task_id, _)) in chunk.iter().cloned().enumerate() {
            let store = services.store.clone();
            reads.spawn(async move {
                let job = store.get_job(&task_id, job_id).await.ok().flatten()?;
                let execution_count = store.count_executions(job_id).await.unwrap_or(0);
                Some((
                    index,
                    ScheduledJob {
                        job,
                        execution_count,
                    },
                ))
            });
        }
        let mut read: Vec<(usize, ScheduledJob)> =
            reads.join_all().await.into_iter().flatten().collect();
        read.sort_by_key(|(index, _)| *index);
        shown.extend(read.into_iter().map(|(_, job)| job));
    }
    shown
}
