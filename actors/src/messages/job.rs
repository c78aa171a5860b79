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
}

/// The registered name of the JobActor of `execution_id`.
pub fn job_actor_name(execution_id: Uuid) -> String {
    format!("job-{execution_id}")
}
