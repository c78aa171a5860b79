//! The public JSON of an execution, shared by the API and the webhooks (field names of the
//! original: `executionId`, `exitCode`, …; output as text, bytes that are not UTF-8 as U+FFFD).

use crate::model::{Execution, Job};
use crate::redact::redact_url;
use crate::timestamp::Timestamp;
use serde_json::{json, Value};

/// A timestamp as ISO text, or null.
pub fn iso(timestamp: Option<Timestamp>) -> Value {
    timestamp.map_or(Value::Null, |timestamp| Value::String(timestamp.iso()))
}

fn text(output: &Option<Vec<u8>>) -> Value {
    output.as_ref().map_or(Value::Null, |bytes| {
        Value::String(String::from_utf8_lossy(bytes).into_owned())
    })
}

/// An execution as the API shows it; the URLs of its webhook attempts lose their query values
/// (`redact::redact_url`), since this view also goes into e-mails and webhook bodies.
pub fn execution(execution: &Execution) -> Value {
    let mut metadata = serde_json::to_value(&execution.metadata).unwrap_or_default();
    if let Some(dispatch) = metadata
        .get_mut("webhookDispatch")
        .and_then(Value::as_array_mut)
    {
        for entry in dispatch {
            let Some(url) = entry.get("url").and_then(Value::as_str).map(String::from) else {
                continue;
            };
            let shown = redact_url(&url);
            entry["url"] = Value::String(shown.clone());
            // HTTP client errors quote the URL they failed on.
            if let Some(Value::String(error)) = entry.get_mut("error") {
                *error = error.replace(&url, &shown);
            }
        }
    }
    json!({
        "executionId": execution.execution_id.to_string(),
        "createdAt": execution.created_at.iso(),
        "requestIPAddress": execution.request_ip,
        "startedAt": iso(execution.started_at),
        "finishedAt": iso(execution.finished_at),
        "image": execution.image,
        "command": execution.command,
        "metadata": metadata,
        "status": execution.status.as_str(),
        "exitCode": execution.exit_code,
        "log": text(&execution.log),
        "error": text(&execution.error),
    })
}

/// The body of a webhook: the execution, without its dispatch records, with the job's custom
/// metadata under `metadata.custom`, and the job id as `job_id` (as the original).
pub fn webhook_payload(execution_record: &Execution, job: &Job) -> Value {
    let mut payload = execution(execution_record);
    if let Some(metadata) = payload["metadata"].as_object_mut() {
        metadata.remove("webhookDispatch");
        metadata.insert(
            "custom".into(),
            Value::Object(job.metadata.custom.clone().unwrap_or_default()),
        );
    }
    payload["job_id"] = Value::String(job.job_id.to_string());
    payload
}

/// Marks the outputs of `view` (an [`execution`]) that hold only their ends, as job details
/// do (`logTruncated`, `errorTruncated`), and links each to its whole output route under
/// `execution_url` (`logUrl` → `…/stdout/`, `errorUrl` → `…/stderr/`). Outputs that are whole
/// keep the original's shape.
pub fn mark_cut_outputs(view: &mut Value, execution_url: &str, log_cut: bool, error_cut: bool) {
    if log_cut {
        view["logTruncated"] = Value::Bool(true);
        view["logUrl"] = Value::String(format!("{execution_url}stdout/"));
    }
    if error_cut {
        view["errorTruncated"] = Value::Bool(true);
        view["errorUrl"] = Value::String(format!("{execution_url}stderr/"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_outputs_are_flagged_and_linked() {
        let mut view = json!({"log": "end", "error": "whole"});
        mark_cut_outputs(
            &mut view,
            "http://h/tasks/t/jobs/j/executions/e/",
            true,
            false,
        );
        assert_eq!(view["logTruncated"], true);
        assert_eq!(
            view["logUrl"],
            "http://h/tasks/t/jobs/j/executions/e/stdout/"
        );
        assert!(view.get("errorTruncated").is_none() && view.get("errorUrl").is_none());
    }
}
