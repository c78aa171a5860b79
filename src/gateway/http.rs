//! HTTP plumbing of the gateway: responses, error bodies, URL encoding, query strings,
//! request IPs. No routes here.

use bytes::Bytes;
use fastlane_proto::ErrorKind;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;

/// Why a streamed body could not go on (the connection is then closed mid-body).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every answer: a whole one in memory ([`full_body`]) or a stream of pieces
/// (stored outputs), so that one response type serves every route.
pub(crate) type Body = BoxBody<Bytes, BodyError>;

/// Every answer of the gateway.
pub(crate) type HttpResponse = Response<Body>;

/// A body held whole in memory.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The one mapping of error kinds to HTTP statuses.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed request: status, message and the operation it was part of.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) operation: &'static str,
}

impl Failure {
    /// A failure with any status.
    pub(crate) fn new(
        status: StatusCode,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Failure {
            status,
            message: message.into(),
            operation,
        }
    }

    /// 400: the request itself is wrong.
    pub(crate) fn invalid(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, operation, message)
    }

    /// 404: what the request names does not exist.
    pub(crate) fn not_found(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, operation, message)
    }

    /// `{"error", "operation"}` served as JSON (the original served it as text/html, its bug 16).
    pub(crate) fn into_response(self) -> HttpResponse {
        let body = serde_json::json!({"error": self.message, "operation": self.operation});
        json_response(self.status, &body, false)
    }
}

/// `body` as `application/json` with a trailing newline (pretty-printed when `pretty`).
pub(crate) fn json_response(status: StatusCode, body: &Value, pretty: bool) -> HttpResponse {
    let mut text = if pretty {
        serde_json::to_vec_pretty(body)
    } else {
        serde_json::to_vec(body)
    }
    .expect("a JSON value always serializes");
    text.push(b'\n');
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `body` as it is, with `content_type`.
pub(crate) fn text_response(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> HttpResponse {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`). `None` for bad escapes or
/// a result that is not UTF-8.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// Encodes everything but unreserved characters, for a path segment or a query value.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The first value of `name` in a query string, decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true).as_deref() == Some(name))
            .then(|| percent_decode(value, true).unwrap_or_default())
    })
}

/// The client's address: `X-Real-Ip`, else the first `X-Forwarded-For` entry, else the peer.
pub(crate) fn request_ip(headers: &HeaderMap, peer: SocketAddr) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    header("x-real-ip")
        .map(str::to_string)
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|value| value.split(',').next())
                .map(|first| first.trim().to_string())
        })
        .unwrap_or_else(|| peer.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        assert_eq!(percent_encode("a b/ç"), "a%20b%2F%C3%A7");
        assert_eq!(percent_decode("a%20b%2F%C3%A7", false).unwrap(), "a b/ç");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert!(percent_decode("%zz", false).is_none());
        assert!(percent_decode("%ff", false).is_none());
        assert!(percent_decode("%4", false).is_none());
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("page=2&query=a+b"), "query").unwrap(),
            "a b"
        );
        assert_eq!(query_param(Some("page"), "page").unwrap(), "");
        assert_eq!(query_param(None, "page"), None);
    }

    #[test]
    fn request_ip_prefers_headers() {
        let peer: SocketAddr = "10.1.1.1:5".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(request_ip(&headers, peer), "10.1.1.1");
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        assert_eq!(request_ip(&headers, peer), "1.2.3.4");
        headers.insert("x-real-ip", HeaderValue::from_static("9.9.9.9"));
        assert_eq!(request_ip(&headers, peer), "9.9.9.9");
    }
}
