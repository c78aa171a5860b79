//! What an execution needs from the outside, as plain values: its container and its slots.

use crate::ports::{ContainerSpec, DEPLOYMENT_LABEL, EXECUTION_LABEL};
use fastlane_proto::container::{Resources, USER_LABEL_PREFIX};
use fastlane_proto::image::ImageRef;
use fastlane_proto::{command, Execution, Job};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The slots an execution of `job` needs: its task's `maxConcurrent` (if set) and its farm's
/// `maxRunning`.
pub(crate) fn slot_pools(settings: &crate::Settings, job: &Job) -> Vec<(String, u32)> {
    let mut pools = Vec::new();
    if let Some(max) = job.metadata.max_concurrent {
        pools.push((format!("task:{}", job.task_id), max));
    }
    if let Some(index) = settings
        .farms
        .iter()
        .position(|farm| farm.matches(&job.task_id))
    {
        pools.push((format!("farm:{index}"), settings.farms[index].max_running));
    }
    pools
}

/// The resources a job of `task_id` gets where it asks for none: its farm's `defaults`.
pub(crate) fn farm_defaults(settings: &crate::Settings, task_id: &str) -> Resources {
    fastlane_proto::farm::farm_for(&settings.farms, task_id)
        .map(|farm| farm.defaults)
        .unwrap_or_default()
}

/// The name of `execution_id`'s container: Docker refuses a second container of that name.
pub(crate) fn container_name(execution_id: Uuid) -> String {
    format!("fastlane-job-{execution_id}")
}

/// The container to run for `execution` in `deployment_id`, with `farm_defaults` for the
/// resources its job does not set, or why it cannot run.
pub(crate) fn container_spec(
    job: &Job,
    execution: &Execution,
    deployment_id: &str,
    farm_defaults: Resources,
) -> Result<ContainerSpec, String> {
    let image = ImageRef::parse(&execution.image)
        .ok_or_else(|| format!("Invalid image reference {:?}.", execution.image))?;
    let argv = command::split(&execution.command).ok_or_else(|| {
        format!(
            "Invalid command {:?}: unbalanced quotes.",
            execution.command
        )
    })?;
    let options = &job.metadata.container;
    let mut labels: BTreeMap<String, String> = options
        .labels
        .iter()
        .map(|(key, value)| (format!("{USER_LABEL_PREFIX}{key}"), value.clone()))
        .collect();
    labels.extend([
        ("fastlane.task_id".to_string(), execution.task_id.clone()),
        ("fastlane.job_id".to_string(), execution.job_id.to_string()),
        (
            EXECUTION_LABEL.to_string(),
            execution.execution_id.to_string(),
        ),
        (DEPLOYMENT_LABEL.to_string(), deployment_id.to_string()),
    ]);
    Ok(ContainerSpec {
        name: container_name(execution.execution_id),
        image,
        argv,
        env: job
            .metadata
            .envs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        extra_hosts: job
            .metadata
            .additional_dns_entries
            .iter()
            .map(|(host, ip)| format!("{host}:{ip}"))
            .collect(),
        labels,
        resources: options.resources.or(farm_defaults),
        working_dir: options.working_dir.clone(),
        user: options.user.clone(),
    })
}
