//! The actors of fastlane-node and the ports they need. The supervision tree is drawn in
//! [`root`]; the messages the actors exchange are in [`messages`].
//!
//! Invariant: actors reach the outside world only through [`ports`]; this crate imports no
//! database, HTTP or Docker crate.

#![warn(unreachable_pub)]

pub mod api;
pub mod gate;
pub mod host;
pub mod job;
mod job_record;
pub mod lifecycle;
pub mod log_feed;
pub mod messages;
pub mod metrics;
pub mod notifier;
pub mod placement;
pub mod poller;
#[warn(missing_docs)]
pub mod ports;
mod reaper;
pub mod retention;
pub mod root;
pub mod scheduler;
mod sweep;

use fastlane_proto::farm::Farm;
use fastlane_proto::redact::Redactor;
use std::sync::Arc;

/// What every actor may need: the ports and the settings. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn ports::Store>,
    pub queue: Arc<dyn ports::Queue>,
    /// Served by the queue's backend: `queue.renew` extends them.
    pub slots: Arc<dyn ports::Slots>,
    pub blacklist: Arc<dyn ports::HostBlacklist>,
    pub webhooks: Arc<dyn ports::WebhookClient>,
    pub mailer: Arc<dyn ports::Mailer>,
    pub reporter: Arc<dyn ports::ErrorReporter>,
    pub settings: Arc<Settings>,
}

/// What a node does (`fastlane-node start --role`). The backends are shared, so any mix of
/// roles over one Redis and one MongoDB makes one farm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Everything: the API, the scheduler and the containers.
    #[default]
    All,
    /// The HTTP API and the scheduler: it enqueues, it never leases (no poller, JobActors,
    /// gate, reaper or periodic sweep; no notifier, since it owes nothing the workers do not
    /// deliver). Its HostActors only answer `/status/` and live output.
    Api,
    /// The containers: poller, gate, JobActors, reaper, periodic sweep and notifier; over HTTP
    /// only `/healthcheck`, `/status/` and `/metrics`. No scheduler.
    Worker,
}

impl Role {
    /// Parses `all`, `api` or `worker`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "all" => Some(Role::All),
            "api" => Some(Role::Api),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    /// Leases queue messages and runs containers (poller, gate, JobActors, reaper, sweep,
    /// notifier).
    pub fn runs_containers(self) -> bool {
        self != Role::Api
    }

    /// Fires schedules (the SchedulerActor) and serves the whole API.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }
}

/// The settings the actors use (the node's configuration, narrowed).
#[derive(Clone, Debug)]
pub struct Settings {
    /// What this node does.
    pub role: Role,
    /// This process's consumer name in the queue: unique per start (the node id and a random
    /// suffix), so leases of another process are never taken for its own.
    pub node_id: String,
    /// Consumer names of this node's previous lives: their leases are given back at start.
    pub previous_consumers: Vec<String>,
    /// How long a lease lasts (`QUEUE_LEASE_SECONDS`); renewed every quarter of it.
    pub lease_duration: std::time::Duration,
    pub farms: Vec<Farm>,
    pub hard_timeout_seconds: u64,
    /// Most bytes of each execution's `log` and `error` in a job's details (0 = all).
    pub job_details_output_max_bytes: u64,
    pub redactor: Redactor,
    /// How many executions this node holds leased at once, not counting those parked at the
    /// gate for a slot (the gate bounds those): the farms' `maxRunning` plus an allowance.
    pub max_in_flight: usize,
    /// Retry back-off of jobs that do not set their own.
    pub default_backoff: fastlane_proto::model::Backoff,
    pub webhook_backoff_min_ms: u64,
    pub webhook_backoff_factor: f64,
    /// `http://host[:port]` for links in e-mails (`SERVER_NAME`, or the address listened on).
    pub public_url: String,
    /// How often the root pushes every unfinished execution again (`None`: only at start), so
    /// that a message a shared queue lost (a Sentinel failover drops the last writes of the old
    /// primary) is recovered while the nodes run.
    pub queue_sweep_interval: Option<std::time::Duration>,
    /// Whether the sweep pushes every unfinished execution again each interval (a shared
    /// Redis may lose messages in a failover); the embedded queue loses nothing while the node
    /// runs, so it is pushed once, at start, and only dead letters are swept after.
    pub push_unfinished_periodically: bool,
    /// `DEPLOYMENT_ID`: the label value of this deployment's containers; only containers that
    /// carry it are taken over or reaped.
    pub deployment_id: String,
    /// How long a JobActor waits for the recorded host of an execution whose container may exist
    /// there to answer, measured from the execution's last write, before it fails the execution
    /// rather than place it elsewhere (`CONTAINER_LOOKUP_TIMEOUT_SECONDS`).
    pub container_lookup_limit: std::time::Duration,
    /// How often the reaper removes this deployment's containers no unfinished execution owns
    /// (`None`: never).
    pub reaper_interval: Option<std::time::Duration>,
    /// How old a container must be before the reaper may remove it: a younger one may be between
    /// its creation and the write that records it.
    pub reaper_grace: std::time::Duration,
    /// The longest SIGTERM → SIGKILL delay a job's `stopGracePeriodSeconds` may ask for
    /// (`STOP_GRACE_PERIOD_MAX_SECONDS`).
    pub max_stop_grace: std::time::Duration,
    /// What retention keeps and how often it runs (`EXECUTIONS_KEPT_PER_JOB`,
    /// `EXECUTION_RETENTION_SECONDS`, `RETENTION_INTERVAL_SECONDS`).
    pub retention: retention::Retention,
}

/// Timeout of an actor call made by the gateway or between actors, in milliseconds.
pub const CALL_TIMEOUT_MS: u64 = 10_000;
