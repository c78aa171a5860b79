//! The container runtime port: one Docker host, what to run on it, and what it reports.

use async_trait::async_trait;
use fastlane_proto::farm::DockerEndpoint;
use fastlane_proto::image::ImageRef;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run in a container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    /// `fastlane-job-{execution_id}`.
    pub name: String,
    /// The image to run, pulled first when absent or `latest`.
    pub image: ImageRef,
    /// The job's command split shell-style into Docker's `Cmd`; the image's entrypoint is kept.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// `host:ip` entries.
    pub extra_hosts: Vec<String>,
    /// `fastlane.task_id`, `fastlane.job_id`, `fastlane.execution_id` and
    /// `fastlane.deployment_id`: whose run a container is; and the job's own labels, under
    /// [`fastlane_proto::container::USER_LABEL_PREFIX`].
    pub labels: BTreeMap<String, String>,
    /// The job's resources, with its farm's defaults where it asked for none.
    pub resources: fastlane_proto::container::Resources,
    /// The command's working directory, when the job gives one.
    pub working_dir: Option<String>,
    /// The user the command runs as, when the job gives one.
    pub user: Option<String>,
}

/// A container that has been created (and, unless `start_error` says otherwise, started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedContainer {
    /// Docker's id of the container.
    pub container_id: String,
    /// Why Docker refused to start it (e.g. the command does not exist); it will be collected
    /// as an exited container with that message.
    pub start_error: Option<String>,
}

/// The label every container carries with its deployment's id (`DEPLOYMENT_ID`): nodes of one
/// deployment take over and reap only containers that carry their own id.
pub const DEPLOYMENT_LABEL: &str = "fastlane.deployment_id";
/// The label every container carries with the id of the execution it runs.
pub const EXECUTION_LABEL: &str = "fastlane.execution_id";

/// A container found on a host by name or label (whichever its state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundContainer {
    /// Docker's id of the container.
    pub container_id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created, in Unix seconds.
    pub created_at: i64,
}

impl FoundContainer {
    /// Whether the container was made by `deployment_id` for `execution_id`: only such a
    /// container may be taken over or removed; any other one belongs to someone else.
    pub fn is_owned_by(&self, deployment_id: &str, execution_id: &str) -> bool {
        self.labels.get(DEPLOYMENT_LABEL).map(String::as_str) == Some(deployment_id)
            && self.labels.get(EXECUTION_LABEL).map(String::as_str) == Some(execution_id)
    }
}

/// The error of an execution whose container name is taken by a container another deployment
/// (or execution) made: that container is left alone and the execution is not run.
pub fn foreign_container_error(name: &str, endpoint: &str, deployment: Option<&str>) -> String {
    format!(
        "A container named {name} exists on Docker host {endpoint} but belongs to another \
         deployment ({DEPLOYMENT_LABEL}={}); it was left untouched and this execution not run.",
        deployment.unwrap_or("unset")
    )
}

/// An exited container's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExit {
    /// The exit code Docker reports; 0 makes the execution `done`, anything else `failed`.
    pub exit_code: i64,
    /// Everything the container wrote to stdout: the execution's `log`.
    pub stdout: Vec<u8>,
    /// Everything the container wrote to stderr: the end of the execution's `error`.
    pub stderr: Vec<u8>,
    /// Bytes left out of the middle of `stdout` to keep it within the configured budget (a
    /// marker line in `stdout` stands for them); 0 when it is whole.
    pub stdout_left_out: u64,
    /// Bytes left out of the middle of `stderr`, likewise.
    pub stderr_left_out: u64,
    /// Docker's `State.Error`, when set.
    pub state_error: Option<String>,
    /// Docker's `State.OOMKilled`: the container was killed for going over its memory limit.
    pub oom_killed: bool,
    /// Killed by SIGKILL (exit code 137) while under a memory limit, without the engine saying
    /// `OOMKilled`: some engines (cgroup v2 hosts) do not always learn of the kernel's OOM kill,
    /// so this is the likely cause, said as such.
    pub killed_under_memory_limit: bool,
}

/// A container runtime failure, split by whose fault it is: only host faults count against a
/// host's health and are retried elsewhere; the others are the job's own failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The host did not answer, answered 5xx, or timed out.
    #[error("Connection to host {endpoint} failed with error: {message}")]
    HostFault {
        /// The host as `host:port`.
        endpoint: String,
        /// What went wrong, as the Docker client reported it.
        message: String,
    },
    /// The image could not be found or pulled and is not present on the host.
    #[error("{0}")]
    Image(String),
    /// Docker refused the container (bad configuration, name conflict, …).
    #[error("{0}")]
    Rejected(String),
    /// The container does not exist (any more).
    #[error("container {0} not found")]
    NotFound(String),
}

impl RuntimeError {
    /// Whether this counts against the host's health and may be retried on another host.
    pub fn is_host_fault(&self) -> bool {
        matches!(self, RuntimeError::HostFault { .. })
    }
}

/// One Docker host. Every call has its own timeout inside the adapter.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The host and port this runtime talks to.
    fn endpoint(&self) -> &DockerEndpoint;
    /// A cheap round trip: the host's health probe and its circuit breaker's half-open test.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Makes the image available: pulls when absent or `latest`. When a pull fails but the
    /// image is present, returns the pull error as a warning instead of failing.
    async fn prepare_image(&self, image: &ImageRef) -> Result<Vec<String>, RuntimeError>;
    /// Creates and starts the container. If a container with that name exists already (a run
    /// interrupted by a crash, or a start that timed out), takes it over (starting it if it
    /// never started) when its deployment and execution labels are the spec's, and fails with
    /// `Rejected` without touching it when they are not.
    async fn start(&self, spec: &ContainerSpec) -> Result<StartedContainer, RuntimeError>;
    /// The container named `name`, if there is one (`None`: certainly none on this host).
    async fn find(&self, name: &str) -> Result<Option<FoundContainer>, RuntimeError>;
    /// Containers (running or not) labelled `label=value`, at most `max` of them, the most
    /// recently created first.
    async fn list_labelled(
        &self,
        label: &str,
        value: &str,
        max: usize,
    ) -> Result<Vec<FoundContainer>, RuntimeError>;
    /// Waits for the container to exit (Docker's wait API; no polling).
    async fn wait(&self, container_id: &str) -> Result<(), RuntimeError>;
    /// Reads the exited container's exit code and whole stdout and stderr.
    async fn collect(&self, container_id: &str) -> Result<ContainerExit, RuntimeError>;
    /// Follows the container's combined stdout and stderr from its last lines (a bounded
    /// backlog, not its start), as Docker writes them; the channel closes when the container
    /// has exited (or the host went away).
    async fn follow_logs(
        &self,
        container_id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, RuntimeError>;
    /// Stops the container: SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes the container (forcibly).
    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError>;
}
