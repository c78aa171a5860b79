//! The container reaper: removes this deployment's containers that no unfinished execution
//! owns, so that nothing a crash, a timed-out create or a lost host left behind runs or lingers
//! forever. Run by the RootActor in a task of its own every `reaper_interval`.
//!
//! Each round lists, on every host, the containers labelled with this deployment's id (at most
//! [`CONTAINERS_PER_HOST`], the newest first) and removes (forcibly: SIGKILL) each one older
//! than `reaper_grace` whose execution
//! - is not in the store,
//! - ended more than `reaper_grace` ago (its JobActor had the time to collect and remove it), or
//! - is unfinished but records another host or another container (a duplicate).
//!
//! The grace keeps a container just created, whose `running` write is in flight, and an ended
//! execution's container whose output is being collected. Containers of other deployments, and
//! unlabelled ones, are never touched. A host that does not answer is skipped until next round.

use crate::ports::{ContainerRuntime, FoundContainer, DEPLOYMENT_LABEL, EXECUTION_LABEL};
use crate::Services;
use fastlane_proto::farm::DockerEndpoint;
use fastlane_proto::{Execution, Timestamp};
use std::sync::Arc;
use uuid::Uuid;

/// Containers looked at per host and round: a round's work is bounded however many there are.
pub(crate) const CONTAINERS_PER_HOST: usize = 500;

/// Reaps every `reaper_interval` until aborted; returns at once when reaping is off.
pub(crate) async fn run(services: Services, runtimes: Vec<Arc<dyn ContainerRuntime>>) {
    let Some(interval) = services.settings.reaper_interval else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        for runtime in &runtimes {
            match reap_host(&services, runtime.as_ref()).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(host = %runtime.endpoint(), removed, "reaped orphaned containers")
                }
                Err(error) => {
                    tracing::debug!(host = %runtime.endpoint(), %error, "reaper skipped a host")
                }
            }
        }
    }
}

/// One round on one host; returns how many containers were removed.
pub(crate) async fn reap_host(
    services: &Services,
    runtime: &dyn ContainerRuntime,
) -> Result<usize, String> {
    let settings = &services.settings;
    let containers = runtime
        .list_labelled(
            DEPLOYMENT_LABEL,
            &settings.deployment_id,
            CONTAINERS_PER_HOST,
        )
        .await
        .map_err(|error| error.to_string())?;
    let now = Timestamp::now().unix_seconds();
    let grace = settings.reaper_grace.as_secs() as i64;
    let mut removed = 0;
    for container in containers {
        if container.created_at > now - grace {
            continue;
        }
        let owner = match execution_of(&container) {
            Some(id) => match services.store.get_execution(id).await {
                Ok(owner) => owner,
                // Not knowing is no reason to remove: next round.
                Err(error) => return Err(error.to_string()),
            },
            None => None,
        };
        if !is_orphan(&container, owner.as_ref(), runtime.endpoint(), now - grace) {
            continue;
        }
        tracing::warn!(
            host = %runtime.endpoint(),
            container_id = %container.container_id,
            name = %container.name,
            "removing a container no unfinished execution owns"
        );
        match runtime.remove(&container.container_id).await {
            Ok(()) => removed += 1,
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(removed)
}

fn execution_of(container: &FoundContainer) -> Option<Uuid> {
    container.labels.get(EXECUTION_LABEL)?.parse().ok()
}

/// Whether `container` (older than the grace) belongs to no unfinished execution; `settled` is
/// the time (Unix seconds) before which an execution's end is old enough.
fn is_orphan(
    container: &FoundContainer,
    owner: Option<&Execution>,
    endpoint: &DockerEndpoint,
    settled: i64,
) -> bool {
    let Some(execution) = owner else {
        return true;
    };
    if execution.status.is_terminal() {
        let ended = execution
            .finished_at
            .unwrap_or(execution.last_modified_at)
            .unix_seconds();
        return ended <= settled;
    }
    let same_host = execution.metadata.docker_host.as_deref() == Some(endpoint.host())
        && execution.metadata.docker_port == Some(endpoint.port());
    let other_container = execution
        .metadata
        .container_id
        .as_ref()
        .is_some_and(|id| *id != container.container_id);
    !same_host || other_container
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastlane_proto::{ExecutionStatus, Job, JobMetadata};
    use std::collections::BTreeMap;

    fn endpoint(host: &str) -> DockerEndpoint {
        DockerEndpoint::Tcp {
            host: host.into(),
            port: 2375,
            tls: false,
        }
    }

    fn execution() -> Execution {
        let now = Timestamp::now();
        let job = Job {
            task_id: "t".into(),
            job_id: Uuid::new_v4(),
            image: "alpine".into(),
            command: "true".into(),
            request_ip: None,
            metadata: JobMetadata {
                retries: 0,
                retry_count: 0,
                emails: serde_json::Value::Null,
                webhooks: serde_json::Value::Null,
                expiration: None,
                timeout: 60,
                envs: BTreeMap::new(),
                additional_dns_entries: Vec::new(),
                custom: None,
                enqueued_id: None,
                cron: None,
                max_concurrent: None,
                container: Default::default(),
                backoff: None,
            },
            scheduled: false,
            schedule: None,
            created_at: now,
            last_modified_at: now,
            version: 0,
            pending: Vec::new(),
        };
        Execution::new(&job, None, now)
    }

    fn container(id: &str) -> FoundContainer {
        FoundContainer {
            container_id: id.into(),
            name: "fastlane-job-x".into(),
            labels: BTreeMap::new(),
            created_at: 0,
        }
    }

    /// Which containers the reaper removes: none of a running execution's own container, or of
    /// one just ended (its JobActor may be collecting it); those of missing executions, of
    /// executions ended before the grace, and duplicates on another host or with another id.
    #[test]
    fn orphans() {
        let now = Timestamp::now().unix_seconds();
        let settled = now - 60;
        let host_a = endpoint("host-a");
        let mut running = execution();
        running.status = ExecutionStatus::Running;
        running.metadata.docker_host = Some("host-a".into());
        running.metadata.docker_port = Some(2375);
        running.metadata.container_id = Some("c1".into());
        assert!(is_orphan(&container("c1"), None, &host_a, settled));
        assert!(!is_orphan(
            &container("c1"),
            Some(&running),
            &host_a,
            settled
        ));
        assert!(is_orphan(
            &container("c2"),
            Some(&running),
            &host_a,
            settled
        ));
        assert!(is_orphan(
            &container("c1"),
            Some(&running),
            &endpoint("host-b"),
            settled
        ));
        let mut pulling = running.clone();
        pulling.status = ExecutionStatus::Pulling;
        pulling.metadata.container_id = None;
        assert!(!is_orphan(
            &container("c9"),
            Some(&pulling),
            &host_a,
            settled
        ));
        pulling.metadata.docker_host = None;
        assert!(is_orphan(
            &container("c9"),
            Some(&pulling),
            &host_a,
            settled
        ));
        let mut ended = running.clone();
        ended.status = ExecutionStatus::Done;
        ended.finished_at = Some(Timestamp::now());
        assert!(!is_orphan(&container("c1"), Some(&ended), &host_a, settled));
        ended.finished_at = Some(Timestamp::from_unix_seconds(now - 61));
        assert!(is_orphan(&container("c1"), Some(&ended), &host_a, settled));
    }
}
