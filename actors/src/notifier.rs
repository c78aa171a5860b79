//! NotifierActor: tells the outside world about executions: webhooks and e-mails. Started and
//! restarted by the RootActor, registered under [`NOTIFIER_NAME`](crate::messages::NOTIFIER_NAME).
//!
//! What is owed is not kept here but in the store: the write that records an execution's status
//! records the deliveries it makes owed (the outbox, `fastlane_proto::outbox`). The notifier
//! delivers what is due, in rounds: every [`ROUND_INTERVAL`], and when a JobActor or a sweep
//! wakes it (`Started`, `Ended`). A round reads up to [`OUTBOXES_PER_ROUND`] due outboxes, claims
//! their due deliveries (each claim counts an attempt and moves the delivery's due time
//! [`CLAIM_FOR`] ahead, by a compare-and-set on the outbox version, so another node does not send
//! it meanwhile), sends them in tasks (at most [`MAX_SENDING`] at once), records every webhook
//! attempt on the execution (`webhookDispatch`) and settles each delivery: delivered, abandoned
//! (refused, out of attempts), or due again after the back-off. A crash between claim and
//! settlement sends again once the claim runs out: at-least-once, each webhook call carrying its
//! stable `Fastlane-Delivery-Id` so receivers can drop duplicates.
//!
//! Which lists apply (`fastlane_proto::outbox::lists_for`): `starts` when the container started;
//! `succeeds` + `finishes` for `done`; `fails` + `finishes` for `failed`, `timedout` and
//! `expired` (also when nothing ever ran: a pull error, no host); `finishes` only for `stopped`.
//! The original sent nothing for failures before a container started, and no start hooks (its
//! bug 29).

use crate::messages::{tell_notifier, NotifierMessage};
use crate::ports::{
    Email, ExecutionTail, WebhookError, WebhookRequest, WebhookResponse, WEBHOOK_BODY_LIMIT,
};
use crate::Services;
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::model::WEBHOOK_DISPATCH_KEPT;
use fastlane_proto::outbox::{NotificationKind, Outbox, OwedNotification};
use fastlane_proto::redact::redact_url;
use fastlane_proto::{views, webhook, Execution, Job, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

pub struct NotifierActor;

/// Timeout of one webhook call.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off of e-mail attempts.
const EMAIL_BACKOFF_MIN_MS: u64 = 1_000;
const EMAIL_BACKOFF_MAX_MS: u64 = 60_000;
/// Longest wait between two webhook attempts, whatever the configured back-off.
const WEBHOOK_BACKOFF_MAX_MS: u64 = 3_600_000;
/// How often the notifier looks for due deliveries without being woken (retries, deliveries
/// left by a node that died, another node's executions).
pub const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// Wake-ups (an execution started or ended) closer than this to the end of the last round are
/// left to the next periodic one, so a burst of finishing executions costs a few store reads,
/// not one per execution.
const MIN_ROUND_GAP: Duration = Duration::from_millis(200);
/// Outboxes read by one round.
pub const OUTBOXES_PER_ROUND: usize = 16;
/// Deliveries being sent at once by this node.
pub const MAX_SENDING: usize = 64;
/// How long a claimed delivery is left to its sender before anyone may try it again (also how
/// long a delivery claimed by a node that died waits): reading the job and execution and the
/// call must fit in it, less [`CLAIM_MARGIN`], or they are given up as a failed attempt.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// Retries due sooner than this wake the notifier at their due time; later ones are found by
/// the periodic rounds (a second late at most).
const PROMPT_RETRY_BELOW: Duration = Duration::from_secs(10);
/// Sending stops this long before a claim runs out, so that a delivery is never being sent by
/// its claimant when another node may claim it.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// Claims beyond a delivery's attempts allowed for claims that were never settled (the sender
/// died mid-call: whether the call was made is unknown, so it is made again).
pub const UNSETTLED_CLAIMS: u32 = 2;
/// Compare-and-set tries to settle a delivery against concurrent changes of its outbox.
const SETTLE_TRIES: u32 = 8;

/// The notifier's state: the services, the permits of deliveries in flight, the periodic round.
pub struct NotifierState {
    services: Services,
    sending: Arc<Semaphore>,
    /// When the last round ended.
    last_round: Option<Instant>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Actor for NotifierActor {
    type Msg = NotifierMessage;
    type State = NotifierState;
    type Arguments = Services;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMessage>,
        services: Services,
    ) -> Result<NotifierState, ActorProcessingErr> {
        // The first round runs at once: a node that starts delivers what is owed.
        let ticker = tokio::spawn(async move {
            while myself.cast(NotifierMessage::Tick).is_ok() {
                tokio::time::sleep(ROUND_INTERVAL).await;
            }
        });
        Ok(NotifierState {
            services,
            sending: Arc::new(Semaphore::new(MAX_SENDING)),
            last_round: None,
            ticker,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NotifierMessage>,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMessage>,
        message: NotifierMessage,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        let gap = match message {
            NotifierMessage::Deliver => Duration::ZERO,
            NotifierMessage::Tick => ROUND_INTERVAL / 2,
            NotifierMessage::Started { .. } | NotifierMessage::Ended { .. } => MIN_ROUND_GAP,
        };
        if state.last_round.is_some_and(|ended| ended.elapsed() < gap) {
            return Ok(());
        }
        if let Err(error) = state.round().await {
            tracing::warn!(%error, "could not read the notifications due");
        }
        state.last_round = Some(Instant::now());
        Ok(())
    }
}

impl NotifierState {
    /// One round: claims what is due (as many deliveries as there are free sending permits)
    /// and sends each claimed outbox's deliveries in a task.
    async fn round(&mut self) -> Result<(), crate::ports::StoreError> {
        if self.sending.available_permits() == 0 {
            return Ok(());
        }
        let now = Timestamp::now();
        let store = &self.services.store;
        for mut outbox in store.due_outboxes(now, OUTBOXES_PER_ROUND).await? {
            let claim_until = later(now, CLAIM_FOR);
            let mut claimed = Vec::new();
            for entry in outbox.entries.iter_mut().filter(|entry| entry.is_due(now)) {
                // Due with no attempts left: claimed by senders that never settled it (crashes).
                // Re-sent a bounded number of times (at-least-once), then abandoned, so that a
                // delivery that crashes its sender cannot loop.
                if entry.attempts >= entry.max_attempts + UNSETTLED_CLAIMS {
                    entry.next_at = None;
                    entry.outcome = Some("abandoned: no attempts left".into());
                    continue;
                }
                let Ok(permit) = self.sending.clone().try_acquire_owned() else {
                    break;
                };
                entry.attempts += 1;
                entry.next_at = Some(claim_until);
                claimed.push((entry.clone(), permit));
            }
            // Also when nothing could be claimed for want of permits: nothing changes then but
            // the version. With nothing due at all, the write corrects a stale due time.
            if claimed.is_empty() && self.sending.available_permits() == 0 {
                break; // Out of permits: the rest waits for the next round.
            }
            let execution_id = outbox.execution_id;
            if !store
                .replace_outbox(execution_id, outbox.version, &outbox.entries)
                .await?
            {
                continue; // Another node claimed or settled meanwhile; the next round sees it.
            }
            if claimed.is_empty() {
                continue;
            }
            let services = self.services.clone();
            // Whatever is still being sent by then is given up, before the claim runs out and
            // another node may take the delivery.
            let deadline = tokio::time::Instant::now() + CLAIM_FOR - CLAIM_MARGIN;
            tokio::spawn(async move { deliver(services, outbox, claimed, deadline).await });
        }
        Ok(())
    }
}

/// `at` plus `delay`.
fn later(at: Timestamp, delay: Duration) -> Timestamp {
    Timestamp(at.0.saturating_add(delay.as_micros().min(i64::MAX as u128) as i64))
}

/// Sends the claimed deliveries of one outbox, concurrently, each built from the stored job and
/// execution as they are now, then settles each.
async fn deliver(
    services: Services,
    outbox: Outbox,
    claimed: Vec<(OwedNotification, OwnedSemaphorePermit)>,
    deadline: tokio::time::Instant,
) {
    let store = &services.store;
    // Bodies and e-mails carry the ends of the outputs with links to the rest, never whole ones.
    let max_bytes = Some(services.settings.job_details_output_max_bytes);
    let read = tokio::time::timeout_at(deadline, async {
        (
            store.get_job(&outbox.task_id, outbox.job_id).await,
            store
                .get_execution_tail(outbox.execution_id, max_bytes)
                .await,
        )
    });
    let Ok(read) = read.await else {
        tracing::warn!(execution_id = %outbox.execution_id, "reading what a notification is about took too long");
        return;
    };
    let found = match read {
        (Ok(Some(job)), Ok(Some(execution))) => Some((job, execution)),
        (Ok(_), Ok(_)) => None,
        (Err(error), _) | (_, Err(error)) => {
            // Left claimed: tried again when the claim runs out.
            tracing::warn!(execution_id = %outbox.execution_id, %error, "could not read what a notification is about");
            return;
        }
    };
    let Some((job, execution)) = found else {
        for (entry, _permit) in claimed {
            settle(
                &services,
                outbox.execution_id,
                &entry,
                Settled::Abandoned("the job or execution is gone".into()),
            )
            .await;
        }
        return;
    };
    let (job, execution) = (Arc::new(job), Arc::new(execution));
    let mut sends = tokio::task::JoinSet::new();
    for (entry, permit) in claimed {
        let (services, job, execution) = (services.clone(), job.clone(), execution.clone());
        sends.spawn(async move {
            let send = async {
                match entry.kind {
                    NotificationKind::Webhook => {
                        send_webhook(&services, &job, &execution, &entry).await
                    }
                    NotificationKind::Email => {
                        send_email(&services, &job, &execution, &entry).await
                    }
                }
            };
            let settled = tokio::time::timeout_at(deadline, send)
                .await
                .unwrap_or(Settled::Failed);
            settle(&services, execution.execution.execution_id, &entry, settled).await;
            drop(permit);
        });
    }
    while sends.join_next().await.is_some() {}
}

/// How an attempt ended.
enum Settled {
    Delivered,
    /// Not worth trying again (refused, misconfigured, gone).
    Abandoned(String),
    /// Try again after the back-off, if attempts are left.
    Failed,
}

/// Records the outcome of the attempt `claimed` made: delivered or abandoned for good, or due
/// again after the back-off (abandoned once out of attempts). Written only while the delivery
/// still carries this claim (a sender that outlived its claim leaves it to the new claimant).
async fn settle(
    services: &Services,
    execution_id: Uuid,
    claimed: &OwedNotification,
    settled: Settled,
) {
    let settings = &services.settings;
    let delay = match claimed.kind {
        NotificationKind::Webhook => capped_exponential(
            settings.webhook_backoff_min_ms,
            settings.webhook_backoff_factor,
            claimed.attempts.saturating_sub(1),
            WEBHOOK_BACKOFF_MAX_MS,
        ),
        NotificationKind::Email => capped_exponential(
            EMAIL_BACKOFF_MIN_MS,
            2.0,
            claimed.attempts.saturating_sub(1),
            EMAIL_BACKOFF_MAX_MS,
        ),
    };
    let kind = match claimed.kind {
        NotificationKind::Webhook => "webhook",
        NotificationKind::Email => "email",
    };
    let (next_at, outcome) = match settled {
        Settled::Delivered => (None, Some("delivered".to_string())),
        Settled::Abandoned(reason) => (None, Some(format!("abandoned: {reason}"))),
        Settled::Failed if claimed.attempts >= claimed.max_attempts => {
            (None, Some("abandoned: no attempts left".to_string()))
        }
        Settled::Failed => (Some(later(Timestamp::now(), delay)), None),
    };
    let counted = match (&next_at, &outcome) {
        (Some(_), _) => "failed",
        (None, Some(outcome)) if outcome == "delivered" => "delivered",
        _ => "abandoned",
    };
    crate::metrics::notification(kind, counted);
    if next_at.is_some() && delay < PROMPT_RETRY_BELOW {
        // A short back-off is kept to the millisecond by waking the notifier when it is due,
        // not at its next round. Only a hint: the due time is in the store.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tell_notifier(NotifierMessage::Deliver);
        });
    }
    for _ in 0..SETTLE_TRIES {
        let outbox = match services.store.get_outbox(execution_id).await {
            Ok(Some(outbox)) => outbox,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%execution_id, %error, "could not settle a notification; it is retried when its claim runs out");
                return;
            }
        };
        let mut entries = outbox.entries;
        let Some(entry) = entries.iter_mut().find(|entry| entry.id == claimed.id) else {
            return;
        };
        if entry.next_at != claimed.next_at || entry.attempts != claimed.attempts {
            return; // Claimed again by someone else after this claim ran out.
        }
        entry.next_at = next_at;
        entry.outcome = outcome.clone();
        match services
            .store
            .replace_outbox(execution_id, outbox.version, &entries)
            .await
        {
            Ok(true) => return,
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%execution_id, %error, "could not settle a notification; it is retried when its claim runs out");
                return;
            }
        }
    }
}

/// One attempt of a hook, recorded on the execution. A refused hook (a method or header the
/// rules forbid, for jobs stored before they existed, or a destination the webhook client
/// refuses) is recorded with its reason and abandoned: nothing would change on the next attempt.
async fn send_webhook(
    services: &Services,
    job: &Job,
    tail: &ExecutionTail,
    entry: &OwedNotification,
) -> Settled {
    let execution = &tail.execution;
    let Some(hook) = entry.target.as_object() else {
        return Settled::Abandoned("the hook is not an object".into());
    };
    let Some(url) = hook.get("url").and_then(Value::as_str) else {
        return Settled::Abandoned("the hook has no url".into());
    };
    let mut headers: BTreeMap<String, String> = hook
        .get("headers")
        .and_then(Value::as_object)
        .map(|headers| {
            headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("content-type"))
    {
        headers.insert("Content-Type".into(), "application/json".into());
    }
    headers.retain(|name, _| !name.eq_ignore_ascii_case(DELIVERY_ID_HEADER));
    headers.insert(DELIVERY_ID_HEADER.into(), entry.id.to_string());
    let mut payload = views::webhook_payload(execution, job);
    let execution_url = execution_url(services, execution);
    views::mark_cut_outputs(&mut payload, &execution_url, tail.log_cut, tail.error_cut);
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let request = WebhookRequest {
        method: webhook::method_of(hook),
        url: url.to_string(),
        headers,
        body,
        timeout: WEBHOOK_TIMEOUT,
    };
    if let Err(error) = webhook::check_hook(hook) {
        let refusal = WebhookError::Refused(error.to_string());
        record_attempt(services, execution, &request, entry.attempts, &Err(refusal)).await;
        return Settled::Abandoned(format!("refused: {error}"));
    }
    let outcome = services.webhooks.send(&request).await;
    record_attempt(services, execution, &request, entry.attempts, &outcome).await;
    match &outcome {
        Ok(response) if response.status < 400 => Settled::Delivered,
        Err(WebhookError::Refused(reason)) => {
            tracing::warn!(url = %redact_url(&request.url), %reason, "webhook refused");
            Settled::Abandoned(format!("refused: {reason}"))
        }
        _ => {
            tracing::info!(url = %redact_url(&request.url), attempt = entry.attempts, "webhook attempt failed");
            Settled::Failed
        }
    }
}

/// The header carrying a delivery's id, the same on every attempt of it.
pub const DELIVERY_ID_HEADER: &str = "Fastlane-Delivery-Id";

/// Appends attempt number `attempt` (from 1) to the execution's `webhookDispatch`: the status
/// code and the beginning of the answer, or the error (with `refused: true` when the call was
/// refused).
async fn record_attempt(
    services: &Services,
    execution: &Execution,
    request: &WebhookRequest,
    attempt: u32,
    outcome: &Result<WebhookResponse, WebhookError>,
) {
    let mut entry = json!({
        "timestamp": Timestamp::now().iso(),
        "url": request.url,
        "method": request.method,
        "attempt": attempt,
    });
    match outcome {
        Ok(response) => {
            entry["statusCode"] = json!(response.status);
            entry["body"] = json!(cut(&response.body, WEBHOOK_BODY_LIMIT));
        }
        Err(WebhookError::Refused(reason)) => {
            entry["statusCode"] = Value::Null;
            entry["refused"] = json!(true);
            entry["error"] = json!(format!("refused: {reason}"));
        }
        Err(WebhookError::Failed(error)) => {
            entry["statusCode"] = Value::Null;
            entry["error"] = json!(error);
        }
    }
    if let Err(error) = services
        .store
        .append_webhook_dispatch(execution.execution_id, entry, WEBHOOK_DISPATCH_KEPT)
        .await
    {
        tracing::warn!(%error, "could not record webhook attempt");
    }
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a char boundary.
fn cut(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The execution's URL on the node's public address.
fn execution_url(services: &Services, execution: &Execution) -> String {
    format!(
        "{}/tasks/{}/jobs/{}/executions/{}/",
        services.settings.public_url, execution.task_id, execution.job_id, execution.execution_id
    )
}

fn email(
    services: &Services,
    job: &Job,
    tail: &ExecutionTail,
    entry: &OwedNotification,
    to: String,
) -> Email {
    let list = entry.list.as_str();
    let execution = &tail.execution;
    let who = format!("{}/{}", job.task_id, job.job_id);
    let outcome = match execution.exit_code {
        Some(code) => format!("exit code {code}"),
        None => format!("status {}", execution.status),
    };
    let subject = match list {
        "succeeds" => format!("[Fastlane] Job {who} succeeded!"),
        "fails" => format!("[Fastlane] Job {who} failed with {outcome}!"),
        _ => format!("[Fastlane] Job {who} finished with {outcome}!"),
    };
    let base = &services.settings.public_url;
    let task_url = format!("{base}/tasks/{}/", job.task_id);
    let job_url = format!("{task_url}jobs/{}/", job.job_id);
    let mut details = views::execution(execution);
    let execution_url = execution_url(services, execution);
    views::mark_cut_outputs(&mut details, &execution_url, tail.log_cut, tail.error_cut);
    if let Some(envs) = details["metadata"].get_mut("envs") {
        *envs = Value::Null;
    }
    let details = serde_json::to_string_pretty(&details).unwrap_or_default();
    let escaped = details
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Email {
        to,
        text: format!("\nAutomatic message. Please do not reply to this!\n\nJob Details:\n{details}\n\nTask: {task_url}\nJob: {job_url}\n"),
        html: format!(
            "<h2>Job Details:</h2><div><pre><code>{escaped}</code></pre></div><hr>\
             <a href=\"{task_url}\">[View Task Details]</a> | <a href=\"{job_url}\">[View Job Details]</a><hr>\
             <p>Automatic message. Please do not reply to this!</p>"
        ),
        subject,
        delivery_id: entry.id.to_string(),
    }
}

/// One attempt of an e-mail.
async fn send_email(
    services: &Services,
    job: &Job,
    execution: &ExecutionTail,
    entry: &OwedNotification,
) -> Settled {
    if !services.mailer.configured() {
        tracing::warn!("SMTP_HOST, SMTP_PORT and SMTP_FROM must be configured; not sending e-mail");
        return Settled::Abandoned("SMTP is not configured".into());
    }
    let Some(address) = entry.target.as_str() else {
        return Settled::Abandoned("the recipient is not a string".into());
    };
    let email = email(services, job, execution, entry, address.to_string());
    match services.mailer.send(&email).await {
        Ok(()) => Settled::Delivered,
        Err(error) => {
            tracing::warn!(to = %email.to, attempt = entry.attempts, %error, "could not send e-mail");
            Settled::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_whole_chars() {
        assert_eq!(cut("abc", 1024), "abc");
        assert_eq!(cut("abc", 2), "ab");
        // 'é' is two bytes: a cut through it keeps the bytes before it.
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("", 0), "");
    }
}
