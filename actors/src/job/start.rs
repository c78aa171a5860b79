//! Starting an execution: the first look at its record, waiting for slots, placement on a host,
//! and the container's start (or re-attaching to one that runs already).

use super::spec::{container_spec, slot_pools};
use super::{Finished, JobState, Step, SLOT_REQUEST_INTERVAL, STOP_GRACE, STORE_CHECK_INTERVAL};
use crate::messages::{request_slots, HostMessage, JobMessage};
use crate::placement::{least_loaded, HostLoad};
use crate::ports::StartedContainer;
use fastlane_proto::farm::{farm_for, DockerEndpoint};
use fastlane_proto::{ExecutionStatus, Timestamp};
use ractor::{call_t, ActorRef};
use std::time::Duration;

/// Why an execution of `task_id` cannot run: no farm of `DOCKER_HOSTS` matches its task.
pub(crate) fn no_farm_message(task_id: &str) -> String {
    format!("No farm of DOCKER_HOSTS matches task '{task_id}': it cannot run here.")
}

impl JobState {
    pub(super) async fn begin(&mut self, myself: &ActorRef<JobMessage>) -> Step {
        let Some((job, execution)) = &self.record else {
            tracing::warn!(message_id = %self.delivery.message.id, "queue message refers to no execution, dead-lettering it");
            self.services
                .queue
                .dead_letter(
                    &self.delivery.message.id,
                    "the message refers to no stored execution",
                )
                .await?;
            return Ok(true);
        };
        let recorded_host = (
            execution.metadata.docker_host.clone(),
            execution.metadata.docker_port,
            execution.metadata.container_id.clone(),
        );
        if let (Some(host), Some(port)) = (&recorded_host.0, recorded_host.1) {
            self.host = self.host_for(host, port);
        }
        if execution.status.is_terminal() {
            // Finished (or stopped) before this delivery: make sure nothing is left behind.
            if execution.status == ExecutionStatus::Failed {
                self.retry_if_allowed().await?;
            }
            self.remove_container();
            return self.ack().await;
        }
        if execution.status == ExecutionStatus::Enqueued {
            if let Some(expiration) = job.metadata.expiration {
                let now = Timestamp::now();
                if expiration < now.unix_seconds() {
                    let message = format!(
                        "Job was supposed to be done before {}, but was started at {}.",
                        Timestamp::from_unix_seconds(expiration).iso(),
                        Timestamp::from_unix_seconds(now.unix_seconds()).iso()
                    );
                    return self
                        .finish_without_container(ExecutionStatus::Expired, message)
                        .await;
                }
            }
        }
        if let (Some(host), Some(port), Some(container_id)) = recorded_host {
            // Started before a restart: collect it where it runs.
            let Some(actor) = self.host.clone() else {
                return self
                    .finish_without_container(
                        ExecutionStatus::Failed,
                        format!(
                            "Docker host {host}:{port} of this execution is no longer configured."
                        ),
                    )
                    .await;
            };
            tracing::info!(%container_id, "re-attaching to running container");
            // It runs whatever the limits say now; count it.
            let (job, _) = self.record.as_ref().expect("record checked");
            let pools = slot_pools(&self.services.settings, job);
            self.services
                .slots
                .acquire(
                    &self.delivery.message.id,
                    &pools,
                    self.services.settings.lease_duration,
                )
                .await?;
            actor.cast(HostMessage::Attach {
                container_id,
                wait_limit: self.wait_limit(),
                job: myself.clone(),
            })?;
            self.arm_timeout(myself);
            return Ok(false);
        }
        let task_id = job.task_id.clone();
        if farm_for(&self.services.settings.farms, &task_id).is_none() {
            // Queued under another configuration (the node restarted with other farms): it
            // can never be placed here. Released, it would be leased again forever; failed,
            // its `fails` and `finishes` lists are told.
            return self
                .finish_without_container(ExecutionStatus::Failed, no_farm_message(&task_id))
                .await;
        }
        self.waiting_for_slots = true;
        Ok(self.ask_for_slots(myself))
    }

    /// Asks the gate for the farm and task slots, and again every 5 s while waiting.
    pub(super) fn ask_for_slots(&mut self, myself: &ActorRef<JobMessage>) -> Finished {
        if !self.waiting_for_slots {
            return false;
        }
        let Some((job, _)) = &self.record else {
            return false;
        };
        let pools = slot_pools(&self.services.settings, job);
        if !request_slots(&self.delivery.message.id, pools, myself.clone()) {
            tracing::debug!("gate not available, asking again");
        }
        myself.send_after(SLOT_REQUEST_INTERVAL, || JobMessage::AskSlotsAgain);
        false
    }

    pub(super) async fn start(&mut self, myself: &ActorRef<JobMessage>) -> Step {
        self.host = None;
        if self.container_may_exist() {
            // Redelivered after a crash between create and record: look there first.
            return Box::pin(self.look_up(myself, false)).await;
        }
        let (job, execution) = self.record.as_ref().expect("record checked in begin");
        let settings = &self.services.settings;
        let defaults = super::spec::farm_defaults(settings, &job.task_id);
        let spec = match container_spec(job, execution, &settings.deployment_id, defaults) {
            Ok(spec) => spec,
            Err(message) => {
                return self
                    .finish_without_container(ExecutionStatus::Failed, message)
                    .await
            }
        };
        let Some((endpoint, host)) = self.place(&job.task_id).await else {
            tracing::info!(task_id = %job.task_id, "no docker host available, will retry");
            return self.release().await;
        };
        let execution = self.execution();
        execution.status = ExecutionStatus::Pulling;
        execution.metadata.docker_host = Some(endpoint.host().to_string());
        execution.metadata.docker_port = Some(endpoint.port());
        self.persist().await?;
        host.cast(HostMessage::Run {
            spec: Box::new(spec),
            wait_limit: self.wait_limit(),
            job: myself.clone(),
        })?;
        self.host = Some(host);
        Ok(false)
    }

    /// The least loaded available host of the task's farm that is not blacklisted and has not
    /// failed this execution already.
    pub(super) async fn place(
        &self,
        task_id: &str,
    ) -> Option<(DockerEndpoint, ActorRef<HostMessage>)> {
        let farm = farm_for(&self.services.settings.farms, task_id)?;
        let blacklist = match self.services.blacklist.list().await {
            Ok(blacklist) => blacklist,
            Err(error) => {
                tracing::warn!(%error, "could not read the blacklist");
                return None;
            }
        };
        let candidates: Vec<&(DockerEndpoint, ActorRef<HostMessage>)> = self
            .hosts
            .iter()
            .filter(|(endpoint, _)| farm.hosts.contains(endpoint))
            .filter(|(endpoint, _)| !blacklist.contains(&endpoint.to_string()))
            .filter(|(endpoint, _)| !self.failed_hosts.contains(endpoint))
            .collect();
        let mut loads = Vec::with_capacity(candidates.len());
        for (_, actor) in &candidates {
            let load = call_t!(actor, HostMessage::Load, 2_000).unwrap_or(HostLoad {
                available: false,
                running: 0,
            });
            loads.push(load);
        }
        let preferred = self.preferred_host.as_ref().and_then(|preferred| {
            candidates
                .iter()
                .zip(&loads)
                .position(|((endpoint, _), load)| endpoint == preferred && load.available)
        });
        preferred
            .or_else(|| least_loaded(&loads))
            .map(|index| candidates[index].clone())
    }

    pub(super) fn image_ready(&mut self, warnings: Vec<String>) -> Finished {
        self.create_attempted = true;
        self.execution().metadata.warnings.extend(warnings);
        false
    }

    /// Sends `Timeout` when the job's timeout (from the container's start) passes.
    pub(super) fn arm_timeout(&mut self, myself: &ActorRef<JobMessage>) {
        let Some((job, execution)) = &self.record else {
            return;
        };
        let limit = Duration::from_secs(job.metadata.timeout);
        let started = execution.started_at.unwrap_or_else(Timestamp::now);
        let elapsed = Duration::from_micros((Timestamp::now().0 - started.0).max(0) as u64);
        myself.send_after(limit.saturating_sub(elapsed), || JobMessage::Timeout);
        myself.send_interval(STORE_CHECK_INTERVAL, || JobMessage::CheckStore);
    }

    pub(super) async fn started(
        &mut self,
        myself: &ActorRef<JobMessage>,
        started: StartedContainer,
    ) -> Step {
        let ending = self.ending.is_some();
        let execution = self.execution();
        // An execution stopped or timed out meanwhile keeps its final status: its output is
        // added to it when the container has exited.
        if !ending {
            execution.status = ExecutionStatus::Running;
        }
        execution.started_at = Some(Timestamp::now());
        execution.metadata.container_id = Some(started.container_id.clone());
        if !ending {
            self.persist().await?;
            self.arm_timeout(myself);
            self.tell_notifier(true);
        } else if let Some(host) = &self.host {
            // Stopped or timed out while it was being created: stop it now.
            host.cast(HostMessage::StopContainer {
                container_id: started.container_id,
                grace: self.grace(STOP_GRACE),
            })?;
        }
        Ok(false)
    }
}
