//! The request guard: what every request goes through whatever its route — basic auth, CORS
//! headers on the answer, the bounded body read, and the host name the answer's URLs use.

use super::http::{text_response, Failure, HttpResponse};
use super::GatewaySettings;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use fastlane_proto::payload::MAX_BODY_BYTES;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::{HeaderMap, Request, StatusCode};

/// `None` when the request may go on (basic auth is off, or its credentials are right), else
/// the 401 answer with the realm in `WWW-Authenticate`.
pub(crate) fn authorize(settings: &GatewaySettings, headers: &HeaderMap) -> Option<HttpResponse> {
    let (user, password, realm) = settings.basic_auth.as_ref()?;
    let expected = basic_credentials(user, password);
    let given = headers
        .get(AUTHORIZATION)
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

/// The `Authorization` value a client sends for `user` and `password` (RFC 7617).
fn basic_credentials(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// Adds `Access-Control-Allow-Origin` when the request's `Origin` is allowed (`CORS_ORIGINS`,
/// comma-separated, or `*`); a request without `Origin` gets `*` only when every origin is.
pub(crate) fn add_cors(
    settings: &GatewaySettings,
    response: &mut HttpResponse,
    origin: Option<HeaderValue>,
) {
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

/// The whole body, at most [`MAX_BODY_BYTES`] (413 beyond). Its failures name `enqueue_job`,
/// whichever route reads the body, as they always have.
pub(crate) async fn read_body(request: Request<Incoming>) -> Result<Bytes, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_rfc4648_base64() {
        assert_eq!(basic_credentials("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(basic_credentials("a", ""), "Basic YTo=");
        assert_eq!(basic_credentials("", ""), "Basic Og==");
    }
}
