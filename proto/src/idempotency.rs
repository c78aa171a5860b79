//! Idempotent submits: a `POST /tasks/{task}/` with an `Idempotency-Key` header creates its job
//! once. The first request with a key records it (with the body's digest and the id of the job it
//! is about to create) before creating anything; a repeat with the same body answers the first
//! answer again, one with another body is refused (409). Records live for
//! `IDEMPOTENCY_KEY_TTL_SECONDS`, in the store, so every node of a deployment sees them.

use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest key accepted.
pub const MAX_KEY_LENGTH: usize = 255;

/// One key of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The task posted to.
    pub task_id: String,
    /// The `Idempotency-Key` header.
    pub key: String,
    /// SHA-256 of the request body, in hex.
    pub body_sha256: String,
    /// The job the first request creates.
    pub job_id: Uuid,
    /// What the first request answered, once it has.
    pub answer: Option<IdempotentAnswer>,
    /// When the first request came.
    pub created_at: Timestamp,
    /// From then on the key may be used again.
    pub expires_at: Timestamp,
}

/// The parts of an enqueue answer beyond the job's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentAnswer {
    /// The execution created (none for a scheduled job).
    pub execution_id: Option<Uuid>,
    /// The queue message (`queueJobId`).
    pub queue_message_id: String,
}

/// Whether `key` is acceptable: 1 to [`MAX_KEY_LENGTH`] visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("order-42/attempt"));
        assert!(valid_key(&"k".repeat(MAX_KEY_LENGTH)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LENGTH + 1)));
        assert!(!valid_key("has space"));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("é"));
    }
}
