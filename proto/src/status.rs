//! Execution statuses and the transitions allowed between them.

use serde::{Deserialize, Serialize};

/// Where an execution is in its life. Serialized lower-case, as the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Waiting in the queue for a free slot on its farm.
    Enqueued,
    /// Placed on a host, which is pulling the image; no container exists yet.
    Pulling,
    /// The container runs.
    Running,
    /// The container exited with code 0.
    Done,
    /// The container exited non-zero, or the execution could not be started; may be retried.
    Failed,
    /// Ended by the node because it ran past the job's timeout.
    Timedout,
    /// Never started because its `expiration` had passed when it left the queue.
    Expired,
    /// Ended early on request: the stop or retry routes, or a cron firing with `overlap: replace`.
    Stopped,
}

impl ExecutionStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExecutionStatus; 8] = [
        Self::Enqueued,
        Self::Pulling,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Timedout,
        Self::Expired,
        Self::Stopped,
    ];

    /// The lower-case name used in JSON and in the stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueued => "enqueued",
            Self::Pulling => "pulling",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Timedout => "timedout",
            Self::Expired => "expired",
            Self::Stopped => "stopped",
        }
    }

    /// The status named by `text` (exact lower-case name), `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Timedout | Self::Expired | Self::Stopped
        )
    }

    /// Whether the output routes should answer an empty body (the container has not finished).
    /// Unlike the original, `pulling` counts as unfinished too.
    pub fn output_pending(self) -> bool {
        matches!(self, Self::Enqueued | Self::Pulling | Self::Running)
    }

    /// The transitions an execution may take. Terminal states are final; a status may be
    /// re-stored as itself (idempotent writes after a crash); `pulling` may go back to
    /// `enqueued` when its host failed before a container existed.
    pub fn can_become(self, next: ExecutionStatus) -> bool {
        use ExecutionStatus::*;
        if self == next {
            return !self.is_terminal();
        }
        match self {
            Enqueued => true,
            Pulling => true,
            Running => next.is_terminal(),
            _ => false,
        }
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus::*;
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for terminal in [Done, Failed, Timedout, Expired, Stopped] {
            for next in ExecutionStatus::ALL {
                assert!(!terminal.can_become(next), "{terminal} -> {next}");
            }
        }
    }

    #[test]
    fn lifecycle_moves_forward() {
        assert!(Enqueued.can_become(Pulling));
        assert!(Pulling.can_become(Running));
        assert!(Running.can_become(Done));
        assert!(Enqueued.can_become(Expired));
        assert!(!Running.can_become(Pulling));
        assert!(Pulling.can_become(Enqueued));
        assert!(!Running.can_become(Enqueued));
    }

    #[test]
    fn parse_round_trips() {
        for status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ExecutionStatus::parse("nope"), None);
    }
}
