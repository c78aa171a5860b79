//! The Docker adapter: one [`ContainerRuntime`] per Docker host, over bollard.
//!
//! Errors are split by whose fault they are. The host is at fault when it cannot be reached,
//! times out, or answers 5xx to a container operation; a missing image, a failed pull from a
//! registry, a bad command or a name conflict is the job's own failure and never counts against
//! the host (the original counted everything, its bug 30).
//!
//! `prune.rs` holds `fastlane-node prune`, which removes leftover job containers.

mod output;
mod pace;
mod prune;
pub(crate) mod registry;

pub use prune::prune;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use fastlane_actors::ports::{
    foreign_container_error, ContainerExit, ContainerRuntime, ContainerSpec, FoundContainer,
    RuntimeError, StartedContainer, DEPLOYMENT_LABEL, EXECUTION_LABEL,
};
use fastlane_proto::farm::DockerEndpoint;
use fastlane_proto::image::ImageRef;
use futures_util::StreamExt;
use output::BoundedOutput;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// The client certificate for `https://` Docker hosts (PEM files).
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// The files `DOCKER_TLS_CA`, `DOCKER_TLS_CERT` and `DOCKER_TLS_KEY` name, when all three
    /// are configured.
    pub(crate) fn from_config(config: &crate::config::Config) -> Option<TlsFiles> {
        Some(TlsFiles {
            ca: config.optional("DOCKER_TLS_CA")?.into(),
            cert: config.optional("DOCKER_TLS_CERT")?.into(),
            key: config.optional("DOCKER_TLS_KEY")?.into(),
        })
    }
}

/// An RFC 3339 time as Docker writes it, in Unix seconds (0 when unreadable: old enough).
fn unix_seconds(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_or(0, |time| time.unix_timestamp())
}

/// What to do when no Docker engine answers, in a newcomer's words.
pub(crate) const DOCKER_ADVICE: &str = "Start Docker on this machine, or tell fastlane-node \
     where an engine is: DOCKER_HOST=unix:///path/to/docker.sock or DOCKER_HOST=tcp://host:2375 \
     for one engine, or DOCKER_HOSTS='[{\"match\": \"\", \"hosts\": [\"host:2375\"], \
     \"maxRunning\": 2}]' for a farm of engines.";

/// Where the local engine is looked for: `DOCKER_HOST`, else Docker's default socket.
pub(crate) fn local_docker_address() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(address) if !address.trim().is_empty() => format!("{address} (DOCKER_HOST)"),
        _ => "unix:///var/run/docker.sock (the default socket; DOCKER_HOST is not set)".into(),
    }
}

/// The error of a node that cannot use the local engine: which address it tried, why, and
/// what to do about it.
fn local_unreachable(cause: &str) -> String {
    format!(
        "no Docker engine found at {}: {cause}. {DOCKER_ADVICE}",
        local_docker_address()
    )
}

/// One Docker host.
pub(crate) struct DockerRuntime {
    endpoint: DockerEndpoint,
    docker: Docker,
    call_timeout: Duration,
    /// Most bytes kept of each stream of a collected container (0 = all).
    output_max_bytes: u64,
    /// Most bytes a second read from a live log stream (0 = as fast as Docker sends).
    live_bytes_per_second: u64,
    /// Logins sent with pulls from private registries.
    registry_auth: std::sync::Arc<registry::RegistryAuth>,
}

/// Pulls may take much longer than other calls.
const PULL_TIMEOUT_FACTOR: u32 = 20;
/// Lines of earlier output a new live stream starts with (Docker's `tail` counts lines):
/// about the live replay's 1 MiB for lines of ~100 bytes, and a bounded backlog either way.
const FOLLOW_TAIL_LINES: u32 = 10_000;

impl DockerRuntime {
    /// A client for `endpoint`. `wait_limit` bounds the longest call (waiting for a container).
    pub(crate) fn connect(
        endpoint: &DockerEndpoint,
        tls_files: Option<&TlsFiles>,
        call_timeout: Duration,
        wait_limit: Duration,
    ) -> anyhow::Result<DockerRuntime> {
        let docker = match endpoint {
            DockerEndpoint::Tcp { host, port, tls } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match (tls, tls_files) {
                    (false, _) => Docker::connect_with_http(
                        &format!("tcp://{host}:{port}"),
                        wait_limit.as_secs(),
                        API_DEFAULT_VERSION,
                    )?,
                    (true, Some(files)) => Docker::connect_with_ssl(
                        &format!("https://{host}:{port}"),
                        &files.key,
                        &files.cert,
                        &files.ca,
                        wait_limit.as_secs(),
                        API_DEFAULT_VERSION,
                    )?,
                    (true, None) => anyhow::bail!(
                        "{endpoint} is a TLS host but no client certificate is configured"
                    ),
                }
            }
            DockerEndpoint::Local => Docker::connect_with_defaults()
                .map_err(|error| anyhow::anyhow!(local_unreachable(&error.to_string())))?
                .with_timeout(wait_limit),
        };
        Ok(DockerRuntime {
            endpoint: endpoint.clone(),
            docker,
            call_timeout,
            output_max_bytes: 0,
            live_bytes_per_second: 0,
            registry_auth: Default::default(),
        })
    }

    /// Sends these logins with pulls from their registries.
    pub(crate) fn with_registry_auth(
        mut self,
        auth: std::sync::Arc<registry::RegistryAuth>,
    ) -> DockerRuntime {
        self.registry_auth = auth;
        self
    }

    /// Reads live log streams at most `bytes_per_second` (see `pace`); 0 = unpaced.
    pub(crate) fn with_live_output_pace(mut self, bytes_per_second: u64) -> DockerRuntime {
        self.live_bytes_per_second = bytes_per_second;
        self
    }

    /// Keeps at most `max_bytes` of each stream of a collected container (head and tail around
    /// a marker line); 0 keeps everything.
    pub(crate) fn with_output_limit(mut self, max_bytes: u64) -> DockerRuntime {
        self.output_max_bytes = max_bytes;
        self
    }

    fn host_fault(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::HostFault {
            endpoint: self.endpoint.to_string(),
            message: message.to_string(),
        }
    }

    /// Classifies a Docker error of a container operation.
    fn classify(&self, error: DockerError) -> RuntimeError {
        match error {
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => RuntimeError::NotFound(message),
                500.. => self.host_fault(format!(
                    "Docker responded with status code {status_code}: {message}"
                )),
                _ => RuntimeError::Rejected(message),
            },
            DockerError::DockerContainerWaitError { error, .. } => RuntimeError::Rejected(error),
            other => self.host_fault(other),
        }
    }

    /// Runs a Docker call with a timeout; a timeout is the host's fault.
    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, RuntimeError> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(|error| self.classify(error)),
            Err(_) => Err(self.host_fault(format!("no answer within {} seconds", limit.as_secs()))),
        }
    }

    /// Inspects a container (by id or name), within the call timeout.
    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse, RuntimeError> {
        self.bounded(
            self.call_timeout,
            self.docker.inspect_container(container, None),
        )
        .await
    }

    /// Whether the engine reports `OOMKilled` a little after the exit: it learns of the kernel's
    /// OOM kill by an event of its own, which can come after the exit's. Asked a few times over
    /// a second; an unanswered ask counts as not reported.
    async fn oom_reported_late(&self, container_id: &str) -> bool {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(inspected) = self.inspect(container_id).await else {
                return false;
            };
            if inspected.state.and_then(|state| state.oom_killed) == Some(true) {
                return true;
            }
        }
        false
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        match self
            .bounded(self.call_timeout, self.docker.inspect_image(&image.full()))
            .await
        {
            Ok(_) => Ok(true),
            Err(RuntimeError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Pulls `image`. A daemon that answers but cannot pull (registry unreachable, unknown
    /// image) is not the host's fault: that is an `Image` error.
    async fn pull(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        let options = CreateImageOptions {
            from_image: Some(match &image.digest {
                Some(digest) => format!("{}@{digest}", image.repository),
                None => image.repository.clone(),
            }),
            tag: image.digest.is_none().then(|| image.tag.clone()),
            ..Default::default()
        };
        let pull = async {
            let credentials = self.registry_auth.credentials_for(image);
            let mut progress = self.docker.create_image(Some(options), None, credentials);
            while let Some(item) = progress.next().await {
                let info = item?;
                if let Some(detail) = info.error_detail {
                    return Err(DockerError::DockerStreamError {
                        error: detail.message.unwrap_or_else(|| "pull failed".into()),
                    });
                }
            }
            Ok(())
        };
        let failed = |reason: String| {
            RuntimeError::Image(format!("Failed to pull image {}: {reason}", image.full()))
        };
        let limit = self.call_timeout * PULL_TIMEOUT_FACTOR;
        match tokio::time::timeout(limit, pull).await {
            Ok(Ok(())) => Ok(()),
            // The daemon answered: the registry or the reference is the problem.
            Ok(Err(
                error @ (DockerError::DockerResponseServerError { .. }
                | DockerError::DockerStreamError { .. }),
            )) => Err(failed(error.to_string())),
            Ok(Err(error)) => Err(self.host_fault(error)),
            Err(_) => Err(failed(format!(
                "no result within {} seconds",
                limit.as_secs()
            ))),
        }
    }

    /// Takes over the container a run interrupted by a crash (or a start that timed out)
    /// created: starts it if it never started, or returns it as is. A container of that name
    /// that another deployment or execution made is left alone: the job fails instead.
    async fn take_over(&self, spec: &ContainerSpec) -> Result<StartedContainer, RuntimeError> {
        let name = spec.name.as_str();
        let existing = self.inspect(name).await?;
        let labels = existing
            .config
            .as_ref()
            .and_then(|config| config.labels.as_ref());
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .map(String::as_str)
        };
        for key in [DEPLOYMENT_LABEL, EXECUTION_LABEL] {
            let wanted = spec.labels.get(key).map(String::as_str);
            if label(key) != wanted {
                return Err(RuntimeError::Rejected(foreign_container_error(
                    name,
                    &self.endpoint.to_string(),
                    label(DEPLOYMENT_LABEL),
                )));
            }
        }
        let container_id = existing.id.unwrap_or_else(|| name.to_string());
        let never_started = existing.state.as_ref().is_some_and(|state| {
            state.status == Some(ContainerStateStatusEnum::CREATED)
                && state.error.as_deref().unwrap_or("").is_empty()
        });
        if never_started {
            self.start_by_id(&container_id).await
        } else {
            Ok(StartedContainer {
                container_id,
                start_error: None,
            })
        }
    }

    async fn start_by_id(&self, container_id: &str) -> Result<StartedContainer, RuntimeError> {
        let started = self
            .bounded(
                self.call_timeout,
                self.docker
                    .start_container(container_id, None::<StartContainerOptions>),
            )
            .await;
        let start_error = match started {
            Ok(()) => None,
            Err(RuntimeError::Rejected(message)) => Some(message),
            // Docker answers 500 when the command cannot be executed; the container exists and
            // carries the error in its state, so it is collected as an exited container.
            Err(RuntimeError::HostFault { message, .. }) if message.contains("OCI runtime") => {
                Some(message)
            }
            Err(error) => return Err(error),
        };
        Ok(StartedContainer {
            container_id: container_id.to_string(),
            start_error,
        })
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> &DockerEndpoint {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.bounded(self.call_timeout, self.docker.ping())
            .await
            .map(|_| ())
    }

    async fn prepare_image(&self, image: &ImageRef) -> Result<Vec<String>, RuntimeError> {
        if !image.always_pull() && self.image_present(image).await? {
            return Ok(Vec::new());
        }
        match self.pull(image).await {
            Ok(()) => Ok(Vec::new()),
            Err(RuntimeError::Image(message)) if self.image_present(image).await? => {
                Ok(vec![format!(
                    "{message}; ran the image present on the host instead."
                )])
            }
            Err(error) => Err(error),
        }
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<StartedContainer, RuntimeError> {
        let body = ContainerCreateBody {
            image: Some(spec.image.full()),
            cmd: (!spec.argv.is_empty()).then(|| spec.argv.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            host_config: Some(HostConfig {
                extra_hosts: Some(spec.extra_hosts.clone()),
                nano_cpus: spec.resources.cpus.map(|cpus| (cpus * 1e9).round() as i64),
                memory: spec.resources.memory_mb.map(|mb| (mb * 1024 * 1024) as i64),
                pids_limit: spec.resources.pids_limit.map(|pids| pids as i64),
                // The default json-file driver replaces bytes that are not UTF-8; `local` keeps
                // output byte for byte (up to max-size × max-file, 250 MB per container).
                log_config: Some(HostConfigLogConfig {
                    typ: Some("local".to_string()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "50m".to_string()),
                        ("max-file".to_string(), "5".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        // A create interrupted by a crash may leave the name reserved while Docker rolls the
        // container back: then the name is in use but the container cannot be found. Retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let created = self
                .bounded(
                    self.call_timeout,
                    self.docker
                        .create_container(Some(options.clone()), body.clone()),
                )
                .await;
            let message = match created {
                Ok(created) => return self.start_by_id(&created.id).await,
                Err(RuntimeError::Rejected(message)) if message.contains("already in use") => {
                    message
                }
                Err(RuntimeError::NotFound(message)) => return Err(RuntimeError::Image(message)),
                Err(error) => return Err(error),
            };
            match self.take_over(spec).await {
                Err(RuntimeError::NotFound(_)) if attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(RuntimeError::NotFound(_)) => return Err(RuntimeError::Rejected(message)),
                other => return other,
            }
        }
    }

    async fn find(&self, name: &str) -> Result<Option<FoundContainer>, RuntimeError> {
        match self.inspect(name).await {
            Ok(inspected) => Ok(Some(FoundContainer {
                container_id: inspected.id.unwrap_or_else(|| name.to_string()),
                name: inspected
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: inspected
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                created_at: inspected.created.as_deref().map_or(0, unix_seconds),
            })),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn list_labelled(
        &self,
        label: &str,
        value: &str,
        max: usize,
    ) -> Result<Vec<FoundContainer>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            limit: Some(max.min(i32::MAX as usize) as i32),
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{label}={value}")],
            )])),
            ..Default::default()
        };
        let containers = self
            .bounded(
                self.call_timeout,
                self.docker.list_containers(Some(options)),
            )
            .await?;
        Ok(containers
            .into_iter()
            .take(max)
            .filter_map(|container| {
                Some(FoundContainer {
                    container_id: container.id?,
                    name: container
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|name| name.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    labels: container.labels.unwrap_or_default().into_iter().collect(),
                    created_at: container.created.unwrap_or(0),
                })
            })
            .collect())
    }

    async fn wait(&self, container_id: &str) -> Result<(), RuntimeError> {
        let options = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut stream = self.docker.wait_container(container_id, Some(options));
        match stream.next().await {
            None | Some(Ok(_)) => Ok(()),
            // bollard reports a non-zero exit code as an error: it is a normal exit here.
            Some(Err(DockerError::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(error)) => Err(self.classify(error)),
        }
    }

    async fn collect(&self, container_id: &str) -> Result<ContainerExit, RuntimeError> {
        let inspected = self.inspect(container_id).await?;
        let state = inspected.state.unwrap_or_default();
        let memory_limited = inspected
            .host_config
            .and_then(|host| host.memory)
            .is_some_and(|bytes| bytes > 0);
        // A SIGKILL under a memory limit that the engine does not (yet) call an OOM kill.
        let unreported =
            state.exit_code == Some(137) && memory_limited && state.oom_killed != Some(true);
        let oom_killed = state.oom_killed == Some(true)
            || (unreported && self.oom_reported_late(container_id).await);
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let read_logs = async {
            // Bounded while reading, so that a chatty container never costs more memory than
            // the budget, however much it wrote.
            let mut stdout = BoundedOutput::new(self.output_max_bytes);
            let mut stderr = BoundedOutput::new(self.output_max_bytes);
            let mut logs = self.docker.logs(container_id, Some(options));
            while let Some(chunk) = logs.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdErr { message } => stderr.push(&message),
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => stdout.push(&message),
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            Ok((stdout.finish(), stderr.finish()))
        };
        let ((stdout, stdout_left_out), (stderr, stderr_left_out)) =
            self.bounded(self.call_timeout * 4, read_logs).await?;
        Ok(ContainerExit {
            exit_code: state.exit_code.unwrap_or(-1),
            stdout,
            stderr,
            stdout_left_out,
            stderr_left_out,
            state_error: state.error.filter(|error| !error.is_empty()),
            oom_killed,
            killed_under_memory_limit: unreported && !oom_killed,
        })
    }

    async fn follow_logs(
        &self,
        container_id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, RuntimeError> {
        // Fails fast (and classified) when the container or the host is not there.
        self.inspect(container_id).await?;
        // From the last lines, not the container's start: a long chatty job's first watcher
        // would otherwise be sent its whole history at once and be closed as `slow`. The stored
        // output is read apart (`collect`), whole.
        let follow = |tail: u32| LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut logs = self
            .docker
            .logs(container_id, Some(follow(FOLLOW_TAIL_LINES)));
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let (docker, container_id) = (self.docker.clone(), container_id.to_string());
        let bytes_per_second = self.live_bytes_per_second;
        tokio::spawn(async move {
            let mut pace = pace::Pace::new(bytes_per_second, tokio::time::Instant::now());
            // Ends (dropping the Docker connection) as soon as the feed lets go of the receiver,
            // also while the container is silent or the stream is held back.
            loop {
                let chunk = tokio::select! {
                    () = sender.closed() => break,
                    chunk = logs.next() => chunk,
                };
                let Some(Ok(chunk)) = chunk else { break };
                let chunk = chunk.into_bytes();
                let read = chunk.len();
                if sender.send(chunk).await.is_err() {
                    break;
                }
                match pace.after(read, tokio::time::Instant::now()) {
                    pace::Step::Go => {}
                    pace::Step::Wait(wait) => tokio::select! {
                        () = sender.closed() => break,
                        () = tokio::time::sleep(wait) => {}
                    },
                    pace::Step::SkipAhead => {
                        // Dropping the old stream closes its connection: Docker stops reading
                        // back what nobody will see.
                        logs = docker.logs(&container_id, Some(follow(pace::SKIP_TAIL_LINES)));
                        if sender
                            .send(pace::skip_marker(bytes_per_second))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        Ok(receiver)
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(grace.as_secs().clamp(0, 86_400) as i32),
            signal: None,
        };
        match self
            .bounded(
                self.call_timeout + grace,
                self.docker.stop_container(container_id, Some(options)),
            )
            .await
        {
            // 304: already stopped.
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(RuntimeError::Rejected(message))
                if message.is_empty() || message.contains("not running") =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .bounded(
                self.call_timeout,
                self.docker.remove_container(container_id, Some(options)),
            )
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
