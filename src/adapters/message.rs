//! A queue message as the queue backends store it: its id apart (the backend's key), the rest
//! as a small JSON body. The embedded and Redis queues share this encoding and its reading, and
//! the conversion of durations to the milliseconds they count time in.

use fastlane_actors::ports::QueueMessage;
use std::time::Duration;
use uuid::Uuid;

/// What a queue stores of a message besides its id.
#[derive(serde::Serialize, serde::Deserialize)]
struct MessageBody {
    task_id: String,
    job_id: Uuid,
    execution_id: Uuid,
}

/// The body stored for `message`.
pub(crate) fn encode(message: &QueueMessage) -> Result<String, serde_json::Error> {
    serde_json::to_string(&MessageBody {
        task_id: message.task_id.clone(),
        job_id: message.job_id,
        execution_id: message.execution_id,
    })
}

/// The message stored under `id` with `body`; an error when the body cannot be read (the
/// caller dead-letters it rather than fail every lease after it).
pub(crate) fn decode(id: &str, body: &str) -> Result<QueueMessage, serde_json::Error> {
    let body: MessageBody = serde_json::from_str(body)?;
    Ok(QueueMessage {
        id: id.to_string(),
        task_id: body.task_id,
        job_id: body.job_id,
        execution_id: body.execution_id,
    })
}

/// The message of a dead letter: what can be read of it. A dead letter may be there because its
/// body was unreadable, and listing it must still work.
pub(crate) fn decode_leniently(id: &str, body: &str) -> QueueMessage {
    decode(id, body).unwrap_or_else(|_| QueueMessage {
        id: id.to_string(),
        task_id: String::new(),
        job_id: Uuid::nil(),
        execution_id: Uuid::nil(),
    })
}

/// `duration` in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}
