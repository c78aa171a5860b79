//! Messages of the node's long-lived actors: the root (supervision), the poller (leases), the
//! scheduler (firings), the gate (farm and task slots) and the notifier (webhooks, e-mails),
//! with their registered names and send helpers.

use super::host::{HostMessage, HostStatus};
use super::job::JobMessage;
use crate::ports::Delivery;
use fastlane_proto::{Job, Timestamp};
use ractor::{ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

/// The long-lived children the RootActor restarts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Api,
    Poller,
    Scheduler,
    Gate,
    Notifier,
    /// The HostActor of the configured host with this index.
    Host(usize),
}

/// Messages of the RootActor.
pub enum RootMessage {
    /// Run a leased message in a new JobActor.
    SpawnJob(Delivery),
    /// Start a long-lived child again (after a failure), `attempt` counting from 1.
    Respawn { child: ChildKind, attempt: u32 },
    /// The status of every HostActor, for `/status/`.
    HostStatuses(RpcReplyPort<Vec<HostStatus>>),
    /// The HostActor of `host:port`, if configured.
    HostFor {
        host: String,
        port: u16,
        reply: RpcReplyPort<Option<ActorRef<HostMessage>>>,
    },
    /// The node is stopping: children that end from now on are not restarted.
    PrepareShutdown(RpcReplyPort<()>),
}

/// The registered name of the poller, so producers can wake it.
pub const POLLER_NAME: &str = "fastlane-poller";

/// Messages of the PollerActor.
pub enum PollerMessage {
    /// Look at the queue now (the tick: delayed messages, expired leases).
    Poll,
    /// New messages were pushed ([`wake_poller`]; several pushes send one `Wake`).
    Wake,
    /// A JobActor is done with this message (acknowledged or released).
    Finished { message_id: String },
    /// Extend the leases of the messages in flight.
    Renew,
    /// How many of the messages in flight wait parked at the gate for slots: they do not
    /// count against `max_in_flight` (the gate bounds them), so they never hold back other work.
    Parked { count: usize },
}

/// Whether a `Wake` is on its way to the poller: wake-ups between two polls are one (a POST
/// flood of 1 200 jobs/s queued as many polls, each leasing work the full gate gave back, and
/// the starts waited behind them).
pub(crate) static WAKE_PENDING: AtomicBool = AtomicBool::new(false);

/// Wakes the poller, if it is running, to look at the queue now; a wake-up already on its way
/// serves.
pub fn wake_poller() {
    if WAKE_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let sent = ractor::registry::where_is(POLLER_NAME)
        .is_some_and(|poller| poller.send_message(PollerMessage::Wake).is_ok());
    if !sent {
        WAKE_PENDING.store(false, Ordering::Release);
    }
}

/// Tells the poller, if it is running, how many JobActors wait parked at the gate.
pub fn tell_poller_parked(count: usize) {
    if let Some(poller) = ractor::registry::where_is(POLLER_NAME) {
        let _ = poller.send_message(PollerMessage::Parked { count });
    }
}

/// The registered name of the scheduler.
pub const SCHEDULER_NAME: &str = "fastlane-scheduler";

/// Messages of the SchedulerActor.
pub enum SchedulerMessage {
    /// The job's schedule changed: fire it at `next`, replacing any previous entry.
    Schedule {
        job_id: Uuid,
        task_id: String,
        next: Timestamp,
    },
    /// The job has no schedule any more.
    Unschedule { job_id: Uuid },
    /// Fire what is due (its timers).
    Tick,
    /// Learn from the store what is due soon: schedules created or moved by other nodes.
    Sync,
    /// The number of scheduled jobs and the earliest firing.
    Next(RpcReplyPort<(usize, Option<Timestamp>)>),
}

/// Tells the scheduler (if running) that `job`'s schedule changed in the store.
pub fn schedule_changed(job: &Job) {
    let Some(scheduler) = ActorRef::<SchedulerMessage>::where_is(SCHEDULER_NAME) else {
        return;
    };
    let message = match job.attention_at() {
        Some(next) => SchedulerMessage::Schedule {
            job_id: job.job_id,
            task_id: job.task_id.clone(),
            next,
        },
        None => SchedulerMessage::Unschedule { job_id: job.job_id },
    };
    let _ = scheduler.cast(message);
}

/// The registered name of the gate.
pub const GATE_NAME: &str = "fastlane-gate";

/// Messages of the GateActor.
pub enum GateMessage {
    /// `job` waits for one slot of each `(pool, limit)`; `holder` is its message id.
    Acquire {
        holder: String,
        pools: Vec<(String, u32)>,
        job: ActorRef<JobMessage>,
    },
    /// `holder` is done: forget it and give its slots back.
    Release { holder: String },
    /// Try the waiters again (its timer: slots freed by expired leases or other nodes).
    Tick,
}

/// Asks the gate for `pools` on behalf of `job`; `false` when the gate is not running.
pub fn request_slots(holder: &str, pools: Vec<(String, u32)>, job: ActorRef<JobMessage>) -> bool {
    match ActorRef::<GateMessage>::where_is(GATE_NAME) {
        Some(gate) => gate
            .cast(GateMessage::Acquire {
                holder: holder.to_string(),
                pools,
                job,
            })
            .is_ok(),
        None => false,
    }
}

/// Tells the gate `holder` is done with its slots.
pub fn slots_done(holder: &str) {
    if let Some(gate) = ActorRef::<GateMessage>::where_is(GATE_NAME) {
        let _ = gate.cast(GateMessage::Release {
            holder: holder.to_string(),
        });
    }
}

/// The registered name of the notifier.
pub const NOTIFIER_NAME: &str = "fastlane-notifier";

/// Messages of the NotifierActor. What is owed is in the store (the outbox, written with the
/// status); `Started` and `Ended` only wake the notifier so it delivers without waiting for its
/// next round.
pub enum NotifierMessage {
    /// The notifier's periodic round (skipped when a round ended moments ago, so ticks queued
    /// behind a slow round do not run one round each).
    Tick,
    /// Deliver what is due now (a retry whose back-off just ran out).
    Deliver,
    Started {
        task_id: String,
        job_id: Uuid,
        execution_id: Uuid,
    },
    Ended {
        task_id: String,
        job_id: Uuid,
        execution_id: Uuid,
    },
}

/// Tells the notifier (if running) about an execution.
pub fn tell_notifier(message: NotifierMessage) {
    if let Some(notifier) = ActorRef::<NotifierMessage>::where_is(NOTIFIER_NAME) {
        let _ = notifier.cast(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wake-up with no poller to take it is not pending: the next poller gets the next one.
    #[test]
    fn a_wake_up_nobody_took_is_not_pending() {
        wake_poller();
        assert!(!WAKE_PENDING.load(Ordering::Acquire));
    }
}
