//! Parsing and validating the body of `POST /tasks/{task}/` and `PUT …/jobs/{job}/`.
//!
//! Everything is checked before anything is written: a request either parses completely into an
//! [`EnqueueRequest`] or is refused with a message naming the offending field.

use crate::limits::{
    nests_deeper_than, MAX_NESTING_DEPTH, MAX_RECIPIENTS_PER_LIST, MAX_WEBHOOKS_PER_LIST,
};
use crate::model::Backoff;
use crate::schedule::{parse_start_in, CronSchedule, Misfire, Overlap};
use crate::timestamp::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A fully validated enqueue request.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueRequest {
    /// The container image reference, e.g. `ubuntu:22.04`.
    pub image: String,
    /// The command line run in the container, split shell-style later.
    pub command: String,
    /// `envs`: environment variables of the container; numbers and booleans become text.
    pub envs: BTreeMap<String, String>,
    /// `metadata`: the client's own fields, stored and shown back; `None` when absent or empty.
    pub custom: Option<Map<String, Value>>,
    /// How many times a failed execution is retried (0 to 1000).
    pub retries: u32,
    /// Unix time in seconds after which a still-enqueued execution expires instead of running.
    pub expiration: Option<i64>,
    /// Requested timeout in whole seconds (rounded up), before the hard limit applies.
    pub timeout: Option<u64>,
    /// The `notify` field: e-mail recipients per outcome list.
    pub emails: Value,
    /// The `webhooks` field: `{url, ..}` objects per outcome list, like `emails`.
    pub webhooks: Value,
    /// `additionalDNSEntries`: host name and IP pairs added to the container's hosts file.
    pub additional_dns_entries: Vec<(String, String)>,
    /// When to run; `None` runs it now.
    pub schedule: Option<ScheduleRequest>,
    /// The `misfire` policy; only cron jobs may set it.
    pub misfire: Misfire,
    /// The `overlap` policy; only cron jobs may set it.
    pub overlap: Overlap,
    /// `backoff`: the delay between retries; `None` uses the node's default.
    pub backoff: Option<Backoff>,
    /// At most this many executions of the task at once.
    pub max_concurrent: Option<u32>,
    /// `resources`, `labels`, `workingDir`, `user`, `stopGracePeriodSeconds`.
    pub container: crate::container::ContainerOptions,
}

/// When a job should run, as requested.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleRequest {
    /// `startAt`: run once at this time (given as unix seconds).
    StartAt(Timestamp),
    /// `startIn`: run once this long after the request (`2h30m50s`).
    StartIn(Duration),
    /// `cron`: run at every firing of the expression.
    Cron {
        /// The validated cron expression, trimmed.
        expression: String,
        /// The request's `timezone` (IANA name); `None` means UTC.
        timezone: Option<String>,
    },
}

/// Why a request was refused; the message is shown to the client as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// The bound and the word for the items of the `notify` lists, and of the `webhooks` lists.
const RECIPIENTS: (usize, &str) = (MAX_RECIPIENTS_PER_LIST, "recipients");
const WEBHOOKS: (usize, &str) = (MAX_WEBHOOKS_PER_LIST, "webhooks");

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
    // Before anything else reads them: a stored row must stay readable (see `crate::limits`).
    for field in ["metadata", "envs", "webhooks", "notify"] {
        if object
            .get(field)
            .is_some_and(|value| nests_deeper_than(value, MAX_NESTING_DEPTH))
        {
            return invalid(format!(
                "'{field}' is nested more than {MAX_NESTING_DEPTH} levels deep."
            ));
        }
    }

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

    // As the original: a scheduling field that is null, 0 or "" counts as absent.
    let present = |field: &str| {
        object
            .get(field)
            .filter(|value| !matches!(value, Value::Null | Value::Bool(false)))
            .filter(|value| value.as_f64() != Some(0.0) && value.as_str() != Some(""))
    };
    let schedule_fields: Vec<&str> = ["startAt", "startIn", "cron"]
        .into_iter()
        .filter(|field| present(field).is_some())
        .collect();
    if schedule_fields.len() > 1 {
        return invalid("Only ONE of 'startAt', 'startIn' and 'cron' should be in the request.");
    }
    let timezone = match object.get("timezone") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => {
            return invalid("'timezone' must be an IANA time zone name such as \"Europe/Berlin\".")
        }
    };
    let schedule = match schedule_fields.first().copied() {
        None => None,
        Some("startAt") => {
            let value = present("startAt").expect("present");
            let seconds = value
                .as_f64()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e11)
                .ok_or_else(|| {
                    PayloadError("'startAt' must be a unix timestamp in seconds.".into())
                })?;
            Some(ScheduleRequest::StartAt(Timestamp::from_unix_seconds(
                seconds as i64,
            )))
        }
        Some("startIn") => {
            let text = present("startIn")
                .expect("present")
                .as_str()
                .ok_or_else(|| {
                    PayloadError("'startIn' must be a string like \"2h30m50s\".".into())
                })?;
            Some(ScheduleRequest::StartIn(
                parse_start_in(text).map_err(PayloadError)?,
            ))
        }
        Some(_) => {
            let expression = present("cron").expect("present").as_str().ok_or_else(|| {
                PayloadError("'cron' must be a string like \"*/10 * * * *\".".into())
            })?;
            CronSchedule::parse(expression, timezone.as_deref()).map_err(PayloadError)?;
            Some(ScheduleRequest::Cron {
                expression: expression.trim().to_string(),
                timezone: timezone.clone(),
            })
        }
    };
    let is_cron = matches!(schedule, Some(ScheduleRequest::Cron { .. }));
    for field in ["timezone", "misfire", "overlap"] {
        if !is_cron && object.get(field).is_some_and(|value| !value.is_null()) {
            return invalid(format!("'{field}' only applies to cron jobs."));
        }
    }
    let misfire = parse_policy(object.get("misfire"), "misfire", &["skip", "latest", "all"])?;
    let overlap = parse_policy(
        object.get("overlap"),
        "overlap",
        &["allow", "forbid", "replace"],
    )?;

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
        emails: parse_lists(object.get("notify"), "notify", RECIPIENTS, |item| {
            item.as_str()
                .filter(|address| address.contains('@'))
                .map(|_| ())
                .ok_or("an e-mail address")
        })?,
        webhooks: parse_webhooks(object.get("webhooks"))?,
        additional_dns_entries: parse_dns_entries(object.get("additionalDNSEntries"))?,
        schedule,
        misfire,
        overlap,
        backoff: parse_backoff(object.get("backoff"))?,
        max_concurrent: match object.get("maxConcurrent") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .filter(|max| (1..=100_000).contains(max))
                    .ok_or_else(|| {
                        PayloadError("'maxConcurrent' must be a positive integer.".into())
                    })? as u32,
            ),
        },
        container: crate::container::ContainerOptions::parse(&object).map_err(PayloadError)?,
    })
}

/// The `webhooks` lists: every item an object with a `url` string, and a method and headers
/// [`crate::webhook::check_hook`] accepts.
fn parse_webhooks(value: Option<&Value>) -> Result<Value, PayloadError> {
    let lists = parse_lists(value, "webhooks", WEBHOOKS, |item| {
        item.as_object()
            .filter(|hook| hook.get("url").is_some_and(Value::is_string))
            .map(|_| ())
            .ok_or("an object with a 'url' string")
    })?;
    crate::webhook::check_lists(&lists).map_err(|error| PayloadError(error.to_string()))?;
    Ok(lists)
}

fn parse_policy<T: serde::de::DeserializeOwned + Default>(
    value: Option<&Value>,
    field: &str,
    choices: &[&str],
) -> Result<T, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| PayloadError(format!("'{field}' must be one of {}.", choices.join(", ")))),
    }
}

fn parse_backoff(value: Option<&Value>) -> Result<Option<Backoff>, PayloadError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let error = || {
        PayloadError("'backoff' must be {\"minMs\": n, \"factor\": x, \"maxMs\": n} with minMs <= maxMs and factor >= 1.".into())
    };
    let object = value.as_object().ok_or_else(error)?;
    let min_ms = object
        .get("minMs")
        .and_then(Value::as_u64)
        .ok_or_else(error)?;
    let factor = match object.get("factor") {
        None => 2.0,
        Some(factor) => factor
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 1.0 && *f <= 100.0)
            .ok_or_else(error)?,
    };
    let max_ms = match object.get("maxMs") {
        None => 3_600_000,
        Some(max) => max.as_u64().ok_or_else(error)?,
    };
    if min_ms > max_ms || max_ms > 7 * 86_400_000 {
        return Err(error());
    }
    Ok(Some(Backoff {
        min_ms,
        factor,
        max_ms,
    }))
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
    (max_items, noun): (usize, &str),
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
        if items.len() > max_items {
            return invalid(format!("'{field}.{key}' has more than {max_items} {noun}."));
        }
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
        assert_eq!(request.emails["fails"][0], "a@b.c");
        assert_eq!(request.emails["succeeds"], Value::Array(vec![]));
        assert_eq!(
            request.additional_dns_entries,
            vec![("db".into(), "10.0.0.2".into())]
        );
        assert!(request.custom.is_some());
    }

    #[test]
    fn parses_schedules() {
        let parse = |extra: &str| {
            parse_enqueue(format!(r#"{{"image": "a", "command": "b"{extra}}}"#).as_bytes()).unwrap()
        };
        assert_eq!(parse(r#", "startAt": 0"#).schedule, None);
        assert_eq!(parse(r#", "startIn": "", "cron": null"#).schedule, None);
        assert_eq!(
            parse(r#", "startAt": 1700000000"#).schedule,
            Some(ScheduleRequest::StartAt(Timestamp::from_unix_seconds(
                1_700_000_000
            )))
        );
        assert_eq!(
            parse(r#", "startIn": "1m30s""#).schedule,
            Some(ScheduleRequest::StartIn(Duration::from_secs(90)))
        );
        let cron = parse(
            r#", "cron": "*/5 * * * * *", "timezone": "Asia/Tokyo", "misfire": "all", "overlap": "allow""#,
        );
        assert_eq!(cron.misfire, Misfire::All);
        assert_eq!(cron.overlap, Overlap::Allow);
        assert!(matches!(
            cron.schedule,
            Some(ScheduleRequest::Cron {
                timezone: Some(_),
                ..
            })
        ));
        let backoff = parse(r#", "backoff": {"minMs": 100, "factor": 3, "maxMs": 1000}"#)
            .backoff
            .unwrap();
        assert_eq!(backoff.delay(1).as_millis(), 300);
        assert_eq!(backoff.delay(5).as_millis(), 1000);
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
        assert_eq!(
            error(
                r#"{"image": "a", "command": "x", "webhooks": {"fails": [{"url": "http://x/", "method": "GET"}]}}"#
            ),
            "'webhooks.fails[0].method' must be POST, PUT or PATCH."
        );
        assert!(error(
            r#"{"image": "a", "command": "x", "webhooks": {"succeeds": [{"url": "http://x/"}, {"url": "http://y/", "headers": {"Host": "z"}}]}}"#
        )
        .starts_with("'webhooks.succeeds[1].headers.Host' is not allowed"));
        assert!(
            error(r#"{"image": "a", "command": "x", "additionalDNSEntries": {"h": "x"}}"#)
                .contains("additionalDNSEntries")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "startAt": 1, "cron": "* * * * *"}"#)
                .starts_with("Only ONE")
        );
        assert!(error(r#"{"image": "a", "command": "x", "startIn": "soon"}"#).contains("startIn"));
        assert!(error(r#"{"image": "a", "command": "x", "startIn": 5}"#).contains("startIn"));
        assert!(error(r#"{"image": "a", "command": "x", "startAt": "now"}"#).contains("startAt"));
        assert!(error(r#"{"image": "a", "command": "x", "startAt": -1}"#).contains("startAt"));
        assert!(error(r#"{"image": "a", "command": "x", "cron": "99 * * * *"}"#).contains("cron"));
        assert!(
            error(r#"{"image": "a", "command": "x", "cron": "* * * * *", "timezone": "X/Y"}"#)
                .contains("timezone")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "timezone": "UTC"}"#).contains("cron jobs")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "cron": "* * * * *", "misfire": "some"}"#)
                .contains("misfire")
        );
        assert!(
            error(r#"{"image": "a", "command": "x", "backoff": {"minMs": 10, "maxMs": 5}}"#)
                .contains("backoff")
        );
        assert!(error(
            r#"{"image": "a", "command": "x", "backoff": {"minMs": 10, "factor": 0.5}}"#
        )
        .contains("backoff"));
        let huge = format!(
            r#"{{"image": "a", "command": "{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        assert!(error(&huge).contains("larger"));
    }
}
