//! Every JSON answer a test receives through these helpers is validated against the node's
//! OpenAPI description (`GET /openapi.json`, built in-process here by the same function), so the
//! description cannot drift from what the node answers.
//!
//! The operation is found by method and path template; the answer's status must be documented
//! for it, with `application/json`, and the body must match the schema (JSON Schema 2020-12,
//! `#/components/schemas/…` references resolved in the document). A path no route takes may
//! answer 404, a method its path does not take 405, both with the error JSON.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The description, once per test process.
pub fn document() -> &'static Value {
    fastlane_node::gateway::openapi::document()
}

fn validator(key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap().get(key) {
        return found.clone();
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document()["components"],
        "allOf": [schema],
    });
    let compiled =
        Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|error| {
            panic!("the description's schema for {key} is invalid: {error}")
        }));
    cache
        .lock()
        .unwrap()
        .insert(key.to_string(), compiled.clone());
    compiled
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|part| !part.is_empty()).collect()
}

/// The description's path templates that `path` (no query) fits.
fn templates(path: &str) -> Vec<&'static str> {
    let wanted = segments(path);
    document()["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter(|template| {
            let parts = segments(template);
            parts.len() == wanted.len()
                && parts.iter().zip(&wanted).all(|(part, segment)| {
                    (part.starts_with('{') && part.ends_with('}')) || part == segment
                })
        })
        .map(String::as_str)
        .collect()
}

/// Checks one answer: `url` is the request's (absolute or a path), `content_type` the answer's.
/// Answers that are not JSON are only checked to be documented when they are errors.
pub fn check(method: &str, url: &str, status: u16, content_type: Option<&str>, body: &[u8]) {
    let is_json = content_type
        .is_some_and(|value| value.split(';').next().unwrap().trim() == "application/json");
    // Methods are case-sensitive: `get` is not `GET` (the router answers it 405).
    let exact = method == method.to_ascii_uppercase();
    let mut method = method.to_ascii_lowercase();
    // The router takes the original's non-standard `DEL` as `DELETE`.
    if method == "del" {
        method = "delete".to_string();
    }
    if !is_json || method == "head" || method == "options" {
        return;
    }
    let path = url
        .strip_prefix("http://")
        .map(|rest| rest.find('/').map_or("/", |at| &rest[at..]))
        .unwrap_or(url);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let what = format!("{} {path} → {status}", method.to_uppercase());
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|error| {
        panic!(
            "{what}: the body is not JSON ({error}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let templates = templates(path);
    let operation = templates
        .iter()
        .filter(|_| exact)
        .find_map(|template| Some((*template, document()["paths"][template].get(&method)?)));
    let (key, schema) = match operation {
        Some((template, operation)) => {
            let Some(response) = operation["responses"].get(status.to_string()) else {
                panic!(
                    "{what}: status {status} is not documented for {} {template} in /openapi.json; body: {body}",
                    method.to_uppercase()
                );
            };
            let Some(schema) = response["content"]["application/json"].get("schema") else {
                panic!("{what}: /openapi.json documents no JSON answer for {status} of {template}; body: {body}");
            };
            (format!("{method} {template} {status}"), schema.clone())
        }
        None => {
            // A path that is not valid percent-encoded UTF-8 is refused before routing (400).
            let expected = if templates.is_empty() { 404 } else { 405 };
            assert!(
                status == expected || status == 400,
                "{what}: no operation in /openapi.json for this method and path; body: {body}"
            );
            (
                "error".to_string(),
                json!({"$ref": "#/components/schemas/ErrorBody"}),
            )
        }
    };
    let validator = validator(&key, &schema);
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|error| format!("  at '{}': {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the body does not match /openapi.json ({key}):\n{}\nbody: {body}",
        errors.join("\n")
    );
}

/// Checks a reqwest answer and hands back an equivalent one (its body read when it is JSON).
pub async fn checked(method: &str, response: reqwest::Response) -> reqwest::Response {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if !content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/json"))
    {
        return response;
    }
    let status = response.status();
    let version = response.version();
    let headers = response.headers().clone();
    let url = response.url().to_string();
    let bytes = response.bytes().await.expect("the answer's body");
    check(
        method,
        &url,
        status.as_u16(),
        content_type.as_deref(),
        &bytes,
    );
    let mut rebuilt = http::Response::builder()
        .status(status)
        .version(version)
        .body(bytes)
        .expect("a response");
    *rebuilt.headers_mut() = headers;
    reqwest::Response::from(rebuilt)
}
