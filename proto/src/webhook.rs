//! What a webhook may ask of the node: its method and its headers.
//!
//! A hook is checked twice: at enqueue, where a bad hook gets a 400 naming the field, and again
//! before each call, because jobs stored before these rules existed are still fired. The address
//! a hook may reach is a different matter, decided by the webhook adapter when it resolves the
//! URL (`src/adapters/webhooks/`).

use serde_json::{Map, Value};

/// The methods a webhook may use: the ones that carry the payload to the receiver. A GET or a
/// DELETE has no business in a notification and widens what a hook can do to an internal API.
pub const METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// Headers a hook may not set: `Host` would pick another virtual host than the vetted URL names,
/// and the hop-by-hop headers (RFC 9110 §7.6.1) and `Content-Length` describe the connection
/// and the framing, which the HTTP client owns; letting a job set them invites request
/// smuggling. `Proxy-*` names are refused by prefix.
const FORBIDDEN_HEADERS: [&str; 8] = [
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Why a hook was refused: the field (relative to the hook, e.g. `method` or `headers.Host`)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{field}' {reason}")]
pub struct HookError {
    /// The offending field, relative to the hook object.
    pub field: String,
    /// What is wrong, as the end of a sentence.
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> Result<(), HookError> {
    Err(HookError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// The hook's method, upper-cased; POST when it names none.
pub fn method_of(hook: &Map<String, Value>) -> String {
    hook.get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST")
        .to_uppercase()
}

/// Checks a hook's `method` and `headers`.
pub fn check_hook(hook: &Map<String, Value>) -> Result<(), HookError> {
    match hook.get("method") {
        None | Some(Value::Null) => {}
        Some(Value::String(method)) if METHODS.contains(&method.to_uppercase().as_str()) => {}
        Some(_) => return refuse("method", "must be POST, PUT or PATCH."),
    }
    let headers = match hook.get("headers") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(headers)) => headers,
        Some(_) => return refuse("headers", "must be an object of header names to values."),
    };
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if !is_token(name) {
            return refuse(field, "is not a valid header name.");
        }
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return refuse(
                field,
                "is not allowed: Host, Content-Length and hop-by-hop headers are set by the node.",
            );
        }
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return refuse(field, "must be a string, a number or a boolean."),
        };
        // CR and LF would end the header early; other controls are invalid in a field value.
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return refuse(field, "contains a control character.");
        }
    }
    Ok(())
}

/// Checks every hook of a `webhooks` field (lists of hook objects, as `payload` parsed them);
/// the error's field is the full path, e.g. `webhooks.fails[0].method`.
pub fn check_lists(lists: &Value) -> Result<(), HookError> {
    for (list, hooks) in lists.as_object().into_iter().flatten() {
        for (index, hook) in hooks.as_array().into_iter().flatten().enumerate() {
            if let Some(hook) = hook.as_object() {
                check_hook(hook).map_err(|error| HookError {
                    field: format!("webhooks.{list}[{index}].{}", error.field),
                    reason: error.reason,
                })?;
            }
        }
    }
    Ok(())
}

/// An RFC 9110 token: the characters a header name may have.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(hook: Value) -> Result<(), String> {
        check_hook(hook.as_object().unwrap()).map_err(|error| error.to_string())
    }

    #[test]
    fn allows_payload_methods_in_any_case() {
        for method in ["POST", "put", "Patch"] {
            check(json!({"url": "http://x/", "method": method})).unwrap();
        }
        check(json!({"url": "http://x/"})).unwrap();
        assert_eq!(
            method_of(json!({"method": "patch"}).as_object().unwrap()),
            "PATCH"
        );
        assert_eq!(method_of(json!({}).as_object().unwrap()), "POST");
    }

    #[test]
    fn refuses_other_methods() {
        for method in [json!("GET"), json!("DELETE"), json!("CONNECT"), json!(1)] {
            assert_eq!(
                check(json!({"url": "http://x/", "method": method})).unwrap_err(),
                "'method' must be POST, PUT or PATCH."
            );
        }
    }

    #[test]
    fn refuses_host_and_hop_by_hop_headers() {
        for name in [
            "Host",
            "connection",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Content-Length",
        ] {
            let error = check(json!({"url": "http://x/", "headers": {name: "v"}})).unwrap_err();
            assert!(
                error.starts_with(&format!("'headers.{name}' is not allowed")),
                "{error}"
            );
        }
        check(json!({"url": "http://x/", "headers": {"X-Token": "a", "X-N": 1}})).unwrap();
    }

    #[test]
    fn refuses_malformed_headers() {
        for headers in [
            json!([]),
            json!({"Bad Name": "v"}),
            json!({"": "v"}),
            json!({"X-A": "v\r\nHost: evil"}),
            json!({"X-A": {"nested": 1}}),
        ] {
            assert!(check(json!({"url": "http://x/", "headers": headers})).is_err());
        }
    }
}
