//! The web console: a single-page app (plain HTML, CSS and JavaScript under `ui/`, embedded in
//! the binary) served at `GET /ui/`, and the redirect of a browser's `GET /` to it.
//!
//! The assets hold no data, so they are served without credentials (after the same `Host`
//! check as every request): a node with API tokens only must still be able to show the page
//! where the operator pastes a token. Every piece of data the page shows comes from the API,
//! fetched with the operator's credentials (the browser's basic-auth login, or the pasted token
//! as `Authorization: Bearer`), so the console never widens what the operator may do.
//!
//! Answers carry a strict Content-Security-Policy (only the node's own scripts, styles, images
//! and connections; no inline script), `nosniff` and `X-Frame-Options: DENY`. The script and
//! the style sheet are linked from the page with a digest of their content (`?v=…`): under
//! that name they are cached for a year, the page itself is revalidated every time.

use super::http::{text_response, Failure, HttpResponse};
use super::GatewaySettings;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, LOCATION};
use hyper::{Method, Request, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/icon.svg");

/// The policy of every console answer: nothing from elsewhere, no inline script or style, no
/// framing; connections only to the node itself ([`policy`] adds its WebSocket origins).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// [`POLICY`] with `ws://host` and `wss://host` in `connect-src` when the request's `Host` is
/// a plain `name[:port]` (browsers that do not count WebSockets as `'self'` still reach the
/// live output); any other `Host` gets the policy as it is.
fn policy(host: Option<&str>) -> String {
    let plain = host.filter(|host| {
        !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    match plain {
        Some(host) => POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' ws://{host} wss://{host}"),
        ),
        None => POLICY.to_string(),
    }
}

/// A short digest of `content`, for cache-busting asset names.
fn digest(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

struct Assets {
    index: String,
    script_version: String,
    style_version: String,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let script_version = digest(SCRIPT);
    let style_version = digest(STYLE);
    let index = INDEX
        .replace("app.js?v=", &format!("app.js?v={script_version}"))
        .replace("app.css?v=", &format!("app.css?v={style_version}"));
    Assets {
        index,
        script_version,
        style_version,
    }
});

/// What a request asks of the console, decided before authentication.
pub(crate) enum Ask {
    /// `GET /` from a browser: 303 to `/ui/`.
    Redirect,
    /// `GET /ui/…`: an asset (or 404).
    Asset,
}

/// Whether `request` is the console's, not the API's: a `GET`/`HEAD` under `/ui`, or a
/// browser's `GET /` (its `Accept` prefers HTML to JSON). Worker nodes serve no console.
pub(crate) fn asks(settings: &GatewaySettings, request: &Request<Incoming>) -> Option<Ask> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) || !settings.role.serves_api() {
        return None;
    }
    let path = request.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        return Some(Ask::Asset);
    }
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok());
    (path == "/" && accept.is_some_and(prefers_html)).then_some(Ask::Redirect)
}

/// Whether an `Accept` header names `text/html` with a weight at least that of JSON (a
/// browser's navigation); `*/*` alone (curl, API clients) does not count.
pub(crate) fn prefers_html(accept: &str) -> bool {
    let weight = |wanted: &str| {
        accept
            .split(',')
            .take(64)
            .filter_map(|entry| {
                let mut parts = entry.split(';');
                let kind = parts.next()?.trim();
                if !kind.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|param| param.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(None, |best: Option<f32>, q| {
                Some(best.map_or(q, |b| b.max(q)))
            })
    };
    match (weight("text/html"), weight("application/json")) {
        (Some(html), json) => html > 0.0 && html >= json.unwrap_or(0.0),
        (None, _) => false,
    }
}

/// Serves the console's `ask`.
pub(crate) fn serve(ask: Ask, request: &Request<Incoming>) -> HttpResponse {
    let mut response = match ask {
        Ask::Redirect => {
            let mut response = text_response(
                StatusCode::SEE_OTHER,
                b"See /ui/\n".to_vec(),
                "text/plain; charset=utf-8",
            );
            response
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            response
                .headers_mut()
                .insert("vary", HeaderValue::from_static("Accept"));
            response
        }
        Ask::Asset => asset(request),
    };
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|value| value.to_str().ok());
    let policy =
        HeaderValue::from_str(&policy(host)).unwrap_or_else(|_| HeaderValue::from_static(POLICY));
    let headers = response.headers_mut();
    headers.insert("content-security-policy", policy);
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn asset(request: &Request<Incoming>) -> HttpResponse {
    let path = request.uri().path();
    let version = request
        .uri()
        .query()
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("v=")));
    let assets = &*ASSETS;
    let (body, content_type, current) = match path {
        "/ui" => {
            let mut response = text_response(
                StatusCode::MOVED_PERMANENTLY,
                Vec::new(),
                "text/plain; charset=utf-8",
            );
            response
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            return response;
        }
        "/ui/" | "/ui/index.html" => (assets.index.as_str(), "text/html; charset=utf-8", None),
        "/ui/app.js" => (
            SCRIPT,
            "text/javascript; charset=utf-8",
            Some(&assets.script_version),
        ),
        "/ui/app.css" => (
            STYLE,
            "text/css; charset=utf-8",
            Some(&assets.style_version),
        ),
        "/ui/icon.svg" => (ICON, "image/svg+xml", None),
        _ => {
            return Failure::not_found("console", format!("No console asset at {path}."))
                .into_response()
        }
    };
    let mut response = text_response(StatusCode::OK, body.as_bytes().to_vec(), content_type);
    let cache = match (current, version) {
        (Some(current), Some(asked)) if current == asked => "public, max-age=31536000, immutable",
        _ => "no-cache",
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_told_apart_from_api_clients() {
        for accept in [
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "text/html",
            "application/json;q=0.5, text/html",
        ] {
            assert!(prefers_html(accept), "{accept}");
        }
        for accept in [
            "*/*",
            "application/json",
            "application/json, text/html;q=0.9",
            "text/html;q=0",
            "",
            "text/plain",
        ] {
            assert!(!prefers_html(accept), "{accept}");
        }
    }

    #[test]
    fn the_policy_names_only_a_plain_host() {
        assert!(policy(Some("127.0.0.1:8080"))
            .contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(policy(Some("[::1]:80")).contains("ws://[::1]:80"));
        for hostile in ["a; script-src *", "a b", "", "a\"b"] {
            assert_eq!(policy(Some(hostile)), POLICY, "{hostile}");
        }
        assert_eq!(policy(None), POLICY);
    }

    #[test]
    fn the_page_links_its_assets_by_digest_and_stays_small() {
        let assets = &*ASSETS;
        assert!(assets
            .index
            .contains(&format!("app.js?v={}", assets.script_version)));
        assert!(assets
            .index
            .contains(&format!("app.css?v={}", assets.style_version)));
        let total = assets.index.len() + SCRIPT.len() + STYLE.len() + ICON.len();
        assert!(total < 100 * 1024, "the console is {total} bytes");
        // The script builds the DOM from text only.
        assert!(!SCRIPT.contains("innerHTML"));
        assert!(!SCRIPT.contains("insertAdjacentHTML"));
        assert!(!SCRIPT.contains("document.write"));
        assert!(!INDEX.contains("<script>"));
        assert!(!INDEX.contains("style="));
    }
}
