//! Stopping an execution, wherever it is in its life. Used by the ApiActor (stop and retry
//! routes) and the SchedulerActor (`overlap: replace`); ending one no JobActor runs (also used
//! by the dead-letter sweep); and the context of an error report about an execution.
//!
//! An execution run by a JobActor on this node is stopped by that actor (it stops the container
//! and stores the result as `stopped`). One that no JobActor owns yet is marked `stopped` in the
//! store and its queue message removed; should a JobActor take it at the same moment, its next
//! write is refused (a terminal status is final) and it cleans up.

use crate::messages::{job_actor_name, tell_notifier, JobMessage, NotifierMessage};
use crate::ports::{QueueMessage, StoreError};
use crate::Services;
use fastlane_proto::{Execution, ExecutionStatus, Timestamp};
use ractor::ActorRef;
use uuid::Uuid;

/// Stops execution `execution_id` with `reason` (stored in its `error`). A finished execution
/// is left as it is.
pub async fn stop_execution(
    services: &Services,
    execution_id: Uuid,
    reason: &str,
) -> Result<(), StoreError> {
    if let Some(actor) = ActorRef::<JobMessage>::where_is(job_actor_name(execution_id)) {
        let _ = actor.cast(JobMessage::Stop {
            reason: reason.to_string(),
        });
        return Ok(());
    }
    let Some(mut execution) = services.store.get_execution(execution_id).await? else {
        return Ok(());
    };
    if execution.status.is_terminal() {
        return Ok(());
    }
    end_unowned(services, &mut execution, ExecutionStatus::Stopped, reason).await?;
    // A message not yet leased goes; a leased one is acknowledged by its JobActor, which finds
    // the execution stopped (and removes any container it had started).
    if let Err(error) = services.queue.ack(&execution_id.to_string()).await {
        tracing::warn!(%execution_id, %error, "could not remove the queue message of a stopped execution");
    }
    Ok(())
}

/// Ends `execution`, which no JobActor runs, as `status` with `reason` in its `error`, with the
/// notifications that owes recorded in the same write (and the notifier woken). `false` when
/// the store refused because it had ended meanwhile (a terminal status is final).
pub async fn end_unowned(
    services: &Services,
    execution: &mut Execution,
    status: ExecutionStatus,
    reason: &str,
) -> Result<bool, StoreError> {
    let now = Timestamp::now();
    execution.status = status;
    execution.finished_at = Some(now);
    execution.last_modified_at = now;
    execution.error = Some(reason.as_bytes().to_vec());
    let job = services
        .store
        .get_job(&execution.task_id, execution.job_id)
        .await?;
    execution.outbox = job
        .map(|job| fastlane_proto::outbox::owed(&job, execution, now))
        .unwrap_or_default();
    match services.store.update_execution(execution, None).await {
        Ok(()) => {
            tell_notifier(NotifierMessage::Ended {
                task_id: execution.task_id.clone(),
                job_id: execution.job_id,
                execution_id: execution.execution_id,
            });
            Ok(true)
        }
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The context of an error report about the execution of `message`: the operation, the ids,
/// and the image and command when the execution is known.
pub(crate) fn report_context(
    operation: &str,
    message: &QueueMessage,
    execution: Option<&Execution>,
) -> std::collections::BTreeMap<String, String> {
    let mut extra = std::collections::BTreeMap::from([
        ("operation".to_string(), operation.to_string()),
        ("task_id".to_string(), message.task_id.clone()),
        ("job_id".to_string(), message.job_id.to_string()),
        ("execution_id".to_string(), message.execution_id.to_string()),
    ]);
    if let Some(execution) = execution {
        extra.insert("image".into(), execution.image.clone());
        extra.insert("command".into(), execution.command.clone());
    }
    extra
}
