//! One container per execution, ever: before an execution whose container may exist somewhere
//! is placed anywhere, its container is looked up by name on the host recorded for it. That is
//! needed after a start that failed on a host fault (a create that timed out may have happened
//! anyway), and on a delivery that finds a host recorded but no container id (a JobActor died
//! between creating the container and recording it).
//!
//! - Found, with this deployment's and this execution's labels: taken over (started if it never
//!   started), never created again.
//! - Found, with other labels: someone else's container; the execution fails, the container is
//!   left alone.
//! - Absent: placed again; on another host after a fault, else preferably on that same host (a
//!   create sent by a runner that died may still land there, and only there would Docker refuse
//!   a second container of the name).
//! - The host does not answer: the message is released with a delay and the lookup repeated on
//!   the next delivery, for at most `CONTAINER_LOOKUP_TIMEOUT_SECONDS` after the execution's
//!   last write. Past that the execution fails (it may still be running on that host, so running
//!   it elsewhere could run it twice; the job's own retries decide whether it runs again, and
//!   the reaper removes the old container once the host is back).

use super::spec::{container_name, container_spec};
use super::{JobState, Step};
use crate::messages::{HostMessage, JobMessage};
use crate::ports::{foreign_container_error, FoundContainer, RuntimeError, DEPLOYMENT_LABEL};
use fastlane_proto::{ExecutionStatus, Timestamp};
use ractor::ActorRef;
use std::time::Duration;

/// Lookups one delivery makes before giving the message back (a host whose starts keep timing
/// out while the container stays created must not keep a JobActor busy forever).
const MAX_LOOKUPS_PER_DELIVERY: u32 = 3;

impl JobState {
    /// Whether the execution records a host but no container: its container may exist there.
    pub(super) fn container_may_exist(&self) -> bool {
        self.record.as_ref().is_some_and(|(_, execution)| {
            execution.status == ExecutionStatus::Pulling
                && execution.metadata.docker_host.is_some()
                && execution.metadata.container_id.is_none()
        })
    }

    /// Asks the recorded host for the execution's container; `after_fault` when its start just
    /// failed there (the host is then avoided if the container is not there).
    pub(super) async fn look_up(
        &mut self,
        myself: &ActorRef<JobMessage>,
        after_fault: bool,
    ) -> Step {
        let (_, execution) = self.record.as_ref().expect("record checked in begin");
        let host = execution.metadata.docker_host.clone().unwrap_or_default();
        let port = execution.metadata.docker_port.unwrap_or_default();
        let Some(actor) = self.host_for(&host, port) else {
            // A host removed from the configuration cannot be asked (nor reaped): place anew.
            tracing::warn!(%host, port, "recorded docker host no longer configured, placing again");
            return self.place_again(myself, false).await;
        };
        if self.lookups >= MAX_LOOKUPS_PER_DELIVERY {
            tracing::warn!(%host, port, "container lookups keep failing, giving the message back");
            return self.release().await;
        }
        self.lookups += 1;
        self.lookup_after_fault = after_fault;
        let name = container_name(self.delivery.message.execution_id);
        tracing::info!(%host, port, %name, "looking for the container on its recorded host");
        actor.cast(HostMessage::Find {
            name,
            job: myself.clone(),
        })?;
        self.host = Some(actor);
        Ok(false)
    }

    /// The recorded host's answer.
    pub(super) async fn found(
        &mut self,
        myself: &ActorRef<JobMessage>,
        result: Result<Option<FoundContainer>, RuntimeError>,
    ) -> Step {
        let execution_id = self.delivery.message.execution_id.to_string();
        let deployment_id = self.services.settings.deployment_id.clone();
        if self.ending.is_some() {
            // Stopped while looking: the final status is stored; remove what is ours.
            if let (Ok(Some(container)), Some(host)) = (&result, &self.host) {
                if container.is_owned_by(&deployment_id, &execution_id) {
                    host.cast(HostMessage::Remove {
                        container_id: container.container_id.clone(),
                    })?;
                }
            }
            self.tell_notifier(false);
            return self.ack().await;
        }
        match result {
            Ok(Some(container)) if container.is_owned_by(&deployment_id, &execution_id) => {
                tracing::info!(container_id = %container.container_id, "taking over the container found by name");
                let (job, execution) = self.record.as_ref().expect("record checked in begin");
                let defaults = super::spec::farm_defaults(&self.services.settings, &job.task_id);
                let spec = match container_spec(job, execution, &deployment_id, defaults) {
                    Ok(spec) => spec,
                    Err(message) => {
                        return self
                            .finish_without_container(ExecutionStatus::Failed, message)
                            .await
                    }
                };
                // The runtime's start takes the existing container over (and starts it if it
                // never started): nothing new is created.
                let host = self.host.clone().expect("set by look_up");
                host.cast(HostMessage::Run {
                    spec: Box::new(spec),
                    wait_limit: self.wait_limit(),
                    job: myself.clone(),
                })?;
                Ok(false)
            }
            Ok(Some(container)) => {
                let endpoint = self.recorded_endpoint();
                let message = foreign_container_error(
                    &container.name,
                    &endpoint,
                    container.labels.get(DEPLOYMENT_LABEL).map(String::as_str),
                );
                self.report("Running Container", &message);
                // No container id is recorded, so nothing is removed.
                self.finish_without_container(ExecutionStatus::Failed, message)
                    .await
            }
            Ok(None) => {
                let after_fault = self.lookup_after_fault;
                self.place_again(myself, after_fault).await
            }
            Err(error) => self.host_silent(error).await,
        }
    }

    /// The container is certainly not on the recorded host: forget the host and place the
    /// execution as if it had never been (avoiding that host when it just failed).
    async fn place_again(&mut self, myself: &ActorRef<JobMessage>, avoid: bool) -> Step {
        let execution = self.execution();
        let failed = (
            execution.metadata.docker_host.take(),
            execution.metadata.docker_port.take(),
        );
        execution.status = ExecutionStatus::Enqueued;
        self.persist().await?;
        if let (Some(host), Some(port)) = (failed.0, failed.1) {
            if let Some(endpoint) = self
                .hosts
                .iter()
                .map(|(endpoint, _)| endpoint)
                .find(|endpoint| endpoint.host() == host && endpoint.port() == port)
            {
                if avoid {
                    self.failed_hosts.push(endpoint.clone());
                } else {
                    // Absent now, but a create sent by a runner that died may still be on its
                    // way there: only that host would refuse a second container of the name.
                    self.preferred_host = Some(endpoint.clone());
                }
            }
        }
        self.start(myself).await
    }

    /// The recorded host did not answer: wait for it (the container may run there), up to the
    /// configured limit; past it, fail the execution rather than risk a second container.
    async fn host_silent(&mut self, error: RuntimeError) -> Step {
        let (_, execution) = self.record.as_ref().expect("record checked in begin");
        let waited_ms = (Timestamp::now().unix_millis() - execution.last_modified_at.unix_millis())
            .max(0) as u64;
        let limit = self.services.settings.container_lookup_limit;
        if Duration::from_millis(waited_ms) < limit {
            tracing::warn!(%error, waited_ms, "recorded docker host does not answer, waiting for it");
            return self.release().await;
        }
        let message = format!(
            "Docker host {} did not answer for {} seconds while this execution's container may \
             exist there ({error}); it was not started elsewhere, so that it cannot run twice.",
            self.recorded_endpoint(),
            limit.as_secs()
        );
        self.report("Running Container", &message);
        self.finish_without_container(ExecutionStatus::Failed, message)
            .await
    }

    /// `host:port` recorded on the execution.
    fn recorded_endpoint(&self) -> String {
        let execution = self.record.as_ref().map(|(_, execution)| execution);
        let host = execution.and_then(|execution| execution.metadata.docker_host.clone());
        let port = execution.and_then(|execution| execution.metadata.docker_port);
        format!("{}:{}", host.unwrap_or_default(), port.unwrap_or_default())
    }
}
