//! Job routes, under `/tasks/{task}/jobs/{job}/`: the job's details, `stop` and `retry`; its
//! executions' details and `stop`; the output (`stdout`, `stderr`, `logs`) of an execution or of
//! the job's last one; and the live output (`stream` page, `ws` socket, served by `stream`).

use crate::gateway::http::{percent_encode, text_response, Failure, HttpResponse};
use crate::gateway::output::{self, stored_len, Part};
use crate::gateway::render::{self, Urls};
use crate::gateway::stream::{self, Target};
use crate::gateway::{api_failure, call, ok, GatewaySettings};
use fastlane_actors::messages::{ApiMessage, ApiResult, ExecutionLookup};
use fastlane_actors::ports::OutputStream;
use fastlane_proto::ExecutionStatus;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Request, StatusCode};
use ractor::RpcReplyPort;
use std::sync::Arc;
use uuid::Uuid;

/// `GET /tasks/{task}/jobs/{job}/`.
pub(crate) async fn details(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
) -> Result<HttpResponse, Failure> {
    let not_found = || Failure::not_found("get_task", "Job not found in task.");
    let job_id = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let task_id = task_id.to_string();
    let view = call(settings, "get_task", |reply| ApiMessage::GetJob {
        task_id,
        job_id,
        reply,
    })
    .await?
    .map_err(api_failure("get_task"))?
    .ok_or_else(not_found)?;
    ok(
        settings,
        &render::job_details(&view, urls, &settings.redactor),
    )
}

/// `DELETE /tasks/{task}/jobs/{job}/`: stops the job, then removes it with its executions,
/// outputs, schedule and queue messages. A second call is 404.
pub(crate) async fn delete(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "delete_job";
    let not_found = || Failure::not_found(OPERATION, "Job not found in task.");
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let owned = task_id.to_string();
    let executions = call(settings, OPERATION, |reply| ApiMessage::DeleteJob {
        task_id: owned,
        job_id: job_uuid,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?
    .ok_or_else(not_found)?;
    ok(
        settings,
        &serde_json::json!({
            "task": {"id": task_id, "url": urls.task(task_id)},
            "job": {"id": job_uuid.to_string()},
            "deleted": true,
            "executionsDeleted": executions,
        }),
    )
}

/// `POST …/jobs/{job}/pause/` and `…/resume/`: answers the job's details as written.
pub(crate) async fn pause(
    settings: &GatewaySettings,
    urls: &Urls,
    pause: bool,
    task_id: &str,
    job_id: &str,
) -> Result<HttpResponse, Failure> {
    let operation = if pause { "pause_job" } else { "resume_job" };
    let not_found = || Failure::not_found(operation, "Job not found in task.");
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let owned = task_id.to_string();
    let found = job_found(settings, operation, |reply| ApiMessage::PauseJob {
        task_id: owned,
        job_id: job_uuid,
        pause,
        reply,
    })
    .await?;
    if !found {
        return Err(not_found());
    }
    details(settings, urls, task_id, job_id).await
}

/// What `POST …/jobs/{job}/{stop|retry}/` does to the job.
#[derive(Clone, Copy, Debug)]
pub(crate) enum JobAction {
    /// No more firings or retries; the last execution is stopped.
    Stop,
    /// Runs the job again now.
    Retry,
}

/// `…/stop/` and `…/retry/` of a job: both answer the job's links (the original's retry
/// answered 500 after doing its work, its bug 15).
pub(crate) async fn stop_or_retry(
    settings: &GatewaySettings,
    urls: &Urls,
    action: JobAction,
    task_id: &str,
    job_id: &str,
) -> Result<HttpResponse, Failure> {
    let operation = match action {
        JobAction::Stop => "stop_job",
        JobAction::Retry => "retry_job",
    };
    let not_found = || Failure::not_found(operation, "Job not found in task.");
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let owned = task_id.to_string();
    let found = match action {
        JobAction::Stop => {
            job_found(settings, operation, |reply| ApiMessage::StopJob {
                task_id: owned,
                job_id: job_uuid,
                reply,
            })
            .await?
        }
        JobAction::Retry => {
            job_found(settings, operation, |reply| ApiMessage::Retry {
                task_id: owned,
                job_id: job_uuid,
                reply,
            })
            .await?
        }
    };
    if !found {
        return Err(not_found());
    }
    ok(
        settings,
        &render::job_links(task_id, (job_id, job_uuid), urls),
    )
}

/// Sends a call about one job; `false` when the job does not exist.
async fn job_found<T: Send + 'static>(
    settings: &GatewaySettings,
    operation: &'static str,
    message: impl FnOnce(RpcReplyPort<ApiResult<Option<T>>>) -> ApiMessage,
) -> Result<bool, Failure> {
    let answer = call(settings, operation, message)
        .await?
        .map_err(api_failure(operation))?;
    Ok(answer.is_some())
}

/// The two routes of one execution, `GET …/executions/{execution}/` and `POST …/stop/`: they
/// find the execution the same way and differ in the message sent, the operation named in
/// errors, and the answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ExecutionAction {
    Show,
    Stop,
}

impl ExecutionAction {
    fn operation(self) -> &'static str {
        match self {
            ExecutionAction::Show => "get_job_execution",
            ExecutionAction::Stop => "stop_job_execution",
        }
    }

    /// How the not-found answer names the job: the original says "in job" on one route and
    /// "in Job" on the other.
    fn job_word(self) -> &'static str {
        match self {
            ExecutionAction::Show => "job",
            ExecutionAction::Stop => "Job",
        }
    }

    fn message(
        self,
        task_id: String,
        job_id: Uuid,
        execution_id: Uuid,
        reply: RpcReplyPort<ApiResult<ExecutionLookup>>,
    ) -> ApiMessage {
        match self {
            ExecutionAction::Show => ApiMessage::FindExecution {
                task_id,
                job_id,
                execution_id: Some(execution_id),
                tails: true,
                reply,
            },
            ExecutionAction::Stop => ApiMessage::StopExecution {
                task_id,
                job_id,
                execution_id,
                reply,
            },
        }
    }
}

/// Shows or stops one execution; the stop answers the links of task, job and execution.
pub(crate) async fn execution(
    settings: &GatewaySettings,
    urls: &Urls,
    action: ExecutionAction,
    task_id: &str,
    job_id: &str,
    execution_id: &str,
) -> Result<HttpResponse, Failure> {
    let operation = action.operation();
    let no_execution = || {
        Failure::not_found(
            operation,
            format!(
                "Job Execution ({execution_id}) not found in {} ({job_id}).",
                action.job_word()
            ),
        )
    };
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| no_job(operation, task_id, job_id))?;
    let execution_uuid = Uuid::parse_str(execution_id).map_err(|_| no_execution())?;
    let owned = task_id.to_string();
    let lookup = call(settings, operation, |reply| {
        action.message(owned, job_uuid, execution_uuid, reply)
    })
    .await?
    .map_err(api_failure(operation))?;
    let found = match lookup {
        ExecutionLookup::NoJob => return Err(no_job(operation, task_id, job_id)),
        ExecutionLookup::NoExecutions | ExecutionLookup::NoSuchExecution => {
            return Err(no_execution())
        }
        ExecutionLookup::Found(found) => found,
    };
    let body = match action {
        ExecutionAction::Show => render::execution_details(&found, urls),
        ExecutionAction::Stop => render::execution_links(
            task_id,
            (job_id, job_uuid),
            (execution_id, execution_uuid),
            urls,
        ),
    };
    ok(settings, &body)
}

fn no_job(operation: &'static str, task_id: &str, job_id: &str) -> Failure {
    Failure::not_found(
        operation,
        format!("Task ({task_id}) or Job ({job_id}) not found."),
    )
}

/// Which output a route serves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OutputKind {
    Stdout,
    Stderr,
    /// stdout, a `-=-` line, stderr.
    Logs,
}

/// `stdout`, `stderr` or `logs` of an execution (the job's last one when `execution_id` is
/// `None`), with the exit code in `Fastlane-Exit-Code` once there is one. The body is read from
/// the store in pieces while it is sent (`gateway/output.rs`), never whole.
pub(crate) async fn output(
    settings: &Arc<GatewaySettings>,
    output: OutputKind,
    task_id: &str,
    job_id: &str,
    execution_id: Option<&str>,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "retrieve_execution_details";
    let no_match = || {
        Failure::invalid(
            OPERATION,
            "No executions found in job with specified arguments.",
        )
    };
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| no_job(OPERATION, task_id, job_id))?;
    let execution_uuid = execution_id
        .map(|id| Uuid::parse_str(id).map_err(|_| no_match()))
        .transpose()?;
    let owned_task = task_id.to_string();
    let lookup = call(settings, OPERATION, |reply| ApiMessage::FindExecution {
        task_id: owned_task,
        job_id: job_uuid,
        execution_id: execution_uuid,
        tails: false,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    let found = match lookup {
        ExecutionLookup::NoJob => return Err(no_job(OPERATION, task_id, job_id)),
        ExecutionLookup::NoExecutions => {
            return Err(Failure::invalid(
                OPERATION,
                format!("No executions found in job ({job_id})."),
            ))
        }
        ExecutionLookup::NoSuchExecution => return Err(no_match()),
        ExecutionLookup::Found(found) => found.execution,
    };
    let pending = found.status.output_pending() && found.status != ExecutionStatus::Done;
    let id = found.execution_id;
    let parts = match (pending, output) {
        (true, _) => Vec::new(),
        (false, OutputKind::Stdout) => vec![Part::Stored(
            OutputStream::Stdout,
            stored_len(settings, id, OutputStream::Stdout).await?,
        )],
        (false, OutputKind::Stderr) => vec![Part::Stored(
            OutputStream::Stderr,
            stored_len(settings, id, OutputStream::Stderr).await?,
        )],
        (false, OutputKind::Logs) => vec![
            Part::Stored(
                OutputStream::Stdout,
                stored_len(settings, id, OutputStream::Stdout).await?,
            ),
            Part::Fixed(b"\n-=-\n"),
            Part::Stored(
                OutputStream::Stderr,
                stored_len(settings, id, OutputStream::Stderr).await?,
            ),
        ],
    };
    let length: u64 = parts.iter().map(|part| part.len()).sum();
    let mut response = text_response(StatusCode::OK, Vec::new(), "text/plain; charset=utf-8");
    *response.body_mut() = output::body(settings.clone(), id, parts);
    // The length is known before the first piece is read: sent as it was for a whole body.
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(exit_code) = found.exit_code {
        response
            .headers_mut()
            .insert("fastlane-exit-code", HeaderValue::from(exit_code));
    }
    Ok(response)
}

fn target(task_id: &str, job_id: &str, execution_id: Option<&str>) -> Target {
    Target {
        task_id: task_id.to_string(),
        job_id: job_id.to_string(),
        execution_id: execution_id.map(str::to_string),
    }
}

/// `…/stream/`: the page that shows the live output of the `ws` route beside it.
pub(crate) fn stream_page(task_id: &str, job_id: &str, execution_id: Option<&str>) -> HttpResponse {
    let mut ws_path = format!(
        "/tasks/{}/jobs/{}/",
        percent_encode(task_id),
        percent_encode(job_id)
    );
    if let Some(execution_id) = execution_id {
        ws_path.push_str(&format!("executions/{}/", percent_encode(execution_id)));
    }
    ws_path.push_str("ws/");
    stream::page(&target(task_id, job_id, execution_id), &ws_path)
}

/// `…/ws/`: the WebSocket handshake; the socket is served in its own task.
pub(crate) fn websocket(
    settings: &Arc<GatewaySettings>,
    request: Request<Incoming>,
    task_id: &str,
    job_id: &str,
    execution_id: Option<&str>,
) -> HttpResponse {
    stream::accept(
        settings.clone(),
        request,
        target(task_id, job_id, execution_id),
    )
}
