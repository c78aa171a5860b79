//! The router: which handler serves a method and a path. [`ROUTES`] is the whole API; a path
//! no row matches is 404, a method no row of a matching path takes is 405 with `Allow`.
//!
//! Paths are compared segment by segment after percent-decoding; empty segments are ignored,
//! so a trailing slash is optional everywhere. `HEAD` is served as `GET` (with the body
//! dropped by `handle`), `OPTIONS` answers `Allow`, and the original's non-standard `DEL` is
//! taken wherever `DELETE` is.
//!
//! Each row names the scope a credential needs to use it (`read`, `submit`, `admin`); the
//! guard has already authenticated the request, the router refuses a missing scope with 403.

use super::auth::{Identity, Scope};
use super::guard::{host, read_body};
use super::http::{json_response, percent_decode, text_response, Failure, HttpResponse};
use super::render::Urls;
use super::routes::jobs::{self, ExecutionAction, JobAction, OutputKind};
use super::routes::{history, metrics, node, tasks};
use super::GatewaySettings;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// What a row of [`ROUTES`] does.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Healthcheck,
    Status,
    /// `GET /openapi.json`: the description of this table (`openapi.rs`).
    OpenApi,
    Blacklist {
        add: bool,
    },
    ListTasks,
    SearchTasks,
    TaskDetails,
    /// `POST /tasks/{task}/`: a new job.
    CreateJob,
    /// `PUT …/jobs/{job}/`: creates or replaces the job with that id.
    PutJob,
    JobDetails,
    Job(JobAction),
    Execution(ExecutionAction),
    /// `stdout`/`stderr`/`logs` of an execution, or of the job's last one.
    Output(OutputKind),
    /// The stream page, of an execution or of the job's last one.
    StreamPage,
    /// The WebSocket the stream page reads.
    WebSocket,
    /// `DELETE …/jobs/{job}/`: stops the job and removes everything of it.
    DeleteJob,
    /// `DELETE /tasks/{task}/`: the same for every job of the task.
    DeleteTask,
    /// Prometheus metrics.
    Metrics,
    /// `GET …/jobs/{job}/executions/`: the job's execution history.
    JobHistory,
    /// `GET /executions/`: the history across tasks.
    History,
    /// `POST …/jobs/{job}/pause/` (`true`) and `…/resume/` (`false`).
    Pause(bool),
}

/// One route: a method, a path pattern (`:task`, `:job` and `:execution` capture a segment),
/// what serves it and the scope it needs.
struct Route {
    method: Method,
    pattern: &'static str,
    endpoint: Endpoint,
    scope: Scope,
}

const fn row(method: Method, pattern: &'static str, endpoint: Endpoint, scope: Scope) -> Route {
    Route {
        method,
        pattern,
        endpoint,
        scope,
    }
}

/// The API. The order of a path's rows is the order of its methods in `Allow`.
#[rustfmt::skip]
const ROUTES: &[Route] = {
    use Endpoint::*;
    use Scope::{Admin, Read, Submit};
    &[
        row(Method::GET,    "/",                                                   Healthcheck,                       Read),
        row(Method::GET,    "/healthcheck",                                        Healthcheck,                       Read),
        row(Method::GET,    "/status",                                             Status,                            Read),
        row(Method::GET,    "/metrics",                                            Metrics,                           Read),
        row(Method::GET,    "/openapi.json",                                       OpenApi,                           Read),
        row(Method::GET,    "/tasks",                                              ListTasks,                         Read),
        row(Method::GET,    "/search",                                             SearchTasks,                       Read),
        row(Method::GET,    "/executions",                                         History,                           Read),
        row(Method::GET,    "/tasks/:task",                                        TaskDetails,                       Read),
        row(Method::POST,   "/tasks/:task",                                        CreateJob,                         Submit),
        row(Method::DELETE, "/tasks/:task",                                        DeleteTask,                        Admin),
        row(Method::GET,    "/tasks/:task/jobs/:job",                              JobDetails,                        Read),
        row(Method::PUT,    "/tasks/:task/jobs/:job",                              PutJob,                            Submit),
        row(Method::DELETE, "/tasks/:task/jobs/:job",                              DeleteJob,                         Admin),
        row(Method::POST,   "/tasks/:task/jobs/:job/stop",                         Job(JobAction::Stop),              Submit),
        row(Method::POST,   "/tasks/:task/jobs/:job/retry",                        Job(JobAction::Retry),             Submit),
        row(Method::GET,    "/tasks/:task/jobs/:job/stdout",                       Output(OutputKind::Stdout),        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/stderr",                       Output(OutputKind::Stderr),        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/logs",                         Output(OutputKind::Logs),          Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/stream",                       StreamPage,                        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/ws",                           WebSocket,                         Read),
        row(Method::POST,   "/tasks/:task/jobs/:job/pause",                        Pause(true),                       Submit),
        row(Method::POST,   "/tasks/:task/jobs/:job/resume",                       Pause(false),                      Submit),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions",                   JobHistory,                        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution",        Execution(ExecutionAction::Show),  Read),
        row(Method::POST,   "/tasks/:task/jobs/:job/executions/:execution/stop",   Execution(ExecutionAction::Stop),  Submit),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution/stdout", Output(OutputKind::Stdout),        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution/stderr", Output(OutputKind::Stderr),        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution/logs",   Output(OutputKind::Logs),          Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution/stream", StreamPage,                        Read),
        row(Method::GET,    "/tasks/:task/jobs/:job/executions/:execution/ws",     WebSocket,                         Read),
        row(Method::POST,   "/docker-executor/blacklist",                          Blacklist { add: true },           Admin),
        row(Method::PUT,    "/docker-executor/blacklist",                          Blacklist { add: true },           Admin),
        row(Method::DELETE, "/docker-executor/blacklist",                          Blacklist { add: false },          Admin),
    ]
};

/// Each row's method and pattern, for the description that must cover them (`openapi.rs`).
pub(crate) fn table() -> impl Iterator<Item = (&'static Method, &'static str)> {
    ROUTES.iter().map(|route| (&route.method, route.pattern))
}

/// The ids a path captured; the ones its pattern does not capture are empty.
#[derive(Default)]
struct PathIds<'a> {
    task: &'a str,
    job: &'a str,
    execution: Option<&'a str>,
}

/// The ids `segments` give `pattern`'s captures, or `None` when they do not fit it.
fn capture<'a>(pattern: &str, segments: &[&'a str]) -> Option<PathIds<'a>> {
    let parts: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty()).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut ids = PathIds::default();
    for (part, segment) in parts.into_iter().zip(segments) {
        match part {
            ":task" => ids.task = segment,
            ":job" => ids.job = segment,
            ":execution" => ids.execution = Some(segment),
            literal if literal == *segment => {}
            _ => return None,
        }
    }
    Some(ids)
}

/// The rows `segments` fit, in table order, with what each captured.
fn matching<'a>(segments: &[&'a str]) -> Vec<(&'static Route, PathIds<'a>)> {
    ROUTES
        .iter()
        .filter_map(|route| Some((route, capture(route.pattern, segments)?)))
        .collect()
}

/// The metrics and access-log name of a request's path: the pattern of the first row it fits
/// (whatever its method), or [`UNMATCHED`]; never the raw path, so its values are bounded.
pub(crate) fn template(path: &str) -> &'static str {
    let segments: Option<Vec<String>> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode(segment, false))
        .collect();
    let Some(segments) = segments else {
        return UNMATCHED;
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    ROUTES
        .iter()
        .find(|route| capture(route.pattern, &segments).is_some())
        .map_or(UNMATCHED, |route| route.pattern)
}

/// The [`template`] of a path no row fits.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Finds the route of `request` and serves it.
pub(crate) async fn route(
    settings: &Arc<GatewaySettings>,
    request: Request<Incoming>,
    peer: SocketAddr,
    identity: Identity<'_>,
) -> Result<HttpResponse, Failure> {
    let path = request.uri().path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode(segment, false))
        .collect::<Option<_>>()
        .ok_or_else(|| Failure::invalid("route", "The path is not valid percent-encoded UTF-8."))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    super::role::admit(settings.role, &segments)?;
    let matching = matching(&segments);
    if matching.is_empty() {
        return Err(Failure::not_found("route", format!("No route for {path}.")));
    }
    let allow: Vec<Method> = matching
        .iter()
        .map(|(route, _)| route.method.clone())
        .collect();
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return Ok(allow_response(StatusCode::OK, &allow));
    }
    let wanted = match method.as_str() {
        "HEAD" => Method::GET,
        // The original accepts the non-standard `DEL` wherever it accepts DELETE.
        "DEL" => Method::DELETE,
        _ => method.clone(),
    };
    let Some((route, ids)) = matching
        .into_iter()
        .find(|(route, _)| route.method == wanted)
    else {
        let mut response = allow_response(StatusCode::METHOD_NOT_ALLOWED, &allow);
        let body = Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "route",
            format!("Method {method} is not allowed on {path}."),
        );
        *response.body_mut() = body.into_response().into_body();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return Ok(response);
    };
    if !identity.allows(route.scope) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "authorize",
            format!(
                "The credential {} does not have the '{}' scope this route needs.",
                identity.name,
                route.scope.name()
            ),
        ));
    }
    let urls = Urls {
        base: format!("http://{}", host(settings, &request)),
    };
    let query = request.uri().query().map(str::to_string);
    let query = query.as_deref();
    let PathIds {
        task,
        job,
        execution,
    } = ids;
    match route.endpoint {
        Endpoint::Healthcheck => node::healthcheck(settings).await,
        Endpoint::Status => node::status(settings, &urls).await,
        Endpoint::Metrics => metrics::scrape(settings).await,
        Endpoint::OpenApi => Ok(json_response(
            StatusCode::OK,
            super::openapi::document(),
            settings.debug,
        )),
        Endpoint::Blacklist { add } => {
            let body = read_body(settings, request).await?;
            node::blacklist(settings, add, &body).await
        }
        Endpoint::ListTasks => tasks::list(settings, &urls, query).await,
        Endpoint::SearchTasks => tasks::search(settings, &urls, query).await,
        Endpoint::TaskDetails => tasks::details(settings, &urls, task, query).await,
        Endpoint::CreateJob => tasks::enqueue(settings, &urls, request, peer, task, None).await,
        Endpoint::PutJob => tasks::enqueue(settings, &urls, request, peer, task, Some(job)).await,
        Endpoint::JobDetails => jobs::details(settings, &urls, task, job).await,
        Endpoint::DeleteJob => jobs::delete(settings, &urls, task, job).await,
        Endpoint::Pause(pause) => jobs::pause(settings, &urls, pause, task, job).await,
        Endpoint::JobHistory => history::of_job(settings, &urls, task, job, query).await,
        Endpoint::History => history::all(settings, &urls, query).await,
        Endpoint::DeleteTask => tasks::delete(settings, &urls, task).await,
        Endpoint::Job(action) => jobs::stop_or_retry(settings, &urls, action, task, job).await,
        Endpoint::Execution(action) => {
            let execution = execution.unwrap_or_default();
            jobs::execution(settings, &urls, action, task, job, execution).await
        }
        Endpoint::Output(output) => jobs::output(settings, output, task, job, execution).await,
        Endpoint::StreamPage => Ok(jobs::stream_page(task, job, execution)),
        Endpoint::WebSocket => Ok(jobs::websocket(settings, request, task, job, execution)),
    }
}

/// An empty answer with `Allow` (and `Access-Control-Allow-Methods`, for preflights): `HEAD`
/// wherever `GET` is, `OPTIONS` everywhere.
fn allow_response(status: StatusCode, allow: &[Method]) -> HttpResponse {
    let mut methods: Vec<&str> = allow.iter().map(Method::as_str).collect();
    if allow.contains(&Method::GET) {
        methods.push("HEAD");
    }
    methods.push("OPTIONS");
    let mut response = text_response(status, Vec::new(), "text/plain; charset=utf-8");
    if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
        response.headers_mut().insert(ALLOW, value.clone());
        response
            .headers_mut()
            .insert("access-control-allow-methods", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(path: &str) -> Vec<String> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        matching(&segments)
            .iter()
            .map(|(route, _)| route.method.to_string())
            .collect()
    }

    #[test]
    fn each_path_allows_its_methods_in_order() {
        assert_eq!(methods("/"), ["GET"]);
        assert_eq!(methods("/status/"), ["GET"]);
        assert_eq!(methods("/tasks/t/"), ["GET", "POST", "DELETE"]);
        assert_eq!(methods("/tasks/t/jobs/j"), ["GET", "PUT", "DELETE"]);
        assert_eq!(methods("/tasks/t/jobs/j/retry"), ["POST"]);
        assert_eq!(methods("/tasks/t/jobs/j/executions/e"), ["GET"]);
        assert_eq!(methods("/tasks/t/jobs/j/executions/e/stop/"), ["POST"]);
        assert_eq!(methods("/tasks/t/jobs/j/executions/e/ws"), ["GET"]);
        assert_eq!(
            methods("/docker-executor/blacklist"),
            ["POST", "PUT", "DELETE"]
        );
        assert!(methods("/tasks/t/jobs").is_empty());
        assert!(methods("/tasks/t/jobs/j/executions/e/retry").is_empty());
    }

    /// Reads need `read`, state changes `submit`, the host blacklist and deletes `admin`.
    #[test]
    fn every_route_names_the_scope_it_needs() {
        for route in ROUTES {
            let expected = if route.pattern.starts_with("/docker-executor")
                || route.method == Method::DELETE
            {
                Scope::Admin
            } else if route.method == Method::GET {
                Scope::Read
            } else {
                Scope::Submit
            };
            assert_eq!(route.scope, expected, "{} {}", route.method, route.pattern);
        }
    }

    /// Metrics and the access log name a request by its row's pattern, never its raw path.
    #[test]
    fn templates_name_the_row() {
        assert_eq!(template("/tasks/t/jobs/j/"), "/tasks/:task/jobs/:job");
        assert_eq!(template("/tasks/a%20b"), "/tasks/:task");
        assert_eq!(template("/"), "/");
        assert_eq!(template("/metrics"), "/metrics");
        assert_eq!(template("/nope/x"), UNMATCHED);
        assert_eq!(template("/tasks/%ff"), UNMATCHED);
    }

    #[test]
    fn captures_name_the_ids() {
        let segments = ["tasks", "t", "jobs", "j", "executions", "e", "stdout"];
        let (route, ids) = matching(&segments).pop().unwrap();
        assert!(matches!(
            route.endpoint,
            Endpoint::Output(OutputKind::Stdout)
        ));
        assert_eq!((ids.task, ids.job, ids.execution), ("t", "j", Some("e")));
        let (_, ids) = matching(&["tasks", "t"]).pop().unwrap();
        assert_eq!((ids.task, ids.job, ids.execution), ("t", "", None));
    }
}
