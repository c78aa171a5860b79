//! Ending an execution: its container's result, early ends (stop, timeout, a stop made on
//! another node), failures before or instead of a result, the automatic retry, and cleaning up
//! after the store refused a write.

use super::{Ending, Finished, JobState, Step, StepError, STOP_GRACE, TIMEOUT_GRACE};
use crate::job_record::{change_job, complete_pending, Change};
use crate::messages::{HostMessage, JobMessage};
use crate::ports::{ContainerExit, RuntimeError};
use crate::Services;
use fastlane_proto::model::OutputTruncated;
use fastlane_proto::schedule::retry_execution_id;
use fastlane_proto::{ExecutionStatus, PendingRun, Timestamp};
use ractor::ActorRef;

impl JobState {
    /// A stop received by another node is written to the store only: end the run here too.
    pub(super) async fn check_store(&mut self) -> Step {
        let running = self
            .record
            .as_ref()
            .is_some_and(|(_, execution)| !execution.status.is_terminal());
        if !running || self.ending.is_some() {
            return Ok(false);
        }
        let id = self.delivery.message.execution_id;
        let Some(stored) = self.services.store.get_execution(id).await? else {
            return Ok(false);
        };
        if !stored.status.is_terminal() {
            return Ok(false);
        }
        let reason = stored
            .error
            .map(|error| String::from_utf8_lossy(&error).into_owned())
            .unwrap_or_else(|| format!("Job execution was {} by another node.", stored.status));
        self.end_early(Ending::Stopped(reason)).await
    }

    /// The SIGTERM → SIGKILL delay of a stop or a timeout: the job's `stopGracePeriodSeconds`
    /// (at most the configured maximum), else `default`.
    pub(super) fn grace(&self, default: std::time::Duration) -> std::time::Duration {
        let asked = self
            .record
            .as_ref()
            .and_then(|(job, _)| job.metadata.container.stop_grace_period_seconds);
        match asked {
            Some(seconds) => {
                std::time::Duration::from_secs(seconds).min(self.services.settings.max_stop_grace)
            }
            None => default,
        }
    }

    /// Ends a running execution early: the final status is stored at once, the container is
    /// stopped, and its output is added when it has exited.
    pub(super) async fn end_early(&mut self, ending: Ending) -> Step {
        let Some((_, execution)) = &self.record else {
            return Ok(false);
        };
        if execution.status.is_terminal() || self.ending.is_some() {
            return Ok(false);
        }
        let (status, message, grace) = match &ending {
            Ending::Stopped(message) => (
                ExecutionStatus::Stopped,
                message.clone(),
                self.grace(STOP_GRACE),
            ),
            Ending::TimedOut(message) => (
                ExecutionStatus::Timedout,
                message.clone(),
                self.grace(TIMEOUT_GRACE),
            ),
        };
        tracing::info!(execution_id = %self.delivery.message.execution_id, %status, "ending execution early");
        self.ending = Some(ending);
        let container_id = self.container_id();
        let execution = self.execution();
        execution.status = status;
        execution.finished_at = Some(Timestamp::now());
        execution.error = Some(message.into_bytes());
        // Unfenced: a stop or a timeout wins even if another runner claimed the execution
        // since (that runner's result is then refused by the terminal rule, and it cleans up).
        self.persist_with(None).await?;
        match (&self.host, container_id) {
            (Some(host), Some(container_id)) => {
                host.cast(HostMessage::StopContainer {
                    container_id,
                    grace,
                })?;
                Ok(false)
            }
            // Still pulling: `started` stops the container once it exists.
            (Some(_), None) => Ok(false),
            // Not placed yet (waiting for slots): nothing runs, the end is final now.
            (None, _) => {
                self.tell_notifier(false);
                self.ack().await
            }
        }
    }

    pub(super) async fn exited(&mut self, exit: ContainerExit) -> Step {
        let ending = self.ending.clone();
        let execution = self.execution();
        execution.exit_code = Some(exit.exit_code);
        execution.log = Some(exit.stdout);
        if exit.stdout_left_out > 0 || exit.stderr_left_out > 0 {
            execution.metadata.output_truncated = Some(OutputTruncated {
                stdout: exit.stdout_left_out,
                stderr: exit.stderr_left_out,
            });
        }
        let mut error = match &ending {
            Some(Ending::Stopped(message) | Ending::TimedOut(message)) => {
                format!("{message}\n").into_bytes()
            }
            None => Vec::new(),
        };
        // Killed by the kernel for going over its memory limit: a failure whatever the exit code
        // (the code is the kill's, 137), said in words.
        let out_of_memory = (exit.oom_killed || exit.killed_under_memory_limit) && ending.is_none();
        if out_of_memory && exit.oom_killed {
            error.extend_from_slice(
                b"The container ran out of memory and was killed (OOMKilled): raise \
                  resources.memoryMB or make the job use less.\n",
            );
        } else if out_of_memory {
            error.extend_from_slice(
                b"The container was killed (SIGKILL, exit code 137) under its memory limit, not \
                  by fastlane: most likely it ran out of memory (OOMKilled, although the engine \
                  did not report it): raise resources.memoryMB or make the job use less.\n",
            );
        }
        if let Some(state_error) = exit.state_error {
            error.extend_from_slice(state_error.as_bytes());
            if !exit.stderr.is_empty() {
                error.extend_from_slice(b"\n\nstderr:\n");
            }
        }
        error.extend_from_slice(&exit.stderr);
        execution.error = Some(error);
        if ending.is_none() {
            execution.status = if exit.exit_code == 0 && !out_of_memory {
                ExecutionStatus::Done
            } else {
                ExecutionStatus::Failed
            };
            execution.finished_at = Some(Timestamp::now());
        }
        let status = execution.status;
        self.persist().await?;
        tracing::info!(execution_id = %self.delivery.message.execution_id, exit_code = exit.exit_code, %status, "execution finished");
        self.remove_container();
        if status == ExecutionStatus::Failed {
            self.retry_if_allowed().await?;
        }
        self.tell_notifier(false);
        self.ack().await
    }

    pub(super) async fn failed(
        &mut self,
        myself: &ActorRef<JobMessage>,
        error: RuntimeError,
    ) -> Step {
        if let Some(ending) = self.ending.clone() {
            // Already stored as stopped/timed out; nothing more to collect.
            tracing::info!(?ending, %error, "container gone after an early end");
            self.remove_container();
            self.tell_notifier(false);
            return self.ack().await;
        }
        if error.is_host_fault() {
            tracing::warn!(execution_id = %self.delivery.message.execution_id, %error, "host fault, will retry");
            if self.container_id().is_none() && std::mem::take(&mut self.create_attempted) {
                // The create may have happened although the call failed: look for the container
                // there before placing the execution anywhere else (`lookup.rs`).
                return Box::pin(self.look_up(myself, true)).await;
            }
            let execution = self.execution();
            if execution.metadata.container_id.is_none() {
                // Never started: try another host of the farm now; when none is left, wait in
                // the queue. Neither consumes the job's retries.
                let failed = (
                    execution.metadata.docker_host.take(),
                    execution.metadata.docker_port.take(),
                );
                execution.status = ExecutionStatus::Enqueued;
                self.persist().await?;
                if let (Some(host), Some(port)) = failed {
                    if let Some(endpoint) = self
                        .hosts
                        .iter()
                        .map(|(e, _)| e)
                        .find(|e| e.host() == host && e.port() == port)
                    {
                        self.failed_hosts.push(endpoint.clone());
                    }
                }
                return self.start(myself).await;
            }
            return self.release().await;
        }
        let message = match &error {
            RuntimeError::NotFound(_) => {
                "Job failed since container could not be found in docker host.".to_string()
            }
            other => other.to_string(),
        };
        let operation = match &error {
            RuntimeError::Image(_) => "Downloading Image",
            _ if self.container_id().is_some() => "Monitoring Job",
            _ => "Running Container",
        };
        self.report(operation, &message);
        self.finish_without_container(ExecutionStatus::Failed, message)
            .await
    }

    /// Ends the execution with `status` and `message` before or instead of a container result.
    pub(super) async fn finish_without_container(
        &mut self,
        status: ExecutionStatus,
        message: String,
    ) -> Step {
        tracing::warn!(execution_id = %self.delivery.message.execution_id, %status, %message, "execution ended without a result");
        let execution = self.execution();
        execution.status = status;
        execution.finished_at = Some(Timestamp::now());
        execution.error = Some(message.into_bytes());
        self.persist().await?;
        self.remove_container();
        self.tell_notifier(false);
        self.ack().await
    }

    /// Creates the automatic retry of this failed execution if the job has retries left. The
    /// retry is decided by a conditional write of the job (retries counted, the retry recorded
    /// as pending: `job_record`), then created and queued; a stop written meanwhile makes the
    /// write fail, and the job read again has no retries left. The retry's id is derived from
    /// this execution's, so doing this twice (after a crash) creates one retry and counts it
    /// once.
    pub(super) async fn retry_if_allowed(&mut self) -> Result<(), StepError> {
        let Some((job, execution)) = &self.record else {
            return Ok(());
        };
        let (task_id, job_id) = (job.task_id.clone(), job.job_id);
        let failed_id = execution.execution_id;
        let (image, command) = (execution.image.clone(), execution.command.clone());
        let retry_id = retry_execution_id(failed_id);
        let store = self.services.store.as_ref();
        if store.get_execution(retry_id).await?.is_some() {
            // Created before a crash: at most its pending mark is left to clear.
            if let Some(job) = store.get_job(&task_id, job_id).await? {
                complete_pending(&self.services, job).await?;
            }
            return Ok(());
        }
        let default_backoff = self.services.settings.default_backoff;
        let outcome = change_job(store, &task_id, job_id, |job| {
            if job.pending.iter().any(|run| run.execution_id == retry_id)
                || job.metadata.retry_count >= job.metadata.retries
            {
                return None;
            }
            let now = Timestamp::now();
            let retry_number = job.metadata.retry_count + 1;
            let delay = job
                .metadata
                .backoff
                .unwrap_or(default_backoff)
                .delay(retry_number);
            job.metadata.retry_count = retry_number;
            job.metadata.enqueued_id = Some(retry_id.to_string());
            job.last_modified_at = now;
            job.pending.push(PendingRun {
                execution_id: retry_id,
                due: Timestamp(now.0 + delay.as_micros() as i64),
                scheduled_at: None,
                retry_of: Some(failed_id),
                image: image.clone(),
                command: command.clone(),
                recorded_at: now,
            });
            Some((retry_number, delay))
        })
        .await?;
        let job = match outcome {
            Change::Missing => return Ok(()),
            Change::Unchanged(job) => job,
            Change::Written(job, (retry_number, delay)) => {
                tracing::info!(%job_id, retry = retry_number, delay_ms = delay.as_millis() as u64, "retry scheduled");
                job
            }
        };
        complete_pending(&self.services, job).await?;
        Ok(())
    }

    /// After a refused write: acknowledge (whoever ended the execution owns it now), remove
    /// any container, and leave, unless a run is still in flight (`self.host` is set only once
    /// `Run` was sent): then `abandoned_step` waits for it and removes what it created.
    pub(super) fn abandon_now(&mut self) -> Finished {
        background_ack(&self.services, &self.delivery.message.id);
        if self.container_id().is_some() {
            self.remove_container();
            return true;
        }
        self.host.is_none()
    }

    pub(super) async fn abandoned_step(&mut self, message: JobMessage) -> Step {
        match message {
            JobMessage::Started(started) => {
                self.execution().metadata.container_id = Some(started.container_id);
                self.remove_container();
                Ok(true)
            }
            JobMessage::Exited(_) | JobMessage::Failed(_) => {
                self.remove_container();
                Ok(true)
            }
            JobMessage::Found(found) => {
                // A lookup was in flight: remove what it found if it is ours.
                let (deployment_id, execution_id) = (
                    &self.services.settings.deployment_id,
                    self.delivery.message.execution_id.to_string(),
                );
                if let Ok(Some(container)) = found {
                    if container.is_owned_by(deployment_id, &execution_id) {
                        self.execution().metadata.container_id = Some(container.container_id);
                        self.remove_container();
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Acknowledges a message in the background (used on paths that cannot wait).
pub(super) fn background_ack(services: &Services, id: &str) {
    let queue = services.queue.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(error) = queue.ack(&id).await {
            tracing::warn!(message_id = %id, %error, "could not acknowledge message");
        }
    });
}
