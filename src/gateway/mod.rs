//! The gateway: a thin hyper 1.x server. Each request is parsed, validated, turned into one
//! typed call of the ApiActor (with a timeout), and the answer rendered as the original's JSON.
//! Only this module knows HTTP and the JSON DTOs.
//!
//! A request goes `server` (connection) → [`handle`] → `guard` (`Host`, credentials, origin)
//! → `router` (method and path, the route's scope) → one handler in `routes/` → `render`
//! (JSON) → `guard` (CORS) → `compress` (gzip). This file holds the settings, the entry point
//! (request id, access log and HTTP metrics through `observe`), and the actor call every handler
//! makes.
//!
//! Status mapping: invalid input 4xx with `{"error", "operation"}`; a dead ApiActor 503; an
//! actor call that times out 504.

pub(crate) mod access;
mod auth;
mod compress;
mod guard;
mod http;
pub(crate) mod limits;
mod live;
mod observe;
pub mod openapi;
mod output;
mod render;
mod role;
mod router;
mod routes;
pub(crate) mod server;
mod site;
mod stream;
mod ui;

use bytes::Bytes;
use fastlane_actors::messages::{ApiError, ApiMessage, API_NAME};
use fastlane_proto::redact::Redactor;
use http::{json_response, Failure, HttpResponse};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use sentry::SentryFutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What the gateway needs from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct GatewaySettings {
    pub(crate) debug: bool,
    pub(crate) per_page: u64,
    /// `TASK_JOBS_PER_PAGE`: the page size of a task's jobs.
    pub(crate) task_jobs_per_page: u64,
    pub(crate) server_name: Option<String>,
    pub(crate) redactor: Redactor,
    pub(crate) enable_cors: bool,
    pub(crate) cors_origins: String,
    /// Credentials, site rules and the warnings `/status/` shows.
    pub(crate) access: access::Access,
    pub(crate) call_timeout: Duration,
    pub(crate) farms: Vec<fastlane_proto::farm::Farm>,
    /// What backs the queue and the store, e.g. `("redis", "mongodb")`, for `/healthcheck`.
    pub(crate) backends: (String, String),
    /// Bounds on connections, requests and WebSockets.
    pub(crate) limits: limits::Limits,
    /// How long a POST's `Idempotency-Key` holds (`IDEMPOTENCY_KEY_TTL_SECONDS`).
    pub(crate) idempotency_ttl: Duration,
    /// What the node does: a worker serves only [`role::WORKER_PATHS`].
    pub(crate) role: fastlane_actors::Role,
}

/// Serves one request. Never panics on input; every failure is a response. Its id
/// (`X-Request-ID`) is echoed and carried by every log line and Sentry event of the request.
pub(crate) async fn handle(
    settings: Arc<GatewaySettings>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, std::convert::Infallible> {
    let request_id = observe::request_id(request.headers());
    let mut response = serve(settings, request, peer)
        .instrument(observe::span(&request_id))
        .bind_hub(observe::hub(&request_id))
        .await;
    observe::echo_request_id(&mut response, &request_id);
    Ok(response)
}

async fn serve(
    settings: Arc<GatewaySettings>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> HttpResponse {
    let started = std::time::Instant::now();
    // Held until the answer is ready (a WebSocket's life is not counted: it has its own bounds).
    let _permit = match settings.limits.admit_request() {
        Ok(permit) => permit,
        Err(refused) => return *refused,
    };
    let cors = guard::CorsRequest::of(&request);
    let gzip = compress::accepts_gzip(request.headers());
    let method = request.method().clone();
    let route = match request.uri().path() {
        path if path == "/ui" || path.starts_with("/ui/") => "/ui",
        path => router::template(path),
    };
    let admitted = match ui::asks(&settings, &request) {
        // The console's assets and redirect hold no data: no credentials needed.
        Some(ask) => Err(guard::check_host(&settings, &request)
            .map_or_else(|denied| denied, |()| Box::new(ui::serve(ask, &request)))),
        None => guard::admit(&settings, &request),
    };
    let (mut response, credential) = match admitted {
        Err(answer) => (*answer, None),
        Ok(identity) => (
            router::route(&settings, request, peer, identity)
                .await
                .unwrap_or_else(Failure::into_response),
            Some((identity.kind, identity.name)),
        ),
    };
    let (credential_kind, credential) = credential.unwrap_or(("none", "-"));
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        // What is left of the body would be read as the next request.
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let is_head = method == Method::HEAD;
    if settings.enable_cors {
        guard::add_cors(&settings, &mut response, cors);
    }
    compress::compress(&mut response, gzip, is_head);
    if is_head {
        *response.body_mut() = http::full_body(Bytes::new());
    }
    let served = observe::Served {
        method: &method,
        route,
        peer,
        credential_kind,
        credential,
        started,
    };
    observe::finished(served, &response);
    response
}

/// One call of the ApiActor, with the gateway's timeout.
pub(crate) async fn call<T: Send + 'static>(
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

/// Maps the ApiActor's error to its status, naming `operation`.
pub(crate) fn api_failure(operation: &'static str) -> impl Fn(ApiError) -> Failure {
    move |error| Failure::new(http::status_of(error.kind), operation, error.message)
}

/// 200 with `body` (pretty-printed in debug mode).
pub(crate) fn ok(
    settings: &GatewaySettings,
    body: &serde_json::Value,
) -> Result<HttpResponse, Failure> {
    Ok(json_response(StatusCode::OK, body, settings.debug))
}
