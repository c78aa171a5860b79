//! The HostActor's messages: container operations for JobActors, load and status for placement
//! and `/status/`, live output for watchers, and the actor's own progress reports.

use super::job::JobMessage;
use crate::placement::{CircuitState, HostLoad};
use crate::ports::{ContainerSpec, RuntimeError};
use bytes::Bytes;
use fastlane_proto::farm::DockerEndpoint;
use ractor::{ActorRef, RpcReplyPort};
use std::time::Duration;
use tokio::sync::broadcast;

/// Messages of the HostActor.
pub enum HostMessage {
    /// Pull (if needed), create, start and wait for a container, then collect its output.
    Run {
        spec: Box<ContainerSpec>,
        wait_limit: Duration,
        job: ActorRef<JobMessage>,
    },
    /// Wait for an already started container (after a restart of the node), then collect it.
    Attach {
        container_id: String,
        wait_limit: Duration,
        job: ActorRef<JobMessage>,
    },
    /// Look for the container named `name` (whichever its state); the answer goes to `job` as
    /// `JobMessage::Found`.
    Find {
        name: String,
        job: ActorRef<JobMessage>,
    },
    /// Stop a running container (SIGTERM, SIGKILL after `grace`); its run then reports `Exited`.
    StopContainer {
        container_id: String,
        grace: Duration,
    },
    /// Remove a container whose result has been stored.
    Remove {
        container_id: String,
    },
    /// A spawned run ended; `fault` is set when it ended on a host fault.
    RunEnded {
        key: String,
        fault: Option<String>,
    },
    /// A cheap operation succeeded or failed on the host.
    Observed {
        fault: Option<String>,
    },
    /// A liveness ping (for `/status/`, not the breaker) ended.
    Pinged {
        fault: Option<String>,
    },
    /// A probe of a half-open circuit ended.
    Probed {
        fault: Option<String>,
    },
    Load(RpcReplyPort<HostLoad>),
    Status(RpcReplyPort<HostStatus>),
    /// Watch a running container's output: the last output (bounded), then live. All watchers
    /// of one container share one Docker log stream, closed when the last one leaves.
    Watch {
        container_id: String,
        reply: RpcReplyPort<Result<LogWatch, RuntimeError>>,
    },
    /// A container's log stream ended (its output ended, or nobody watched it any more).
    FeedEnded {
        container_id: String,
        /// Which feed of that container ended.
        generation: u64,
    },
    /// Its own timer: when the circuit is half-open, one ping decides (so a recovered host is
    /// closed again without risking a job on it); a closed one is pinged now and then.
    Probe,
}

/// The host as `/status/` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStatus {
    pub endpoint: DockerEndpoint,
    /// Names (or ids) of the containers it runs for this node.
    pub containers: Vec<String>,
    pub available: bool,
    pub circuit: CircuitState,
    pub running: usize,
    pub error: Option<String>,
}

/// What a watcher gets: the last output, then the live chunks (the receiver closes when the
/// container's output ends; it reports `Lagged` to a watcher that fell too far behind).
pub struct LogWatch {
    /// The last output (at most `log_feed::REPLAY_MAX_BYTES`).
    pub history: Vec<Bytes>,
    /// How many bytes of earlier output the history leaves out.
    pub skipped_bytes: u64,
    pub live: Option<broadcast::Receiver<Bytes>>,
}
