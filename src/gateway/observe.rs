//! What the gateway tells about each request: its id (`X-Request-ID`), the tracing span and
//! Sentry scope that carry the id to every log line and error event of the request, the access
//! log line, and the HTTP metrics (`fastlane_http_requests_total`,
//! `fastlane_http_request_duration_seconds`, by route pattern).

use super::http::HttpResponse;
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{HeaderMap, Method};
use sentry::Hub;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The header that carries a request's id, in both directions.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client.
const REQUEST_ID_MAX_LEN: usize = 128;

/// The request's id: the client's `X-Request-ID` when it is 1 to 128 visible ASCII characters
/// (so it can be logged and echoed as it is), else a new UUID.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|id| is_valid_request_id(id))
        .and_then(|id| std::str::from_utf8(id).ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= REQUEST_ID_MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// The span every log line of the request is made in.
pub(crate) fn span(request_id: &str) -> tracing::Span {
    tracing::info_span!("request", request_id = %request_id)
}

/// A Sentry hub for the request, whose events carry the tag `request_id`.
pub(crate) fn hub(request_id: &str) -> Arc<Hub> {
    let hub = Arc::new(Hub::new_from_top(Hub::current()));
    hub.configure_scope(|scope| scope.set_tag("request_id", request_id));
    hub
}

/// Echoes the request's id in the response.
pub(crate) fn echo_request_id(response: &mut HttpResponse, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
}

/// What the access log says of a request besides its response.
pub(crate) struct Served<'a> {
    pub(crate) method: &'a Method,
    pub(crate) route: &'static str,
    pub(crate) peer: SocketAddr,
    pub(crate) credential_kind: &'a str,
    pub(crate) credential: &'a str,
    pub(crate) started: Instant,
}

/// Logs the request's line (in the request's span) and counts it in the metrics.
pub(crate) fn finished(served: Served<'_>, response: &HttpResponse) {
    let elapsed = served.started.elapsed();
    let status = response.status().as_u16();
    // Known for whole bodies and for streamed outputs (Content-Length); not for WebSockets.
    let bytes = response.body().size_hint().exact().or_else(|| {
        response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok())
    });
    tracing::info!(
        method = %served.method,
        route = served.route,
        status,
        elapsed_ms = elapsed.as_millis() as u64,
        bytes,
        peer = %served.peer.ip(),
        credential_kind = served.credential_kind,
        credential = served.credential,
        "request"
    );
    fastlane_actors::metrics::http_request(served.route, status, elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_only_when_safe() {
        let id_of = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_bytes(value).unwrap());
            request_id(&headers)
        };
        assert_eq!(id_of(b"abc-123_X.y:z"), "abc-123_X.y:z");
        assert_eq!(id_of(&[b'a'; 128]), "a".repeat(128));
        for bad in [
            &b"has space"[..],
            &[b'a'; 129],
            b"tab\there",
            &[0xc3, 0xa9],
            b"",
        ] {
            let id = id_of(bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} gave {id}");
        }
        assert!(uuid::Uuid::parse_str(&request_id(&HeaderMap::new())).is_ok());
    }
}
