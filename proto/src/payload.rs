//! Parsing and validating the body of `POST /tasks/{task}/` and `PUT …/jobs/{job}/`.
//!
//! Everything is checked before anything is written: a request either parses completely into an
//! [`EnqueueRequest`] or is refused with a message naming the offending field.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A fully validated enqueue request.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueRequest {
    pub image: String,
    pub command: String,
    pub envs: BTreeMap<String, String>,
    pub custom: Option<Map<String, Value>>,
    pub retries: u32,
    pub expiration: Option<i64>,
    /// Requested timeout in whole seconds (rounded up), before the hard limit applies.
    pub timeout: Option<u64>,
    pub notify: Value,
    pub webhooks: Value,
    pub additional_dns_entries: Vec<(String, String)>,
}

/// Why a request was refused; the message is shown to the client as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, PayloadError> {
    Err(PayloadError(message.into()))
}

/// Parses and validates a request body.
pub fn parse_enqueue(body: &[u8]) -> Result<EnqueueRequest, PayloadError> {
    if body.len() > MAX_BODY_BYTES {
        return invalid(format!(
            "Failed to enqueue task because the JSON body is larger than {MAX_BODY_BYTES} bytes."
        ));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(Value::String(text)) if text.is_empty() => {
            return invalid("Failed to enqueue task because JSON body could not be parsed.")
        }
        Ok(value) => value,
        Err(_) => return invalid("Failed to enqueue task because JSON body could not be parsed."),
    };
    let Value::Object(object) = value else {
        return invalid("Failed to enqueue task because the JSON body must be an object.");
    };

    let (image, command) = match (object.get("image"), object.get("command")) {
        (Some(image), Some(command)) if !image.is_null() && !command.is_null() => (image, command),
        _ => return invalid("image and command must be filled in the request."),
    };
    let image = image
        .as_str()
        .ok_or_else(|| PayloadError("'image' must be a string.".into()))?;
    if crate::image::ImageRef::parse(image).is_none() {
        return invalid(format!(
            "'image' ({image:?}) is not a valid image reference."
        ));
    }
    let command = command
        .as_str()
        .ok_or_else(|| PayloadError("'command' must be a string.".into()))?;
    if crate::command::split(command).is_none() {
        return invalid("'command' has unbalanced quotes.");
    }

    let schedule_fields: Vec<&str> = ["startAt", "startIn", "cron"]
        .into_iter()
        .filter(|field| object.get(*field).is_some_and(|value| !value.is_null()))
        .collect();
    if schedule_fields.len() > 1 {
        return invalid("Only ONE of 'startAt', 'startIn' and 'cron' should be in the request.");
    }
    if let Some(field) = schedule_fields.first() {
        return invalid(format!(
            "'{field}' is not supported by this node yet: scheduled and cron jobs are not \
             available, post the job without it to run it now."
        ));
    }

    Ok(EnqueueRequest {
        image: image.to_string(),
        command: command.to_string(),
        envs: parse_envs(object.get("envs"))?,
        // As the original: a non-object `metadata` is ignored, an empty one stores nothing.
        custom: match object.get("metadata") {
            Some(Value::Object(custom)) if !custom.is_empty() => Some(custom.clone()),
            _ => None,
        },
        retries: parse_count(object.get("retries"), "retries")?,
        expiration: match object.get("expiration") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .filter(|expiration| *expiration >= 0)
                    .ok_or_else(|| {
                        PayloadError("'expiration' must be a unix timestamp in seconds.".into())
                    })?,
            ),
        },
        timeout: match object.get("timeout") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_f64()
                    .filter(|timeout| timeout.is_finite() && *timeout > 0.0)
                    .map(|timeout| timeout.ceil().min(u64::MAX as f64) as u64)
                    .ok_or_else(|| {
                        PayloadError("'timeout' must be a positive number of seconds.".into())
                    })?,
            ),
        },
        notify: parse_lists(object.get("notify"), "notify", |item| {
            item.as_str()
                .filter(|address| address.contains('@'))
                .map(|_| ())
                .ok_or("an e-mail address")
        })?,
        webhooks: parse_lists(object.get("webhooks"), "webhooks", |item| {
            item.as_object()
                .filter(|hook| hook.get("url").is_some_and(Value::is_string))
                .map(|_| ())
                .ok_or("an object with a 'url' string")
        })?,
        additional_dns_entries: parse_dns_entries(object.get("additionalDNSEntries"))?,
    })
}

fn parse_count(value: Option<&Value>, field: &str) -> Result<u32, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value
            .as_u64()
            .filter(|count| *count <= 1000)
            .map(|count| count as u32)
            .ok_or_else(|| PayloadError(format!("'{field}' must be an integer from 0 to 1000."))),
    }
}

fn parse_envs(value: Option<&Value>) -> Result<BTreeMap<String, String>, PayloadError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let object = value
        .as_object()
        .ok_or_else(|| PayloadError("'envs' must be an object of names to values.".into()))?;
    object
        .iter()
        .map(|(key, value)| {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(format!("'envs' has an invalid variable name {key:?}."));
            }
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => {
                    return invalid(format!(
                        "'envs.{key}' must be a string, a number or a boolean."
                    ))
                }
            };
            if text.contains('\0') {
                return invalid(format!("'envs.{key}' contains a NUL byte."));
            }
            Ok((key.clone(), text))
        })
        .collect()
}

/// `{succeeds: [..], fails: [..], finishes: [..]}` with every list defaulting to empty.
fn parse_lists(
    value: Option<&Value>,
    field: &str,
    check_item: impl Fn(&Value) -> Result<(), &'static str>,
) -> Result<Value, PayloadError> {
    let mut lists = Map::new();
    for key in ["succeeds", "fails", "finishes"] {
        lists.insert(key.to_string(), Value::Array(Vec::new()));
    }
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(Value::Object(lists));
    };
    let object = value.as_object().ok_or_else(|| {
        PayloadError(format!(
            "'{field}' must be an object with 'succeeds', 'fails' and 'finishes' lists."
        ))
    })?;
    for (key, items) in object {
        let items = items
            .as_array()
            .ok_or_else(|| PayloadError(format!("'{field}.{key}' must be a list.")))?;
        for item in items {
            if let Err(expected) = check_item(item) {
                return invalid(format!("every item of '{field}.{key}' must be {expected}."));
            }
        }
        lists.insert(key.clone(), Value::Array(items.clone()));
    }
    Ok(Value::Object(lists))
}

fn parse_dns_entries(value: Option<&Value>) -> Result<Vec<(String, String)>, PayloadError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(Vec::new());
    };
    let object = value.as_object().ok_or_else(|| {
        PayloadError("'additionalDNSEntries' must be an object of host names to IPs.".into())
    })?;
    object
        .iter()
        .map(|(host, ip)| {
            let ip = ip
                .as_str()
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                .ok_or_else(|| {
                    PayloadError(format!(
                        "'additionalDNSEntries.{host}' must be an IP address string."
                    ))
                })?;
            if host.is_empty() || host.contains(':') || host.chars().any(char::is_whitespace) {
                return invalid(format!(
                    "'additionalDNSEntries' has an invalid host {host:?}."
                ));
            }
            Ok((host.clone(), ip.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> String {
        parse_enqueue(body.as_bytes()).unwrap_err().0
    }

    #[test]
    fn parses_a_full_request() {
        let request = parse_enqueue(
            br#"{"image": "ubuntu:22.04", "command": "ls -lah", "envs": {"A": "1", "N": 2},
                 "metadata": {"a": 1}, "retries": 2, "timeout": 2.5, "expiration": 10,
                 "notify": {"fails": ["a@b.c"]}, "webhooks": {"succeeds": [{"url": "http://x/"}]},
                 "additionalDNSEntries": {"db": "10.0.0.2"}}"#,
        )
        .unwrap();
        assert_eq!(request.envs["N"], "2");
        assert_eq!(request.timeout, Some(3));
        assert_eq!(request.retries, 2);
        assert_eq!(request.notify["fails"][0], "a@b.c");
        assert_eq!(request.notify["succeeds"], Value::Array(vec![]));
        assert_eq!(
            request.additional_dns_entries,
            vec![("db".into(), "10.0.0.2".into())]
        );
        assert!(request.custom.is_some());
    }

    #[test]
    fn ignores_non_object_metadata_like_the_original() {
        for metadata in [r#""qwe""#, "123", r#"["as"]"#, "{}"] {
            let body = format!(r#"{{"image": "a", "command": "b", "metadata": {metadata}}}"#);
            assert_eq!(parse_enqueue(body.as_bytes()).unwrap().custom, None);
        }
    }

    #[test]
    fn refuses_malformed_bodies() {
        let parse_error = "Failed to enqueue task because JSON body could not be parsed.";
        assert_eq!(error(""), parse_error);
        assert_eq!(error("{"), parse_error);
        assert_eq!(error(r#""""#), parse_error);
        assert!(error("[1]").contains("must be an object"));
        assert_eq!(
            error(r#"{"image": "a"}"#),
            "image and command must be filled in the request."
        );
        assert_eq!(
            error(r#"{"image": null, "command": "x"}"#),
            "image and command must be filled in the request."
        );
        assert!(error(r#"{"image": 1, "command": "x"}"#).contains("'image'"));
        assert!(error(r#"{"image": "", "command": "x"}"#).contains("'image'"));
        assert!(error(r#"{"image": "a", "command": ["x"]}"#).contains("'command'"));
        assert!(error(r#"{"image": "a", "command": "'x"}"#).contains("quotes"));
        assert!(error(r#"{"image": "a", "command": "x", "retries": -1}"#).contains("'retries'"));
        assert!(error(r#"{"image": "a", "command": "x", "retries": "2"}"#).contains("'retries'"));
        assert!(error(r#"{"image": "a", "command": "x", "timeout": 0}"#).contains("'timeout'"));
        assert!(error(r#"{"image": "a", "command": "x", "timeout": "1"}"#).contains("'timeout'"));
        assert!(error(r#"{"image": "a", "command": "x", "envs": []}"#).contains("'envs'"));
        assert!(error(r#"{"image": "a", "command": "x", "envs": {"A": {}}}"#).contains("envs.A"));
        assert!(
            error(r#"{"image": "a", "command": "x", "notify": {"fails": [1]}}"#)
                .contains("notify.fails")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "webhooks": {"fails": [{}]}}"#)
                .contains("webhooks.fails")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "additionalDNSEntries": {"h": "x"}}"#)
                .contains("additionalDNSEntries")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "startAt": 1, "cron": "* * * * *"}"#)
                .starts_with("Only ONE")
        );
        assert!(error(r#"{"image": "a", "command": "x", "startIn": "1s"}"#).contains("startIn"));
        let huge = format!(
            r#"{{"image": "a", "command": "{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        assert!(error(&huge).contains("larger"));
    }
}
