//! NotifierActor: tells the outside world about executions: webhooks and e-mails. Started and
//! restarted by the RootActor, registered under [`NOTIFIER_NAME`].
//!
//! In: `Started` and `Ended` (from JobActors). Out: webhook calls and e-mails, each in its own
//! task; every webhook attempt is recorded on the execution (`webhookDispatch`).
//!
//! Which lists apply: `starts` when the container started; `succeeds` + `finishes` for `done`;
//! `fails` + `finishes` for `failed`, `timedout` and `expired` (also when nothing ever ran: a pull
//! error, no host); `finishes` only for `stopped`. The original sent nothing for failures before
//! a container started, and no start hooks (its bug 29).

use crate::messages::NotifierMessage;
use crate::ports::{
    Email, ExecutionTail, WebhookError, WebhookRequest, WebhookResponse, WEBHOOK_BODY_LIMIT,
};
use crate::Services;
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::model::WEBHOOK_DISPATCH_KEPT;
use fastlane_proto::redact::redact_url;
use fastlane_proto::{views, webhook, Execution, ExecutionStatus, Job, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

pub struct NotifierActor;

/// Timeout of one webhook call.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// E-mail attempts when the SMTP server is unreachable, and their back-off.
const EMAIL_ATTEMPTS: u32 = 5;
const EMAIL_BACKOFF_MIN_MS: u64 = 1_000;

impl Actor for NotifierActor {
    type Msg = NotifierMessage;
    type State = Services;
    type Arguments = Services;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMessage>,
        services: Services,
    ) -> Result<Services, ActorProcessingErr> {
        Ok(services)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMessage>,
        message: NotifierMessage,
        services: &mut Services,
    ) -> Result<(), ActorProcessingErr> {
        let (task_id, job_id, execution_id, started) = match message {
            NotifierMessage::Started {
                task_id,
                job_id,
                execution_id,
            } => (task_id, job_id, execution_id, true),
            NotifierMessage::Ended {
                task_id,
                job_id,
                execution_id,
            } => (task_id, job_id, execution_id, false),
        };
        let services = services.clone();
        tokio::spawn(async move {
            if let Err(error) = send_owed(&services, &task_id, job_id, execution_id, started).await
            {
                tracing::warn!(%execution_id, %error, "could not send notifications");
            }
        });
        Ok(())
    }
}

/// The lists (`starts`, `succeeds`, `fails`, `finishes`) that apply.
fn lists_for(started: bool, status: ExecutionStatus) -> &'static [&'static str] {
    if started {
        return &["starts"];
    }
    match status {
        ExecutionStatus::Done => &["succeeds", "finishes"],
        ExecutionStatus::Failed | ExecutionStatus::Timedout | ExecutionStatus::Expired => {
            &["fails", "finishes"]
        }
        ExecutionStatus::Stopped => &["finishes"],
        _ => &[],
    }
}

/// Sends what the execution's outcome makes owed: the webhooks and e-mails of each list that
/// applies, each in a task of its own.
async fn send_owed(
    services: &Services,
    task_id: &str,
    job_id: Uuid,
    execution_id: Uuid,
    started: bool,
) -> Result<(), crate::ports::StoreError> {
    let Some(job) = services.store.get_job(task_id, job_id).await? else {
        return Ok(());
    };
    // Bodies and e-mails carry the ends of the outputs with links to the rest, never whole ones.
    let max_bytes = Some(services.settings.job_details_output_max_bytes);
    let Some(execution) = services
        .store
        .get_execution_tail(execution_id, max_bytes)
        .await?
    else {
        return Ok(());
    };
    for list in lists_for(started, execution.execution.status) {
        for hook in job
            .metadata
            .webhooks
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (services, job, execution, hook) = (
                services.clone(),
                job.clone(),
                execution.clone(),
                hook.clone(),
            );
            tokio::spawn(async move { send_webhook(&services, &job, &execution, &hook).await });
        }
        if started {
            continue;
        }
        for address in job
            .metadata
            .emails
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(address) = address.as_str().map(str::to_string) else {
                continue;
            };
            let email = email(services, &job, &execution, list, address);
            let services = services.clone();
            tokio::spawn(async move { send_email(&services, email).await });
        }
    }
    Ok(())
}

/// One hook: up to `retries + 1` attempts, `WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS × FACTOR^k`
/// apart; each attempt recorded on the execution. A refused hook (a method or header the rules
/// forbid, for jobs stored before they existed, or a destination the webhook client refuses) is
/// recorded once with its reason and not retried: nothing would change on the next attempt.
async fn send_webhook(services: &Services, job: &Job, tail: &ExecutionTail, hook: &Value) {
    let execution = &tail.execution;
    let Some(hook) = hook.as_object() else {
        return;
    };
    let Some(url) = hook.get("url").and_then(Value::as_str) else {
        return;
    };
    let retries = hook
        .get("retries")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(20) as u32;
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
        record_attempt(services, execution, &request, 0, &Err(refusal)).await;
        return;
    }
    let settings = &services.settings;
    for attempt in 0..=retries {
        if attempt > 0 {
            let delay = capped_exponential(
                settings.webhook_backoff_min_ms,
                settings.webhook_backoff_factor,
                attempt - 1,
                3_600_000,
            );
            tokio::time::sleep(delay).await;
        }
        let outcome = services.webhooks.send(&request).await;
        record_attempt(services, execution, &request, attempt, &outcome).await;
        match &outcome {
            Ok(response) if response.status < 400 => return,
            Err(WebhookError::Refused(reason)) => {
                tracing::warn!(url = %redact_url(&request.url), %reason, "webhook refused");
                return;
            }
            _ => {
                tracing::info!(url = %redact_url(&request.url), attempt = attempt + 1, "webhook attempt failed")
            }
        }
    }
}

/// Appends one attempt to the execution's `webhookDispatch`: the status code and the beginning
/// of the answer, or the error (with `refused: true` when the call was refused).
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
        "attempt": attempt + 1,
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

fn email(services: &Services, job: &Job, tail: &ExecutionTail, list: &str, to: String) -> Email {
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
    }
}

async fn send_email(services: &Services, email: Email) {
    if !services.mailer.configured() {
        tracing::warn!("SMTP_HOST, SMTP_PORT and SMTP_FROM must be configured; not sending e-mail");
        return;
    }
    for attempt in 0..EMAIL_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(capped_exponential(
                EMAIL_BACKOFF_MIN_MS,
                2.0,
                attempt - 1,
                60_000,
            ))
            .await;
        }
        match services.mailer.send(&email).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(to = %email.to, attempt = attempt + 1, %error, "could not send e-mail")
            }
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
