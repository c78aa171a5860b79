//! The gateway: a thin hyper 1.x server. Each request is parsed, validated, turned into one
//! typed call of the ApiActor (with a timeout), and the answer rendered as the original's JSON.
//! Only this module knows HTTP and the JSON DTOs.
//!
//! Status mapping: invalid input 4xx with `{"error", "operation"}`; a dead ApiActor 503; an
//! actor call that times out 504.

pub mod http;
pub mod render;
pub mod stream;

use bytes::Bytes;
use fastlane_actors::api::{ApiError, ApiMessage, ExecutionLookup, API_NAME};
use fastlane_actors::ports::Page;
use fastlane_proto::payload::{parse_enqueue, MAX_BODY_BYTES};
use fastlane_proto::redact::Redactor;
use fastlane_proto::ExecutionStatus;
use http::{
    json_response, percent_decode, query_param, request_ip, text_response, Failure, HttpResponse,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, HOST};
use hyper::{Method, Request, StatusCode};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use render::Urls;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What the gateway needs from the configuration.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub debug: bool,
    pub per_page: u64,
    pub server_name: Option<String>,
    pub redactor: Redactor,
    pub enable_cors: bool,
    pub cors_origins: String,
    /// `(user, password, realm)` when basic auth is on.
    pub basic_auth: Option<(String, String, String)>,
    pub call_timeout: Duration,
    pub farms: Vec<fastlane_proto::farm::Farm>,
    /// What backs the queue and the store, e.g. `("redis", "mongodb")`, for `/healthcheck`.
    pub backends: (String, String),
}

/// Serves one request. Never panics on input; every failure is a response.
pub async fn handle(
    settings: Arc<GatewaySettings>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, std::convert::Infallible> {
    let origin = request.headers().get("origin").cloned();
    let is_head = request.method() == Method::HEAD;
    let mut response = match authorize(&settings, &request) {
        Some(denied) => denied,
        None => route(&settings, request, peer)
            .await
            .unwrap_or_else(Failure::into_response),
    };
    if settings.enable_cors {
        add_cors(&settings, &mut response, origin);
    }
    if is_head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    Ok(response)
}

fn authorize(settings: &GatewaySettings, request: &Request<Incoming>) -> Option<HttpResponse> {
    let (user, password, realm) = settings.basic_auth.as_ref()?;
    let expected = format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    );
    let given = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if given == Some(expected.as_str()) {
        return None;
    }
    let mut response = text_response(
        StatusCode::UNAUTHORIZED,
        Vec::new(),
        "text/plain; charset=utf-8",
    );
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        response.headers_mut().insert("www-authenticate", value);
    }
    Some(response)
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let number = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                encoded.push(ALPHABET[((number >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

fn add_cors(settings: &GatewaySettings, response: &mut HttpResponse, origin: Option<HeaderValue>) {
    let headers = response.headers_mut();
    let allowed = |origin: &HeaderValue| {
        settings.cors_origins == "*"
            || origin.to_str().is_ok_and(|origin| {
                settings
                    .cors_origins
                    .split(',')
                    .any(|allowed| allowed.trim() == origin)
            })
    };
    match origin {
        Some(origin) if allowed(&origin) => {
            headers.insert("access-control-allow-origin", origin);
            headers.append("vary", HeaderValue::from_static("Origin"));
        }
        Some(_) => {}
        None if settings.cors_origins == "*" => {
            headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        }
        None => {}
    }
}

/// The routes, by path segments (a trailing slash is optional everywhere).
async fn route(
    settings: &Arc<GatewaySettings>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, Failure> {
    let path = request.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode(segment, false))
        .collect::<Option<_>>()
        .ok_or_else(|| Failure::invalid("route", "The path is not valid percent-encoded UTF-8."))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    let allow: &[Method] = match segments.as_slice() {
        [] | ["healthcheck"] | ["status"] | ["tasks"] | ["search"] => &[Method::GET],
        ["tasks", _] => &[Method::GET, Method::POST],
        ["tasks", _, "jobs", _] => &[Method::GET, Method::PUT],
        ["tasks", _, "jobs", _, "stdout" | "stderr" | "logs" | "stream" | "ws"]
        | ["tasks", _, "jobs", _, "executions", _]
        | ["tasks", _, "jobs", _, "executions", _, "stdout" | "stderr" | "logs" | "stream" | "ws"] => {
            &[Method::GET]
        }
        ["tasks", _, "jobs", _, "stop" | "retry"]
        | ["tasks", _, "jobs", _, "executions", _, "stop"] => &[Method::POST],
        ["docker-executor", "blacklist"] => &[Method::POST, Method::PUT, Method::DELETE],
        _ => return Err(Failure::not_found("route", format!("No route for {path}."))),
    };
    if method == Method::OPTIONS {
        return Ok(allow_response(StatusCode::OK, allow));
    }
    let effective = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    // The original accepts the non-standard `DEL` wherever it accepts DELETE.
    let legacy_delete = allow.contains(&Method::DELETE) && method.as_str() == "DEL";
    if !(allow.contains(&effective) || legacy_delete) {
        let mut response = allow_response(StatusCode::METHOD_NOT_ALLOWED, allow);
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
    }
    let urls = Urls {
        base: format!("http://{}", host(settings, &request)),
    };
    let query = request.uri().query().map(str::to_string);
    let query = query.as_deref();
    match (effective, segments.as_slice()) {
        (_, [] | ["healthcheck"]) => healthcheck(settings).await,
        (_, ["status"]) => status(settings).await,
        (_, ["tasks"]) => list_tasks(settings, &urls, query, None).await,
        (_, ["search"]) => {
            let text = query_param(query, "query").filter(|text| !text.trim().is_empty());
            let text = text
                .ok_or_else(|| Failure::invalid("search_tasks", "The query param is required."))?;
            list_tasks(settings, &urls, query, Some(text)).await
        }
        (Method::POST, ["tasks", task_id]) => {
            let task_id = valid_task_id(task_id, "enqueue_job")?;
            let ip = request_ip(request.headers(), peer);
            let body = read_body(request).await?;
            enqueue(settings, &urls, task_id, None, ip, &body).await
        }
        (Method::PUT, ["tasks", task_id, "jobs", job_id]) => {
            let task_id = valid_task_id(task_id, "enqueue_job")?;
            let job_id = Uuid::parse_str(job_id).map_err(|_| {
                Failure::invalid(
                    "enqueue_job",
                    format!("The job_id {job_id} is not a valid UUID4. All job IDs must be UUID4."),
                )
            })?;
            let ip = request_ip(request.headers(), peer);
            let body = read_body(request).await?;
            enqueue(settings, &urls, task_id, Some(job_id), ip, &body).await
        }
        (Method::POST, ["tasks", task_id, "jobs", job_id, action @ ("stop" | "retry")]) => {
            stop_or_retry(settings, &urls, task_id, job_id, action).await
        }
        (Method::POST, ["tasks", task_id, "jobs", job_id, "executions", execution_id, "stop"]) => {
            stop_execution(settings, &urls, task_id, job_id, execution_id).await
        }
        (_, ["tasks", task_id]) => task(settings, &urls, task_id).await,
        (_, ["tasks", task_id, "jobs", job_id, "ws"]) => {
            let target = stream::Target {
                task_id: task_id.to_string(),
                job_id: job_id.to_string(),
                execution_id: None,
            };
            Ok(stream::accept(settings.clone(), request, target))
        }
        (_, ["tasks", task_id, "jobs", job_id, "executions", execution_id, "ws"]) => {
            let target = stream::Target {
                task_id: task_id.to_string(),
                job_id: job_id.to_string(),
                execution_id: Some(execution_id.to_string()),
            };
            Ok(stream::accept(settings.clone(), request, target))
        }
        (_, ["tasks", task_id, "jobs", job_id, "stream"]) => {
            let target = stream::Target {
                task_id: task_id.to_string(),
                job_id: job_id.to_string(),
                execution_id: None,
            };
            let ws_path = format!(
                "/tasks/{}/jobs/{}/ws/",
                http::percent_encode(task_id),
                http::percent_encode(job_id)
            );
            Ok(stream::page(&target, &ws_path))
        }
        (_, ["tasks", task_id, "jobs", job_id, "executions", execution_id, "stream"]) => {
            let target = stream::Target {
                task_id: task_id.to_string(),
                job_id: job_id.to_string(),
                execution_id: Some(execution_id.to_string()),
            };
            let ws_path = format!(
                "/tasks/{}/jobs/{}/executions/{}/ws/",
                http::percent_encode(task_id),
                http::percent_encode(job_id),
                http::percent_encode(execution_id)
            );
            Ok(stream::page(&target, &ws_path))
        }
        (_, ["docker-executor", "blacklist"]) => {
            let add = matches!(method, Method::POST | Method::PUT);
            let body = read_body(request).await?;
            blacklist(settings, add, &body).await
        }
        (Method::GET, ["tasks", task_id, "jobs", job_id]) => {
            job(settings, &urls, task_id, job_id).await
        }
        (_, ["tasks", task_id, "jobs", job_id, output @ ("stdout" | "stderr" | "logs")]) => {
            output_of(settings, task_id, job_id, None, output).await
        }
        (_, ["tasks", task_id, "jobs", job_id, "executions", execution_id]) => {
            execution(settings, &urls, task_id, job_id, execution_id).await
        }
        (
            _,
            ["tasks", task_id, "jobs", job_id, "executions", execution_id, output @ ("stdout" | "stderr" | "logs")],
        ) => output_of(settings, task_id, job_id, Some(execution_id), output).await,
        _ => Err(Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            "route",
            format!("{method} {path} is not available in this version of fastlane-node yet."),
        )),
    }
}

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

fn host(settings: &GatewaySettings, request: &Request<Incoming>) -> String {
    settings
        .server_name
        .clone()
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|value| value.to_str().ok())
                .filter(|host| !host.is_empty() && !host.contains(['/', ' ', '"', '<', '>']))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".to_string())
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Failure> {
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "enqueue_job",
            format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
        )),
        Err(_) => Err(Failure::invalid(
            "enqueue_job",
            "The request body could not be read.",
        )),
    }
}

fn valid_task_id<'a>(task_id: &'a str, operation: &'static str) -> Result<&'a str, Failure> {
    if task_id.chars().count() > 200 || task_id.chars().any(char::is_control) {
        return Err(Failure::invalid(
            operation,
            "The task id must be at most 200 characters with no control characters.",
        ));
    }
    Ok(task_id)
}

/// One call of the ApiActor, with the gateway's timeout.
async fn call<T: Send + 'static>(
    settings: &GatewaySettings,
    operation: &'static str,
    message: impl FnOnce(RpcReplyPort<T>) -> ApiMessage,
) -> Result<T, Failure> {
    let Some(api) = ActorRef::<ApiMessage>::where_is(API_NAME) else {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            operation,
            "The node is starting or stopping.",
        ));
    };
    match api.call(message, Some(settings.call_timeout)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(Failure::new(
            StatusCode::GATEWAY_TIMEOUT,
            operation,
            "The node did not answer in time.",
        )),
        _ => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            operation,
            "The node could not take the request.",
        )),
    }
}

fn api_failure(operation: &'static str) -> impl Fn(ApiError) -> Failure {
    move |error| Failure::new(http::status_of(error.kind), operation, error.message)
}

fn ok(settings: &GatewaySettings, body: &serde_json::Value) -> Result<HttpResponse, Failure> {
    Ok(json_response(StatusCode::OK, body, settings.debug))
}

async fn healthcheck(settings: &GatewaySettings) -> Result<HttpResponse, Failure> {
    let health = call(settings, "healthcheck", ApiMessage::Health).await?;
    let mut errors = Vec::new();
    if let Err(message) = &health.queue {
        errors.push(json!({"source": "redis", "message": message}));
    }
    if let Err(message) = &health.store {
        errors.push(json!({"source": "mongo", "message": message}));
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "redis": health.queue.is_ok(),
        "mongo": health.store.is_ok(),
        "errors": errors,
        "backends": {"queue": settings.backends.0, "store": settings.backends.1},
    });
    Ok(json_response(status, &body, settings.debug))
}

/// `/status/`: answered from the actors' live state and the backends' counters, with no Docker
/// call per request.
async fn status(settings: &GatewaySettings) -> Result<HttpResponse, Failure> {
    let node = call(settings, "status", ApiMessage::Status).await?;
    let mut hosts: Vec<serde_json::Value> = node
        .hosts
        .iter()
        .map(|host| {
            let name = host.endpoint.to_string();
            let blacklisted = node.blacklist.contains(&name);
            let error = if blacklisted {
                Some("server is blacklisted".to_string())
            } else {
                host.error.clone()
            };
            json!({
                "host": host.endpoint.host(),
                "port": host.endpoint.port(),
                "available": host.available && !blacklisted,
                "blacklisted": blacklisted,
                "draining": blacklisted && host.running > 0,
                "drained": blacklisted && host.running == 0,
                "circuit": host.circuit.as_str(),
                "error": error,
                "running": host.running,
            })
        })
        .collect();
    // Available hosts first, as the original.
    hosts.sort_by_key(|host| !host["available"].as_bool().unwrap_or(false));
    let running: Vec<serde_json::Value> = node
        .hosts
        .iter()
        .flat_map(|host| {
            host.containers.iter().map(move |id| {
                json!({"host": host.endpoint.host(), "port": host.endpoint.port(), "id": id})
            })
        })
        .collect();
    let used = |pool: &str| {
        node.slots
            .iter()
            .find(|(name, _)| name == pool)
            .map_or(0, |(_, used)| *used)
    };
    let farms: Vec<serde_json::Value> = settings
        .farms
        .iter()
        .enumerate()
        .map(|(index, farm)| {
            json!({
                "match": farm.pattern,
                "hosts": farm.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "maxRunning": farm.max_running,
                "running": used(&format!("farm:{index}")),
            })
        })
        .collect();
    let queue = node.queue.unwrap_or_default();
    let counts = node.counts.unwrap_or_default();
    let (scheduled, next) = node.scheduled;
    ok(
        settings,
        &json!({
            "hosts": hosts,
            "containers": {"running": running},
            "farms": farms,
            "queues": {
                "jobs": {"length": queue.ready},
                "delayed": {"length": queue.delayed},
                "running": {"length": queue.leased},
                "deadLetter": {
                    "length": queue.dead,
                    "newest": node.dead_letters.iter().map(|dead| json!({
                        "id": dead.message.id,
                        "taskId": dead.message.task_id,
                        "jobId": dead.message.job_id.to_string(),
                        "executionId": dead.message.execution_id.to_string(),
                        "reason": dead.reason,
                        "at": dead.at.iso(),
                        "deliveries": dead.deliveries,
                    })).collect::<Vec<_>>(),
                },
                "scheduled": {
                    "length": scheduled,
                    "nextTimeStamp": next.map(|next| next.0 as f64 / 1e6),
                    "nextHumanReadableDate": next.map(|next| next.iso()),
                },
            },
            "tasks": {"count": counts.tasks},
            "jobs": {"count": counts.jobs},
            "fastlane": {"version": env!("CARGO_PKG_VERSION"), "executor": "docker"},
        }),
    )
}

/// `POST`/`PUT` (add) and `DELETE`/`DEL` (remove) `/docker-executor/blacklist` with
/// `{"host": "host:port"}`. Any valid `host:port` is accepted, including `localhost`,
/// single-label names and IPs (the original refused them, its bug 19).
async fn blacklist(
    settings: &GatewaySettings,
    add: bool,
    body: &[u8],
) -> Result<HttpResponse, Failure> {
    let (operation, action) = if add {
        ("add_to_blacklist", "add host to")
    } else {
        ("remove_from_blacklist", "remove host from")
    };
    let refuse = |reason: &str| {
        Failure::invalid(
            operation,
            format!("Failed to {action} blacklist because {reason}."),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| refuse("JSON body could not be parsed"))?;
    let host = value
        .as_object()
        .ok_or_else(|| refuse("JSON body could not be parsed"))?
        .get("host")
        .ok_or_else(|| refuse("'host' attribute was not found in JSON body"))?;
    let host = host
        .as_str()
        .and_then(|host| fastlane_proto::farm::DockerEndpoint::parse(host).ok())
        .filter(|endpoint| !endpoint.host().contains('/'))
        .ok_or_else(|| refuse("'host' attribute had an invalid value"))?
        .to_string();
    call(settings, operation, |reply| ApiMessage::Blacklist {
        host,
        add,
        reply,
    })
    .await?
    .map_err(api_failure(operation))?;
    Ok(text_response(
        StatusCode::OK,
        Vec::new(),
        "text/plain; charset=utf-8",
    ))
}

fn page_number(query: Option<&str>) -> Result<u64, Failure> {
    match query_param(query, "page") {
        None => Ok(1),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|page| *page >= 1 && *page <= 1 << 40)
            .ok_or_else(|| {
                Failure::invalid(
                    "get_tasks",
                    "Tasks pagination page param should be a positive integer.",
                )
            }),
    }
}

async fn list_tasks(
    settings: &GatewaySettings,
    urls: &Urls,
    query: Option<&str>,
    search: Option<String>,
) -> Result<HttpResponse, Failure> {
    let number = page_number(query)?;
    let page = Page {
        number,
        per_page: settings.per_page,
    };
    let (operation, paged) = match &search {
        None => (
            "get_tasks",
            call(settings, "get_tasks", |reply| ApiMessage::ListTasks {
                page,
                reply,
            })
            .await?,
        ),
        Some(text) => {
            let words = fastlane_proto::search::words(text);
            (
                "search_tasks",
                call(settings, "search_tasks", |reply| ApiMessage::SearchTasks {
                    words,
                    page,
                    reply,
                })
                .await?,
            )
        }
    };
    let paged = paged.map_err(api_failure(operation))?;
    if number > 1 && paged.items.is_empty() {
        return Err(Failure::not_found(
            operation,
            format!("Page {number} does not exist."),
        ));
    }
    let body = render::task_page(
        &paged,
        number,
        settings.per_page,
        urls,
        |page| match &search {
            None => format!("{}/tasks/?page={page}", urls.base),
            Some(text) => format!(
                "{}/search/?query={}&page={page}",
                urls.base,
                http::percent_encode(text)
            ),
        },
    );
    ok(settings, &body)
}

async fn enqueue(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: Option<Uuid>,
    ip: String,
    body: &[u8],
) -> Result<HttpResponse, Failure> {
    let request = parse_enqueue(body).map_err(|error| Failure::invalid("enqueue_job", error.0))?;
    let task_id = task_id.to_string();
    let enqueued = call(settings, "enqueue_job", |reply| ApiMessage::Enqueue {
        task_id,
        job_id,
        request: Box::new(request),
        request_ip: Some(ip),
        reply,
    })
    .await?
    .map_err(api_failure("enqueue_job"))?;
    let execution_url = enqueued
        .execution_id
        .map(|execution_id| urls.execution(&enqueued.task_id, enqueued.job_id, execution_id));
    ok(
        settings,
        &json!({
            "taskId": enqueued.task_id,
            "jobId": enqueued.job_id.to_string(),
            "executionId": enqueued.execution_id.map(|id| id.to_string()),
            "executionUrl": execution_url,
            "queueJobId": enqueued.queue_message_id,
            "jobUrl": urls.job(&enqueued.task_id, enqueued.job_id),
            "taskUrl": urls.task(&enqueued.task_id),
        }),
    )
}

async fn task(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
) -> Result<HttpResponse, Failure> {
    let owned = task_id.to_string();
    let found = call(settings, "get_task", |reply| ApiMessage::GetTask {
        task_id: owned,
        reply,
    })
    .await?
    .map_err(api_failure("get_task"))?;
    let (_, jobs) = found.ok_or_else(|| Failure::not_found("get_task", "Task not found."))?;
    ok(settings, &render::task_details(task_id, &jobs, urls))
}

async fn job(
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

/// The ids of an execution route, with the original's not-found answers for them (which say
/// "in job" on one route and "in Job" on the other).
struct ExecutionRoute<'a> {
    task_id: &'a str,
    job_id: &'a str,
    execution_id: &'a str,
    operation: &'static str,
    job_word: &'static str,
}

impl ExecutionRoute<'_> {
    fn no_job(&self) -> Failure {
        Failure::not_found(
            self.operation,
            format!(
                "Task ({}) or Job ({}) not found.",
                self.task_id, self.job_id
            ),
        )
    }

    fn no_execution(&self) -> Failure {
        Failure::not_found(
            self.operation,
            format!(
                "Job Execution ({}) not found in {} ({}).",
                self.execution_id, self.job_word, self.job_id
            ),
        )
    }

    fn parse(&self) -> Result<(Uuid, Uuid), Failure> {
        let job = Uuid::parse_str(self.job_id).map_err(|_| self.no_job())?;
        let execution = Uuid::parse_str(self.execution_id).map_err(|_| self.no_execution())?;
        Ok((job, execution))
    }
}

async fn execution(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
    execution_id: &str,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "get_job_execution";
    let route = ExecutionRoute {
        task_id,
        job_id,
        execution_id,
        operation: OPERATION,
        job_word: "job",
    };
    let (job_uuid, execution_uuid) = route.parse()?;
    let owned_task = task_id.to_string();
    let lookup = call(settings, OPERATION, |reply| ApiMessage::FindExecution {
        task_id: owned_task,
        job_id: job_uuid,
        execution_id: Some(execution_uuid),
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    match lookup {
        ExecutionLookup::NoJob => Err(route.no_job()),
        ExecutionLookup::NoExecutions | ExecutionLookup::NoSuchExecution => {
            Err(route.no_execution())
        }
        ExecutionLookup::Found(found) => ok(settings, &render::execution_details(&found, urls)),
    }
}

/// `stdout`, `stderr` or `logs` of an execution (the job's last one when `execution_id` is
/// `None`), with the exit code in `Fastlane-Exit-Code` once there is one.
async fn output_of(
    settings: &GatewaySettings,
    task_id: &str,
    job_id: &str,
    execution_id: Option<&str>,
    output: &str,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "retrieve_execution_details";
    let no_job = || {
        Failure::not_found(
            OPERATION,
            format!("Task ({task_id}) or Job ({job_id}) not found."),
        )
    };
    let no_match = || {
        Failure::invalid(
            OPERATION,
            "No executions found in job with specified arguments.",
        )
    };
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| no_job())?;
    let execution_uuid = execution_id
        .map(|id| Uuid::parse_str(id).map_err(|_| no_match()))
        .transpose()?;
    let owned_task = task_id.to_string();
    let lookup = call(settings, OPERATION, |reply| ApiMessage::FindExecution {
        task_id: owned_task,
        job_id: job_uuid,
        execution_id: execution_uuid,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    let found = match lookup {
        ExecutionLookup::NoJob => return Err(no_job()),
        ExecutionLookup::NoExecutions => {
            return Err(Failure::invalid(
                OPERATION,
                format!("No executions found in job ({job_id})."),
            ))
        }
        ExecutionLookup::NoSuchExecution => return Err(no_match()),
        ExecutionLookup::Found(found) => found,
    };
    let pending = found.status.output_pending() && found.status != ExecutionStatus::Done;
    let log = found.log.clone().unwrap_or_default();
    let error = found.error.clone().unwrap_or_default();
    let body = match (pending, output) {
        (true, _) => Vec::new(),
        (false, "stdout") => log,
        (false, "stderr") => error,
        (false, _) => [log, b"\n-=-\n".to_vec(), error].concat(),
    };
    let mut response = text_response(StatusCode::OK, body, "text/plain; charset=utf-8");
    if let Some(exit_code) = found.exit_code {
        response
            .headers_mut()
            .insert("fastlane-exit-code", HeaderValue::from(exit_code));
    }
    Ok(response)
}

/// `…/stop/` and `…/retry/` of a job: both answer the job's links (the original's retry
/// answered 500 after doing its work, its bug 15).
async fn stop_or_retry(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
    action: &str,
) -> Result<HttpResponse, Failure> {
    let operation = if action == "stop" {
        "stop_job"
    } else {
        "retry_job"
    };
    let not_found = || Failure::not_found(operation, "Job not found in task.");
    let job_uuid = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let owned = task_id.to_string();
    let found = if action == "stop" {
        call(settings, operation, |reply| ApiMessage::StopJob {
            task_id: owned,
            job_id: job_uuid,
            reply,
        })
        .await?
        .map_err(api_failure(operation))?
        .is_some()
    } else {
        call(settings, operation, |reply| ApiMessage::Retry {
            task_id: owned,
            job_id: job_uuid,
            reply,
        })
        .await?
        .map_err(api_failure(operation))?
        .is_some()
    };
    if !found {
        return Err(not_found());
    }
    ok(
        settings,
        &json!({
            "taskId": task_id,
            "jobId": job_id,
            "jobUrl": urls.job(task_id, job_uuid),
            "taskUrl": urls.task(task_id),
        }),
    )
}

async fn stop_execution(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    job_id: &str,
    execution_id: &str,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "stop_job_execution";
    let route = ExecutionRoute {
        task_id,
        job_id,
        execution_id,
        operation: OPERATION,
        job_word: "Job",
    };
    let (job_uuid, execution_uuid) = route.parse()?;
    let owned = task_id.to_string();
    let lookup = call(settings, OPERATION, |reply| ApiMessage::StopExecution {
        task_id: owned,
        job_id: job_uuid,
        execution_id: execution_uuid,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    match lookup {
        ExecutionLookup::NoJob => Err(route.no_job()),
        ExecutionLookup::Found(_) => ok(
            settings,
            &json!({
                "task": {"id": task_id, "url": urls.task(task_id)},
                "job": {"id": job_id, "url": urls.job(task_id, job_uuid)},
                "execution": {"id": execution_id, "url": urls.execution(task_id, job_uuid, execution_uuid)},
            }),
        ),
        _ => Err(route.no_execution()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b""), "");
    }
}
