//! The JobActor's messages: its own steps, its HostActor's progress reports, stops and the
//! gate's grant.

use crate::ports::{ContainerExit, FoundContainer, RuntimeError, StartedContainer};
use uuid::Uuid;

/// Messages of the JobActor.
#[derive(Debug)]
pub enum JobMessage {
    /// Look at the execution and start, re-attach or finish it.
    Begin,
    ImageReady {
        warnings: Vec<String>,
    },
    Started(StartedContainer),
    Exited(ContainerExit),
    Failed(RuntimeError),
    /// The answer of the host asked to look for the execution's container by name.
    Found(Result<Option<FoundContainer>, RuntimeError>),
    /// Stop the execution (user request, replaced by a newer firing, …).
    Stop {
        reason: String,
    },
    /// The execution's timeout passed.
    Timeout,
    /// Look whether another node ended the execution (a stop request it received).
    CheckStore,
    /// The gate granted the execution's farm and task slots.
    SlotsGranted,
    /// Still waiting for slots: ask the gate again (it may have restarted).
    AskSlotsAgain,
    /// The gate will not park this execution (its pool has enough waiters on this node): give
    /// the message back to the queue for a later delivery and leave.
    SlotsRefused,
    /// The poller's renewal found the message's lease gone (taken by another node after this
    /// one was paused past it): stop working on the execution, leave its container alone.
    LeaseLost,
}

/// The stop reason of a JobActor that left because its lease or its claim on the execution
/// is gone: the RootActor neither releases its slots nor fails its message, which another
/// runner holds now.
pub const LEFT_TO_ANOTHER_RUNNER: &str = "left to another runner";

/// The registered name of the JobActor of `execution_id`.
pub fn job_actor_name(execution_id: Uuid) -> String {
    format!("job-{execution_id}")
}
