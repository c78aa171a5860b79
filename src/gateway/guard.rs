//! The request guard: what every request goes through whatever its route — the `Host` and
//! origin checks (`site`), authentication (`auth`), CORS headers on the answer, the bounded
//! body read, and the host name the answer's URLs use.

use super::auth::Identity;
use super::http::{Failure, HttpResponse};
use super::GatewaySettings;
use bytes::Bytes;
use fastlane_proto::payload::MAX_BODY_BYTES;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, StatusCode};

/// Admits a request: its `Host` (without authentication), its credentials (401 with the
/// challenges in `WWW-Authenticate`) and, for a state-changing method, its origin (403). The
/// route's scope is checked by the router, which knows the route.
pub(crate) fn admit<'a>(
    settings: &'a GatewaySettings,
    request: &Request<Incoming>,
) -> Result<Identity<'a>, Box<HttpResponse>> {
    let headers = request.headers();
    check_host(settings, request)?;
    // Browsers send preflights without credentials; they only learn the allowed methods.
    if request.method() == Method::OPTIONS {
        return Ok(Identity::PREFLIGHT);
    }
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let Some(identity) = settings.access.credentials.authenticate(authorization) else {
        let mut response = Failure::new(
            StatusCode::UNAUTHORIZED,
            "authorize",
            "Valid credentials are required: basic auth or an API token \
             (Authorization: Bearer <token>).",
        )
        .into_response();
        for challenge in settings.access.credentials.challenges() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().append(WWW_AUTHENTICATE, value);
            }
        }
        return Err(response.into());
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        same_site(settings, headers).map_err(|refused| Box::new(refused.into_response()))?;
    }
    Ok(identity)
}

/// Refuses a request whose `Host` names a host the node does not answer for (403); every
/// request goes through it, the console's assets included.
pub(crate) fn check_host(
    settings: &GatewaySettings,
    request: &Request<Incoming>,
) -> Result<(), Box<HttpResponse>> {
    settings
        .access
        .site
        .check_host(header(request.headers(), HOST.as_str()))
        .map_err(|_| {
            Failure::new(
                StatusCode::FORBIDDEN,
                "check_host",
                "The Host header names a host this node does not answer for; list it in \
                 ALLOWED_HOSTS or configure authentication.",
            )
            .into_response()
            .into()
        })
}

/// Refuses a request from another site (by `Origin` and `Sec-Fetch-Site`) unless its origin
/// is listed in `CORS_ORIGINS`: every state-changing request and every WebSocket upgrade.
pub(crate) fn same_site(settings: &GatewaySettings, headers: &HeaderMap) -> Result<(), Failure> {
    settings
        .access
        .site
        .check_origin(
            header(headers, "origin"),
            header(headers, "sec-fetch-site"),
            header(headers, HOST.as_str()),
        )
        .map_err(|_| {
            Failure::new(
                StatusCode::FORBIDDEN,
                "check_origin",
                "Cross-site requests are refused; list the origin in CORS_ORIGINS to allow it.",
            )
        })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The request headers a browser may send cross-site, answered to every preflight: the
/// simple ones a script may still set, the ones a JSON client needs, and the gateway's own.
const ALLOWED_HEADERS: &str = "Accept, Accept-Language, Content-Language, Content-Type, \
                               Authorization, X-Request-ID, Idempotency-Key";

/// How long a browser may reuse a preflight's answer, in seconds (Chrome caps it at 7200).
const PREFLIGHT_MAX_AGE_SECONDS: &str = "600";

/// What a CORS answer depends on in the request: its `Origin`, and whether it is a preflight
/// (`OPTIONS` with `Access-Control-Request-Method`).
pub(crate) struct CorsRequest {
    origin: Option<HeaderValue>,
    preflight: bool,
}

impl CorsRequest {
    pub(crate) fn of(request: &Request<Incoming>) -> CorsRequest {
        CorsRequest {
            origin: request.headers().get("origin").cloned(),
            preflight: request.method() == Method::OPTIONS
                && request
                    .headers()
                    .contains_key("access-control-request-method"),
        }
    }
}

/// Adds `Access-Control-Allow-Origin` when the request's `Origin` is allowed (`CORS_ORIGINS`,
/// comma-separated, or `*`); a request without `Origin` gets `*` only when every origin is.
/// A preflight also learns the headers it may send ([`ALLOWED_HEADERS`]) and how long to
/// remember the answer; the router already set `Access-Control-Allow-Methods` from the route.
pub(crate) fn add_cors(settings: &GatewaySettings, response: &mut HttpResponse, cors: CorsRequest) {
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
    let answered = match cors.origin {
        Some(origin) if allowed(&origin) => {
            headers.insert("access-control-allow-origin", origin);
            headers.append("vary", HeaderValue::from_static("Origin"));
            true
        }
        Some(_) => false,
        None if settings.cors_origins == "*" => {
            headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            true
        }
        None => false,
    };
    if answered && cors.preflight {
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            "access-control-max-age",
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
        );
    }
}

/// The host the answer's URLs name: `SERVER_NAME`, else the request's `Host` when it is a
/// plausible one, else `localhost`.
pub(crate) fn host(settings: &GatewaySettings, request: &Request<Incoming>) -> String {
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

/// The whole body, at most [`MAX_BODY_BYTES`] (413 beyond), arriving within
/// `REQUEST_BODY_TIMEOUT_SECONDS` (408 beyond: a client cannot hold a connection and a request
/// slot by trickling a body). Its failures name `enqueue_job`, whichever route reads the body,
/// as they always have.
pub(crate) async fn read_body(
    settings: &GatewaySettings,
    request: Request<Incoming>,
) -> Result<Bytes, Failure> {
    let collect = Limited::new(request.into_body(), MAX_BODY_BYTES).collect();
    let collected = match settings.limits.body_timeout {
        Some(limit) => tokio::time::timeout(limit, collect).await.map_err(|_| {
            Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                "enqueue_job",
                format!(
                    "The request body did not arrive within {} seconds.",
                    limit.as_secs()
                ),
            )
        })?,
        None => collect.await,
    };
    match collected {
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
