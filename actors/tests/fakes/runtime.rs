//! A scriptable `ContainerRuntime`: one fake Docker host whose pulls and starts take as long
//! as the test says, whose containers exit when the test says (or only when stopped), and
//! which fails where the test says. It records every call, so tests assert what a JobActor
//! asked of the host: containers created, stopped (with which grace), removed.
//!
//! Time is tokio's, so under a paused clock a 30-second pull costs nothing.

use async_trait::async_trait;
use bytes::Bytes;
use fastlane_actors::ports::{
    foreign_container_error, ContainerExit, ContainerRuntime, ContainerSpec, FoundContainer,
    RuntimeError, StartedContainer, DEPLOYMENT_LABEL, EXECUTION_LABEL,
};
use fastlane_proto::farm::DockerEndpoint;
use fastlane_proto::image::ImageRef;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Exit code of a container ended by `stop` (SIGTERM).
pub const STOPPED_EXIT_CODE: i64 = 143;
/// Exit code of a running container ended by `remove` (forced: SIGKILL).
pub const KILLED_EXIT_CODE: i64 = 137;

/// How the host behaves; a test may change it between steps.
#[derive(Clone, Debug)]
pub struct Script {
    pub pull_delay: Duration,
    /// How long creating and starting a container takes.
    pub start_delay: Duration,
    /// Returned by `start` (after `start_delay`) instead of creating a container.
    pub start_error: Option<RuntimeError>,
    /// How long a container runs before exiting by itself; `None`: until it is stopped.
    pub run_for: Option<Duration>,
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Returned by `wait` (the host went away while the container ran).
    pub wait_error: Option<RuntimeError>,
    /// Returned by `start` after it created the container (a start that timed out at the
    /// client while the engine went on).
    pub start_fault_after_create: Option<RuntimeError>,
    /// Returned by `find` and `list_labelled` (the host does not answer).
    pub find_error: Option<RuntimeError>,
    /// How long `find` takes.
    pub find_delay: Duration,
    /// The container is killed for memory: `Some(true)` the engine says `OOMKilled`,
    /// `Some(false)` it only saw a SIGKILL under a memory limit.
    pub out_of_memory: Option<bool>,
}

impl Default for Script {
    /// A quick, successful container: `hello` on stdout, exit 0 after one second.
    fn default() -> Self {
        Script {
            pull_delay: Duration::ZERO,
            start_delay: Duration::ZERO,
            start_error: None,
            run_for: Some(Duration::from_secs(1)),
            exit_code: 0,
            stdout: b"hello\n".to_vec(),
            stderr: Vec::new(),
            wait_error: None,
            start_fault_after_create: None,
            find_error: None,
            find_delay: Duration::ZERO,
            out_of_memory: None,
        }
    }
}

/// One container on the fake host.
#[derive(Clone, Debug)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    /// When it exits by itself, if ever.
    exit_at: Option<Instant>,
    /// The exit code it will have when it exits by itself.
    natural_exit_code: i64,
    /// Set once it has exited.
    pub exit_code: Option<i64>,
    pub removed: bool,
    pub labels: BTreeMap<String, String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    out_of_memory: Option<bool>,
    exited: watch::Sender<bool>,
}

/// A `stop` call.
#[derive(Clone, Debug, PartialEq)]
pub struct StopCall {
    pub container_id: String,
    pub grace: Duration,
    pub at: Instant,
}

/// Every call the host received, in order.
#[derive(Clone, Debug, Default)]
pub struct RuntimeCalls {
    pub pulls: u32,
    pub pulls_in_progress: u32,
    /// `start` calls, whether they created a container or not.
    pub starts: u32,
    pub starts_in_progress: u32,
    /// Ids of the containers `start` created, with when.
    pub creations: Vec<(String, Instant)>,
    pub waits: Vec<String>,
    pub collects: Vec<String>,
    pub stops: Vec<StopCall>,
    pub removals: Vec<String>,
    /// Names looked up with `find`.
    pub finds: Vec<String>,
}

#[derive(Default)]
struct Host {
    script: Script,
    calls: RuntimeCalls,
    containers: Vec<FakeContainer>,
}

pub struct FakeRuntime {
    endpoint: DockerEndpoint,
    host: Mutex<Host>,
}

impl FakeRuntime {
    /// A host at `name:2375` behaving as `script` says.
    pub fn new(name: &str, script: Script) -> FakeRuntime {
        FakeRuntime {
            endpoint: DockerEndpoint::Tcp {
                host: name.to_string(),
                port: 2375,
                tls: false,
            },
            host: Mutex::new(Host {
                script,
                ..Host::default()
            }),
        }
    }

    fn host(&self) -> MutexGuard<'_, Host> {
        // A panicking test must not turn every later read into a second panic.
        self.host
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the script for the calls to come.
    pub fn rescript(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.host().script);
    }

    pub fn calls(&self) -> RuntimeCalls {
        self.host().calls.clone()
    }

    pub fn container(&self, container_id: &str) -> Option<FakeContainer> {
        self.host()
            .containers
            .iter()
            .find(|container| container.id == container_id)
            .cloned()
    }

    /// Ids of the containers that have not exited.
    pub fn running(&self) -> Vec<String> {
        self.host()
            .containers
            .iter()
            .filter(|container| container.exit_code.is_none())
            .map(|container| container.id.clone())
            .collect()
    }

    /// A container an earlier life of the node started (not counted as a creation), exiting
    /// after `run_for` as the script says.
    pub fn seed_running(&self, container_id: &str, name: &str, run_for: Option<Duration>) {
        self.seed_labelled(container_id, name, BTreeMap::new(), run_for);
    }

    /// Like [`seed_running`](Self::seed_running), with labels.
    pub fn seed_labelled(
        &self,
        container_id: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        run_for: Option<Duration>,
    ) {
        let mut host = self.host();
        let mut container = new_container(container_id, name, &host.script, run_for);
        container.labels = labels;
        host.containers.push(container);
    }

    fn found(&self, container: &FakeContainer) -> FoundContainer {
        FoundContainer {
            container_id: container.id.clone(),
            name: container.name.clone(),
            labels: container.labels.clone(),
            created_at: 0,
        }
    }

    fn exit(&self, container_id: &str, exit_code: Option<i64>) {
        let mut host = self.host();
        if let Some(container) = host
            .containers
            .iter_mut()
            .find(|container| container.id == container_id)
        {
            if container.exit_code.is_none() {
                container.exit_code = Some(exit_code.unwrap_or(container.natural_exit_code));
                container.exited.send_replace(true);
            }
        }
    }

    fn not_found(container_id: &str) -> RuntimeError {
        RuntimeError::NotFound(container_id.to_string())
    }
}

fn new_container(
    id: &str,
    name: &str,
    script: &Script,
    run_for: Option<Duration>,
) -> FakeContainer {
    FakeContainer {
        id: id.to_string(),
        name: name.to_string(),
        exit_at: run_for.map(|run_for| Instant::now() + run_for),
        natural_exit_code: script.exit_code,
        exit_code: None,
        removed: false,
        labels: BTreeMap::new(),
        stdout: script.stdout.clone(),
        stderr: script.stderr.clone(),
        out_of_memory: script.out_of_memory,
        exited: watch::channel(false).0,
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn endpoint(&self) -> &DockerEndpoint {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn prepare_image(&self, _image: &ImageRef) -> Result<Vec<String>, RuntimeError> {
        let delay = {
            let mut host = self.host();
            host.calls.pulls += 1;
            host.calls.pulls_in_progress += 1;
            host.script.pull_delay
        };
        tokio::time::sleep(delay).await;
        self.host().calls.pulls_in_progress -= 1;
        Ok(Vec::new())
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<StartedContainer, RuntimeError> {
        let delay = {
            let mut host = self.host();
            host.calls.starts += 1;
            host.calls.starts_in_progress += 1;
            host.script.start_delay
        };
        tokio::time::sleep(delay).await;
        let mut host = self.host();
        host.calls.starts_in_progress -= 1;
        if let Some(error) = host.script.start_error.clone() {
            return Err(error);
        }
        // A container of that name left by an interrupted run is taken over, as Docker's
        // adapter does on a name conflict.
        if let Some(existing) = host
            .containers
            .iter()
            .find(|container| container.name == spec.name && !container.removed)
        {
            for key in [DEPLOYMENT_LABEL, EXECUTION_LABEL] {
                if existing.labels.get(key) != spec.labels.get(key) {
                    return Err(RuntimeError::Rejected(foreign_container_error(
                        &spec.name,
                        &self.endpoint.to_string(),
                        existing.labels.get(DEPLOYMENT_LABEL).map(String::as_str),
                    )));
                }
            }
            return Ok(StartedContainer {
                container_id: existing.id.clone(),
                start_error: None,
            });
        }
        let id = format!(
            "{}-container-{}",
            self.endpoint.host(),
            host.containers.len() + 1
        );
        let mut container = new_container(&id, &spec.name, &host.script, host.script.run_for);
        container.labels = spec.labels.clone();
        host.containers.push(container);
        host.calls.creations.push((id.clone(), Instant::now()));
        if let Some(error) = host.script.start_fault_after_create.clone() {
            return Err(error);
        }
        Ok(StartedContainer {
            container_id: id,
            start_error: None,
        })
    }

    async fn find(&self, name: &str) -> Result<Option<FoundContainer>, RuntimeError> {
        let delay = self.host().script.find_delay;
        tokio::time::sleep(delay).await;
        let mut host = self.host();
        host.calls.finds.push(name.to_string());
        if let Some(error) = host.script.find_error.clone() {
            return Err(error);
        }
        Ok(host
            .containers
            .iter()
            .find(|container| container.name == name && !container.removed)
            .map(|container| self.found(container)))
    }

    async fn list_labelled(
        &self,
        label: &str,
        value: &str,
        max: usize,
    ) -> Result<Vec<FoundContainer>, RuntimeError> {
        let host = self.host();
        if let Some(error) = host.script.find_error.clone() {
            return Err(error);
        }
        Ok(host
            .containers
            .iter()
            .rev()
            .filter(|container| !container.removed)
            .filter(|container| container.labels.get(label).map(String::as_str) == Some(value))
            .take(max)
            .map(|container| self.found(container))
            .collect())
    }

    async fn wait(&self, container_id: &str) -> Result<(), RuntimeError> {
        let (mut exited, exit_at) = {
            let mut host = self.host();
            host.calls.waits.push(container_id.to_string());
            if let Some(error) = host.script.wait_error.clone() {
                return Err(error);
            }
            let container = host
                .containers
                .iter()
                .find(|container| container.id == container_id)
                .ok_or_else(|| Self::not_found(container_id))?;
            (container.exited.subscribe(), container.exit_at)
        };
        let stopped = async {
            // The sender lives as long as the host: an error cannot happen here.
            let _ = exited.wait_for(|exited| *exited).await;
        };
        match exit_at {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => self.exit(container_id, None),
                () = stopped => {}
            },
            None => stopped.await,
        }
        Ok(())
    }

    async fn collect(&self, container_id: &str) -> Result<ContainerExit, RuntimeError> {
        let mut host = self.host();
        host.calls.collects.push(container_id.to_string());
        let container = host
            .containers
            .iter()
            .find(|container| container.id == container_id)
            .ok_or_else(|| Self::not_found(container_id))?;
        Ok(ContainerExit {
            exit_code: container.exit_code.unwrap_or(-1),
            stdout: container.stdout.clone(),
            stderr: container.stderr.clone(),
            stdout_left_out: 0,
            stderr_left_out: 0,
            state_error: None,
            oom_killed: container.out_of_memory == Some(true),
            killed_under_memory_limit: container.out_of_memory == Some(false),
        })
    }

    async fn follow_logs(
        &self,
        container_id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<Bytes>, RuntimeError> {
        let container = self
            .container(container_id)
            .ok_or_else(|| Self::not_found(container_id))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let _ = sender.try_send(Bytes::from(container.stdout));
        Ok(receiver)
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.host().calls.stops.push(StopCall {
            container_id: container_id.to_string(),
            grace,
            at: Instant::now(),
        });
        self.container(container_id)
            .ok_or_else(|| Self::not_found(container_id))?;
        self.exit(container_id, Some(STOPPED_EXIT_CODE));
        Ok(())
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.host().calls.removals.push(container_id.to_string());
        self.exit(container_id, Some(KILLED_EXIT_CODE));
        let mut host = self.host();
        let container = host
            .containers
            .iter_mut()
            .find(|container| container.id == container_id)
            .ok_or_else(|| Self::not_found(container_id))?;
        container.removed = true;
        Ok(())
    }
}
