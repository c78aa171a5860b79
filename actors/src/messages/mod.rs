//! Every actor's messages, registered name and send helper, in one place: an actor file imports
//! these, never another actor file, so the actors form no import cycle. The messages carry
//! ractor reply ports, which is why they live in this crate and not in `proto`.
//!
//! | Actor | Messages | Registered name | Send helper |
//! |---|---|---|---|
//! | RootActor | [`RootMessage`] | (held by `run`) | — |
//! | ApiActor | [`ApiMessage`] | [`API_NAME`] | (the gateway calls it) |
//! | PollerActor | [`PollerMessage`] | [`POLLER_NAME`] | [`wake_poller`] |
//! | SchedulerActor | [`SchedulerMessage`] | [`SCHEDULER_NAME`] | [`schedule_changed`] |
//! | GateActor | [`GateMessage`] | [`GATE_NAME`] | [`request_slots`], [`slots_done`] |
//! | NotifierActor | [`NotifierMessage`] | [`NOTIFIER_NAME`] | [`tell_notifier`] |
//! | HostActor | [`HostMessage`] | (refs held by root and JobActors) | — |
//! | JobActor | [`JobMessage`] | [`job_actor_name`] | — |
//!
//! A send helper looks the actor up in ractor's registry and does nothing when it is not running
//! (being restarted, or not started in a test): each caller's own timers or the periodic sweeps
//! recover what such a lost message would have done.

mod api;
mod host;
mod job;
mod node;

pub use api::{
    ApiError, ApiMessage, ApiResult, Enqueued, ExecutionLookup, Health, Idempotency, JobView,
    NodeStatus, ScheduledJob, TaskDeletion, TaskView, WatchOutcome, API_NAME,
};
pub use host::{HostMessage, HostStatus, LogWatch};
pub use job::{job_actor_name, JobMessage, LEFT_TO_ANOTHER_RUNNER};
pub(crate) use node::WAKE_PENDING;
pub use node::{
    request_slots, schedule_changed, slots_done, tell_notifier, tell_poller_parked, wake_poller,
    ChildKind, GateMessage, NotifierMessage, PollerMessage, RootMessage, SchedulerMessage,
    GATE_NAME, NOTIFIER_NAME, POLLER_NAME, SCHEDULER_NAME,
};
