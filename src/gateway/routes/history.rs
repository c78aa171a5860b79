//! Execution history: `GET /tasks/{task}/jobs/{job}/executions/` (one job's) and
//! `GET /executions/` (across tasks, for operators), both filtered by `status`, `since` and
//! `until` (unix seconds or ISO 8601) and paged (`page`, `perPage`), newest first, served by
//! the store's indexes without reading outputs.

use crate::gateway::http::{percent_encode, query_param, Failure, HttpResponse};
use crate::gateway::render::{self, Urls};
use crate::gateway::{api_failure, call, ok, GatewaySettings};
use fastlane_actors::messages::ApiMessage;
use fastlane_actors::ports::{ExecutionFilter, Page};
use fastlane_proto::{ExecutionStatus, Timestamp};
use uuid::Uuid;

/// Executions per page unless `perPage` says otherwise.
pub(crate) const DEFAULT_PER_PAGE: u64 = 20;
/// The largest `perPage`.
pub(crate) const MAX_PER_PAGE: u64 = 100;
/// The largest `page`.
const MAX_PAGE: u64 = 1 << 40;

/// The filter and page a history request asks for.
struct Asked {
    filter: ExecutionFilter,
    page: u64,
    per_page: u64,
}

fn positive(
    query: Option<&str>,
    name: &str,
    default: u64,
    max: u64,
    operation: &'static str,
) -> Result<u64, Failure> {
    match query_param(query, name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|value| (1..=max).contains(value))
            .ok_or_else(|| {
                Failure::invalid(
                    operation,
                    format!("The {name} param should be an integer from 1 to {max}."),
                )
            }),
    }
}

fn time(
    query: Option<&str>,
    name: &str,
    operation: &'static str,
) -> Result<Option<Timestamp>, Failure> {
    match query_param(query, name).filter(|text| !text.trim().is_empty()) {
        None => Ok(None),
        Some(text) => Timestamp::parse(&text).map(Some).ok_or_else(|| {
            Failure::invalid(
                operation,
                format!(
                    "The {name} param should be unix seconds or an ISO 8601 time \
                     (e.g. 2026-11-30T08:00:00Z)."
                ),
            )
        }),
    }
}

fn parse(query: Option<&str>, operation: &'static str) -> Result<Asked, Failure> {
    let status = match query_param(query, "status").filter(|text| !text.trim().is_empty()) {
        None => None,
        Some(text) => Some(ExecutionStatus::parse(text.trim()).ok_or_else(|| {
            let names: Vec<&str> = ExecutionStatus::ALL
                .iter()
                .map(|status| status.as_str())
                .collect();
            Failure::invalid(
                operation,
                format!("The status param should be one of: {}.", names.join(", ")),
            )
        })?),
    };
    Ok(Asked {
        filter: ExecutionFilter {
            status,
            since: time(query, "since", operation)?,
            until: time(query, "until", operation)?,
            ..Default::default()
        },
        page: positive(query, "page", 1, MAX_PAGE, operation)?,
        per_page: positive(query, "perPage", DEFAULT_PER_PAGE, MAX_PER_PAGE, operation)?,
    })
}

/// The query of another page of the same listing.
fn page_query(asked: &Asked, page: u64) -> String {
    let mut pairs = Vec::new();
    // A job's history has its task in its path.
    if let (Some(task_id), None) = (&asked.filter.task_id, asked.filter.job_id) {
        pairs.push(format!("task={}", percent_encode(task_id)));
    }
    if let Some(status) = asked.filter.status {
        pairs.push(format!("status={}", status.as_str()));
    }
    if let Some(since) = asked.filter.since {
        pairs.push(format!("since={}", percent_encode(&since.iso())));
    }
    if let Some(until) = asked.filter.until {
        pairs.push(format!("until={}", percent_encode(&until.iso())));
    }
    pairs.push(format!("page={page}"));
    pairs.push(format!("perPage={}", asked.per_page));
    pairs.join("&")
}

async fn serve(
    settings: &GatewaySettings,
    urls: &Urls,
    asked: Asked,
    operation: &'static str,
    not_found: impl FnOnce() -> Failure,
    base: String,
) -> Result<HttpResponse, Failure> {
    let page = Page {
        number: asked.page,
        per_page: asked.per_page,
    };
    let filter = asked.filter.clone();
    let paged = call(settings, operation, |reply| ApiMessage::FindExecutions {
        filter,
        page,
        reply,
    })
    .await?
    .map_err(api_failure(operation))?
    .ok_or_else(not_found)?;
    let body = render::execution_page(&paged, asked.page, asked.per_page, urls, |number| {
        format!("{base}?{}", page_query(&asked, number))
    });
    ok(settings, &body)
}

/// `GET /tasks/{task}/jobs/{job}/executions/`.
pub(crate) async fn of_job(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
    query: Option<&str>,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "list_executions";
    let not_found = || Failure::not_found(OPERATION, "Job not found in task.");
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let mut asked = parse(query, OPERATION)?;
    asked.filter.task_id = Some(task_id.to_string());
    asked.filter.job_id = Some(job_uuid);
    let base = format!("{}executions/", urls.job(task_id, job_uuid));
    serve(settings, urls, asked, OPERATION, not_found, base).await
}

/// `GET /executions/?task=…`: every task's executions, or one task's.
pub(crate) async fn all(
    settings: &GatewaySettings,
    urls: &Urls,
    query: Option<&str>,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "list_all_executions";
    let mut asked = parse(query, OPERATION)?;
    asked.filter.task_id = query_param(query, "task").filter(|task| !task.is_empty());
    let base = format!("{}/executions/", urls.base);
    serve(
        settings,
        urls,
        asked,
        OPERATION,
        || Failure::not_found(OPERATION, "Nothing found."),
        base,
    )
    .await
}
