//! What a job may ask of its container beyond image and command (issue 15, point 5): resource
//! limits (`resources`), labels, working directory, user and the stop grace period; and a farm's
//! `defaults` and `limits` for the resources. Everything is checked at enqueue, so a job that is
//! stored can be created by Docker.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The prefix of a job's own labels: they can never collide with fastlane's (`fastlane.task_id`,
/// `fastlane.deployment_id`, …), which the reaper and the container lookup rely on.
pub const USER_LABEL_PREFIX: &str = "fastlane.label.";
/// Most labels a job may give.
pub const MAX_LABELS: usize = 50;
/// Longest label key and value.
const MAX_LABEL_KEY: usize = 128;
const MAX_LABEL_VALUE: usize = 1024;
/// Bounds of each resource: what one Docker host could give at most, and Docker's own minimum.
const MAX_CPUS: f64 = 1024.0;
const MIN_MEMORY_MB: u64 = 6;
const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024;
const MAX_PIDS: u64 = 4_194_304;

/// Limits on a container's resources; an absent one is the farm's default (or none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs (`0.5` = half a core): Docker's `NanoCpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB: Docker's `Memory` (the container is killed, `OOMKilled`, beyond it).
    #[serde(default, rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Most processes and threads: Docker's `PidsLimit`.
    #[serde(default, rename = "pidsLimit", skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

impl Resources {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// These, with `defaults` where these say nothing.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            cpus: self.cpus.or(defaults.cpus),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            pids_limit: self.pids_limit.or(defaults.pids_limit),
        }
    }

    /// Why these exceed `limits`, if they do.
    pub fn beyond(&self, limits: &Resources) -> Option<String> {
        if let (Some(asked), Some(limit)) = (self.cpus, limits.cpus) {
            if asked > limit {
                return Some(format!(
                    "'resources.cpus' ({asked}) is above this farm's limit ({limit})."
                ));
            }
        }
        if let (Some(asked), Some(limit)) = (self.memory_mb, limits.memory_mb) {
            if asked > limit {
                return Some(format!(
                    "'resources.memoryMB' ({asked}) is above this farm's limit ({limit})."
                ));
            }
        }
        if let (Some(asked), Some(limit)) = (self.pids_limit, limits.pids_limit) {
            if asked > limit {
                return Some(format!(
                    "'resources.pidsLimit' ({asked}) is above this farm's limit ({limit})."
                ));
            }
        }
        None
    }

    /// Parses `{"cpus", "memoryMB", "pidsLimit"}` (each optional); `field` names it in errors.
    pub fn parse(value: Option<&Value>, field: &str) -> Result<Resources, String> {
        let object = match value {
            None | Some(Value::Null) => return Ok(Resources::default()),
            Some(Value::Object(object)) => object,
            Some(_) => {
                return Err(format!(
                    "'{field}' must be an object like {{\"cpus\": 0.5, \"memoryMB\": 256, \"pidsLimit\": 128}}."
                ))
            }
        };
        if let Some(unknown) = object
            .keys()
            .find(|key| !["cpus", "memoryMB", "pidsLimit"].contains(&key.as_str()))
        {
            return Err(format!(
                "'{field}.{unknown}' is not a resource (cpus, memoryMB, pidsLimit)."
            ));
        }
        let cpus = match object.get("cpus") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_f64()
                    .filter(|cpus| cpus.is_finite() && *cpus >= 0.01 && *cpus <= MAX_CPUS)
                    .ok_or_else(|| {
                        format!("'{field}.cpus' must be a number from 0.01 to {MAX_CPUS}.")
                    })?,
            ),
        };
        let integer = |name: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        format!("'{field}.{name}' must be an integer from {min} to {max}.")
                    }),
            }
        };
        Ok(Resources {
            cpus,
            memory_mb: integer("memoryMB", MIN_MEMORY_MB, MAX_MEMORY_MB)?,
            pids_limit: integer("pidsLimit", 1, MAX_PIDS)?,
        })
    }
}

/// A job's container options, stored under `metadata.container`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOptions {
    /// Resource limits asked for (the farm's defaults fill the rest when the container is made).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// The job's labels, without [`USER_LABEL_PREFIX`] (which the container's carry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The command's working directory (an absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid` the command runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SIGTERM → SIGKILL delay of a stop or a timeout, in seconds (capped by the node's
    /// configuration when used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_seconds: Option<u64>,
}

impl ContainerOptions {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == ContainerOptions::default()
    }

    /// Reads `resources`, `labels`, `workingDir`, `user` and `stopGracePeriodSeconds` of a
    /// request body.
    pub fn parse(object: &Map<String, Value>) -> Result<ContainerOptions, String> {
        let text = |field: &str, max: usize| -> Result<Option<String>, String> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text))
                    if !text.is_empty() && text.len() <= max && !text.contains('\0') =>
                {
                    Ok(Some(text.clone()))
                }
                Some(_) => Err(format!(
                    "'{field}' must be a non-empty string of at most {max} bytes."
                )),
            }
        };
        let working_dir = text("workingDir", 4096)?;
        if working_dir
            .as_ref()
            .is_some_and(|dir| !dir.starts_with('/'))
        {
            return Err("'workingDir' must be an absolute path.".into());
        }
        let user = text("user", 256)?;
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if let Some(user) = &user {
            let mut parts = user.splitn(2, ':');
            let valid = parts.next().is_some_and(valid_name) && parts.next().is_none_or(valid_name);
            if !valid {
                return Err(
                    "'user' must be a user name or uid, optionally ':' and a group name or gid."
                        .into(),
                );
            }
        }
        let stop_grace_period_seconds = match object.get("stopGracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().filter(|s| *s <= 86_400).ok_or_else(|| {
                "'stopGracePeriodSeconds' must be an integer from 0 to 86400.".to_string()
            })?),
        };
        Ok(ContainerOptions {
            resources: Resources::parse(object.get("resources"), "resources")?,
            labels: parse_labels(object.get("labels"))?,
            working_dir,
            user,
            stop_grace_period_seconds,
        })
    }
}

fn parse_labels(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err("'labels' must be an object of strings.".into()),
    };
    if object.len() > MAX_LABELS {
        return Err(format!("'labels' may have at most {MAX_LABELS} entries."));
    }
    let mut labels = BTreeMap::new();
    for (key, value) in object {
        let valid_key = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
        if !valid_key {
            return Err(format!(
                "label {key:?}: keys are 1 to {MAX_LABEL_KEY} letters, digits, '.', '-', '_' or '/'."
            ));
        }
        let Some(text) = value.as_str().filter(|text| text.len() <= MAX_LABEL_VALUE) else {
            return Err(format!(
                "label {key:?}: the value must be a string of at most {MAX_LABEL_VALUE} bytes."
            ));
        };
        labels.insert(key.clone(), text.to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<ContainerOptions, String> {
        ContainerOptions::parse(body.as_object().unwrap())
    }

    #[test]
    fn every_option_parses() {
        let options = parse(json!({
            "resources": {"cpus": 0.5, "memoryMB": 256, "pidsLimit": 128},
            "labels": {"team": "video", "cost-center/id": "42"},
            "workingDir": "/work",
            "user": "1000:1000",
            "stopGracePeriodSeconds": 30,
        }))
        .unwrap();
        assert_eq!(options.resources.cpus, Some(0.5));
        assert_eq!(options.resources.memory_mb, Some(256));
        assert_eq!(options.resources.pids_limit, Some(128));
        assert_eq!(options.labels["team"], "video");
        assert_eq!(options.working_dir.as_deref(), Some("/work"));
        assert_eq!(options.user.as_deref(), Some("1000:1000"));
        assert_eq!(options.stop_grace_period_seconds, Some(30));
        let stored = serde_json::to_value(&options).unwrap();
        assert_eq!(stored["resources"]["memoryMB"], 256);
        assert_eq!(
            serde_json::from_value::<ContainerOptions>(stored).unwrap(),
            options
        );
        assert!(parse(json!({})).unwrap().is_default());
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        for (body, expected) in [
            (json!({"resources": 2}), "'resources' must be an object"),
            (json!({"resources": {"cpus": 0}}), "resources.cpus"),
            (json!({"resources": {"cpus": "1"}}), "resources.cpus"),
            (json!({"resources": {"memoryMB": 1}}), "resources.memoryMB"),
            (json!({"resources": {"memoryMB": -5}}), "resources.memoryMB"),
            (
                json!({"resources": {"pidsLimit": 0}}),
                "resources.pidsLimit",
            ),
            (json!({"resources": {"gpus": 1}}), "resources.gpus"),
            (json!({"labels": ["a"]}), "'labels' must be an object"),
            (json!({"labels": {"a b": "x"}}), "label \"a b\""),
            (json!({"labels": {"a": 1}}), "label \"a\""),
            (json!({"workingDir": "relative"}), "absolute"),
            (json!({"workingDir": ""}), "workingDir"),
            (json!({"user": "root; rm"}), "'user'"),
            (json!({"user": "a:b:c"}), "'user'"),
            (
                json!({"stopGracePeriodSeconds": -1}),
                "stopGracePeriodSeconds",
            ),
            (
                json!({"stopGracePeriodSeconds": 1.5}),
                "stopGracePeriodSeconds",
            ),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let many: Map<String, Value> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(parse(json!({ "labels": many }))
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn defaults_fill_and_limits_refuse() {
        let asked = Resources {
            cpus: Some(2.0),
            ..Default::default()
        };
        let defaults = Resources {
            cpus: Some(1.0),
            memory_mb: Some(512),
            pids_limit: None,
        };
        let effective = asked.or(defaults);
        assert_eq!(effective.cpus, Some(2.0));
        assert_eq!(effective.memory_mb, Some(512));
        let limits = Resources {
            cpus: Some(1.5),
            ..Default::default()
        };
        assert!(asked.beyond(&limits).unwrap().contains("cpus"));
        assert!(defaults.beyond(&limits).is_none());
    }
}
