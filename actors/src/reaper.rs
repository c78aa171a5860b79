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
        if !is_orphan(&container, owner.as_ref(), runtime, now - grace) {
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
    runtime: &dyn ContainerRuntime,
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
    let endpoint = runtime.endpoint();
    let same_host = execution.metadata.docker_host.as_deref() == Some(endpoint.host())
        && execution.metadata.docker_port == Some(endpoint.port());
    let other_container = execution
        .metadata
        .container_id
        .as_ref()
        .is_some_and(|id| *id != container.container_id);
    !same_host || other_container
}
