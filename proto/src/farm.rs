//! Docker farms (`DOCKER_HOSTS`): which hosts run which tasks, and how many at once.

use regex::Regex;
use serde_json::Value;
use std::fmt;

/// How to reach one Docker engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DockerEndpoint {
    /// `host:port` over plain HTTP, or over TLS (`https://host:port`) with the client
    /// certificate of the configuration.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port of the engine's API, never 0.
        port: u16,
        /// Whether the configuration used `https://`, so the engine is reached over TLS.
        tls: bool,
    },
    /// The local engine: `DOCKER_HOST` or the default socket.
    Local,
}

impl DockerEndpoint {
    /// Parses `host:port` (an optional `tcp://` or `http://` prefix is allowed; `https://`
    /// means TLS). The host may be any name or address, including `localhost` and single-label
    /// names.
    pub fn parse(text: &str) -> Result<DockerEndpoint, String> {
        let tls = text.trim().starts_with("https://");
        let trimmed = text
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("tcp://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let (host, port) = trimmed
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' is not of the form host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("'{text}' has an invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if !valid_host {
            return Err(format!("'{text}' has an invalid host name"));
        }
        Ok(DockerEndpoint::Tcp {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// The host part as shown in the API (`docker_host`, `/status/`).
    pub fn host(&self) -> &str {
        match self {
            DockerEndpoint::Tcp { host, .. } => host,
            DockerEndpoint::Local => "local",
        }
    }

    /// Whether the engine needs the configured client certificate (`https://` hosts).
    pub fn is_tls(&self) -> bool {
        matches!(self, DockerEndpoint::Tcp { tls: true, .. })
    }

    /// The port as shown in the API; 0 for the local socket.
    pub fn port(&self) -> u16 {
        match self {
            DockerEndpoint::Tcp { port, .. } => *port,
            DockerEndpoint::Local => 0,
        }
    }
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.host(), self.port())
    }
}

/// One farm: a task-id pattern, its hosts and its concurrency limit.
#[derive(Clone, Debug)]
pub struct Farm {
    /// The pattern as configured (empty = catch-all).
    pub pattern: String,
    matcher: Option<Regex>,
    /// The farm's engines (`hosts`); its tasks are placed on any of them.
    pub hosts: Vec<DockerEndpoint>,
    /// `maxRunning`: executions of this farm running at once, across all its hosts.
    pub max_running: u32,
    /// `defaults`: the resources of a container whose job asks for none of them.
    pub defaults: crate::container::Resources,
    /// `limits`: a job asking for more is refused at enqueue.
    pub limits: crate::container::Resources,
}

/// `maxRunning` when a farm does not say.
pub const DEFAULT_MAX_RUNNING: u32 = 10;

impl Farm {
    /// A farm whose `pattern` (a regex anchored at the start of the task id; empty matches
    /// every task) is checked here, so a bad `match` fails at start-up.
    pub fn new(
        pattern: &str,
        hosts: Vec<DockerEndpoint>,
        max_running: u32,
    ) -> Result<Farm, String> {
        let matcher = if pattern.is_empty() {
            None
        } else {
            // Anchored at the start only, like Python's re.match.
            Some(
                Regex::new(&format!("^(?:{pattern})"))
                    .map_err(|error| format!("invalid match pattern '{pattern}': {error}"))?,
            )
        };
        Ok(Farm {
            pattern: pattern.to_string(),
            matcher,
            hosts,
            max_running,
            defaults: Default::default(),
            limits: Default::default(),
        })
    }

    /// The farm of the local engine, used when `DOCKER_HOSTS` is not configured.
    pub fn local() -> Farm {
        Farm {
            pattern: String::new(),
            matcher: None,
            hosts: vec![DockerEndpoint::Local],
            max_running: DEFAULT_MAX_RUNNING,
            defaults: Default::default(),
            limits: Default::default(),
        }
    }

    /// Whether the farm has no `match` pattern and so takes every task; it belongs last.
    pub fn is_catch_all(&self) -> bool {
        self.matcher.is_none()
    }

    /// Whether this farm runs `task_id`: its pattern matches the start of the id.
    pub fn matches(&self, task_id: &str) -> bool {
        self.matcher
            .as_ref()
            .is_none_or(|matcher| matcher.is_match(task_id))
    }
}

/// Parses the `DOCKER_HOSTS` value: a list of farm objects or a single one.
pub fn parse_farms(value: &Value) -> Result<Vec<Farm>, String> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![value],
        _ => return Err("must be a JSON list of farms or a single farm object".into()),
    };
    if items.is_empty() {
        return Err("must configure at least one farm".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let object = item
                .as_object()
                .ok_or_else(|| format!("farm {index} must be an object"))?;
            let pattern = match object.get("match") {
                None | Some(Value::Null) => "",
                Some(Value::String(pattern)) => pattern.as_str(),
                Some(_) => return Err(format!("farm {index}: 'match' must be a string")),
            };
            let hosts = object
                .get("hosts")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("farm {index}: 'hosts' must be a list of \"host:port\""))?
                .iter()
                .map(|host| {
                    host.as_str()
                        .ok_or_else(|| format!("farm {index}: every host must be a string"))
                        .and_then(|host| {
                            DockerEndpoint::parse(host).map_err(|e| format!("farm {index}: {e}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if hosts.is_empty() {
                return Err(format!("farm {index}: 'hosts' is empty"));
            }
            let max_running = match object.get("maxRunning") {
                None | Some(Value::Null) => DEFAULT_MAX_RUNNING,
                Some(value) => value
                    .as_u64()
                    .filter(|max| *max >= 1 && *max <= u32::MAX as u64)
                    .ok_or_else(|| {
                        format!("farm {index}: 'maxRunning' must be a positive integer")
                    })? as u32,
            };
            let resources = |field: &str| {
                crate::container::Resources::parse(object.get(field), field)
                    .map_err(|e| format!("farm {index}: {e}"))
            };
            let (defaults, limits) = (resources("defaults")?, resources("limits")?);
            if let Some(beyond) = defaults.beyond(&limits) {
                return Err(format!(
                    "farm {index}: 'defaults' exceed 'limits': {beyond}"
                ));
            }
            let mut farm =
                Farm::new(pattern, hosts, max_running).map_err(|e| format!("farm {index}: {e}"))?;
            farm.defaults = defaults;
            farm.limits = limits;
            Ok(farm)
        })
        .collect()
}

/// The farm that runs `task_id`: the first whose pattern matches.
pub fn farm_for<'a>(farms: &'a [Farm], task_id: &str) -> Option<&'a Farm> {
    farms.iter().find(|farm| farm.matches(task_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_farms_and_routes_by_prefix() {
        let farms = parse_farms(&json!([
            {"match": "video-", "hosts": ["gpu:2375"], "maxRunning": 2},
            {"match": "", "hosts": ["localhost:2375", "docker-host:1234", "10.0.0.1:2375"]}
        ]))
        .unwrap();
        assert_eq!(farm_for(&farms, "video-encode").unwrap().pattern, "video-");
        assert_eq!(farm_for(&farms, "my-video-").unwrap().pattern, "");
        assert_eq!(farms[1].max_running, DEFAULT_MAX_RUNNING);
        assert_eq!(farms[1].hosts.len(), 3);
    }

    #[test]
    fn rejects_bad_farms() {
        assert!(parse_farms(&json!("x")).is_err());
        assert!(parse_farms(&json!([])).is_err());
        assert!(parse_farms(&json!([{"match": "(", "hosts": ["a:1"]}])).is_err());
        assert!(parse_farms(&json!([{"hosts": ["a"]}])).is_err());
        assert!(parse_farms(&json!([{"hosts": ["a:0"]}])).is_err());
        assert!(parse_farms(&json!([{"hosts": ["a:1"], "maxRunning": 0}])).is_err());
        assert!(parse_farms(&json!({"hosts": ["a b:1"]})).is_err());
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            DockerEndpoint::parse("tcp://127.0.0.1:2375")
                .unwrap()
                .to_string(),
            "127.0.0.1:2375"
        );
        let tls = DockerEndpoint::parse("https://docker-host:2376").unwrap();
        assert!(tls.is_tls());
        assert_eq!(tls.to_string(), "docker-host:2376");
        assert!(!DockerEndpoint::parse("docker-host:2375").unwrap().is_tls());
        assert!(DockerEndpoint::parse("example.com").is_err());
        assert!(DockerEndpoint::parse("example.com:abcd").is_err());
    }
}
