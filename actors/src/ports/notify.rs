//! The notification ports: webhooks, e-mail, and the error tracker.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

/// One webhook call.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRequest {
    /// The hook's `method`, upper-cased; `POST` when absent.
    pub method: String,
    /// The hook's `url`.
    pub url: String,
    /// The hook's `headers`, with `Content-Type: application/json` added unless given.
    pub headers: BTreeMap<String, String>,
    /// The execution as JSON, with the job's custom metadata (the webhook payload).
    pub body: Vec<u8>,
    /// How long one attempt waits for an answer.
    pub timeout: Duration,
}

/// How much of a webhook's answer is kept: the answers are shown by the API, and a hook that
/// reached something it should not have must not be able to read it back at length.
pub const WEBHOOK_BODY_LIMIT: usize = 1024;

/// The answer to a webhook call: its status and the beginning of its body. Redirects are not
/// followed (a 3xx is the answer) and the answer's headers are not kept.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookResponse {
    /// The HTTP status (`statusCode` in `webhookDispatch`); 400 and above fail the attempt.
    pub status: u16,
    /// At most [`WEBHOOK_BODY_LIMIT`] bytes of the body, decoded as UTF-8 (lossily).
    pub body: String,
}

/// Why a webhook call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The call was not made and never will be as the hook stands: a forbidden address or
    /// method, an unusable URL. Not retried.
    #[error("refused: {0}")]
    Refused(String),
    /// The call was made or attempted and failed (DNS, connection, timeout); retried.
    #[error("{0}")]
    Failed(String),
}

/// Sends webhooks.
#[async_trait]
pub trait WebhookClient: Send + Sync + 'static {
    /// One call. `Err(Refused)` when the destination is not allowed, without any connection to
    /// it; `Err(Failed)` when no answer came.
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, WebhookError>;
}

/// An e-mail: plain text and HTML parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// One recipient's address, from one of the job's `notify` lists.
    pub to: String,
    /// The subject line, naming the job (`task/job`) and its outcome.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
    /// The delivery's id in the outbox: the same for every attempt, on any node, so the
    /// message's `Message-ID` lets a mail system drop a repeat.
    pub delivery_id: String,
}

/// Sends e-mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Whether an SMTP server is configured at all.
    fn configured(&self) -> bool;
    /// `Err(message)`; the caller retries with back-off.
    async fn send(&self, email: &Email) -> Result<(), String>;
}

/// Reports failures to the operators' error tracker (Sentry). Must not block.
pub trait ErrorReporter: Send + Sync + 'static {
    /// `extra` carries the context: task_id, job_id, execution_id, operation, image, command.
    fn report(&self, message: &str, extra: &BTreeMap<String, String>);
}
