//! The Redis backend: the [`Queue`], [`Slots`] and [`HostBlacklist`] ports on Redis standalone,
//! Sentinel or Cluster, with fred; each port in its own file here, the Lua in `scripts.rs`.
//! Key layout, scripts and the message state machine: `src/adapters/design.md`.
//!
//! Every operation that touches more than one key is one Lua script, so it is atomic; every key
//! carries the hash tag `{prefix}`, so in a cluster they all live in one slot and the scripts are
//! legal there. Time inside the scripts is the server's (`TIME`), so nodes with skewed clocks
//! still agree on which leases expired.
//!
//! [`Queue`]: fastlane_actors::ports::Queue
//! [`Slots`]: fastlane_actors::ports::Slots
//! [`HostBlacklist`]: fastlane_actors::ports::HostBlacklist

mod blacklist;
mod queue;
mod scripts;
mod slots;

use fastlane_actors::ports::QueueError;
use fred::prelude::{Builder, ClientLike, Config, Error as FredError, ErrorKind, ReconnectPolicy};
use fred::types::config::{Server, ServerConfig, TlsConnector};
use fred::types::scripts::Script;
use fred::types::Value;
use std::time::Duration;

/// Timeout of every Redis command, reconnection included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first connection may take before the node refuses to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses `REDIS_URL`:
/// - `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS);
/// - `redis+sentinel://[[user]:password@]host:port[,host:port…][/service_name[/db]]` (the
///   original's form; `rediss+sentinel://` for TLS), the master of `service_name` (default
///   `mymaster`);
/// - `redis+cluster://[[user]:password@]host:port[,host:port…]` (`rediss+cluster://`), any known
///   nodes of a cluster; fred's own `redis-cluster://` and `redis-sentinel://` forms work too.
pub fn parse_url(url: &str) -> Result<Config, String> {
    let invalid = |why: &str| format!("invalid REDIS_URL: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://…"))?;
    let (topology, tls) = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "rediss" | "redis-cluster" | "rediss-cluster" | "redis-sentinel"
        | "rediss-sentinel" => {
            if rest.split('/').next().unwrap_or_default().contains(',') {
                return Err(invalid(
                    "several hosts need redis+sentinel:// or redis+cluster://",
                ));
            }
            return Config::from_url(url).map_err(|error| invalid(error.details()));
        }
        "redis+sentinel" => ("sentinel", false),
        "rediss+sentinel" => ("sentinel", true),
        "redis+cluster" => ("cluster", false),
        "rediss+cluster" => ("cluster", true),
        other => return Err(invalid(&format!("unsupported scheme {other}://"))),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.split('?').next().unwrap_or_default();
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            (
                Some(user).filter(|user| !user.is_empty()).map(String::from),
                Some(password)
                    .filter(|password| !password.is_empty())
                    .map(String::from),
            )
        }
    };
    // Hosts are named by position, not quoted: in a malformed URL (a password with a `/`),
    // what looks like a host may be part of the password.
    let servers = hosts
        .split(',')
        .enumerate()
        .map(|(index, host)| {
            let number = index + 1;
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| invalid(&format!("host {number} needs a port")))?;
            let port: u16 = port
                .parse()
                .map_err(|_| invalid(&format!("bad port in host {number}")))?;
            if name.is_empty() {
                return Err(invalid(&format!("host {number} needs a host name")));
            }
            Ok(Server::new(name.trim_matches(['[', ']']), port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    let server = if topology == "sentinel" {
        let service_name = segments.next().unwrap_or("mymaster").to_string();
        ServerConfig::Sentinel {
            hosts: servers,
            service_name,
        }
    } else {
        ServerConfig::Clustered {
            hosts: servers,
            policy: Default::default(),
        }
    };
    let database = match segments.next() {
        Some(db) if topology == "sentinel" => Some(
            db.parse::<u8>()
                .map_err(|_| invalid(&format!("bad database {db:?}")))?,
        ),
        Some(_) => return Err(invalid("a cluster has no databases")),
        None => None,
    };
    let tls = if tls {
        Some(
            TlsConnector::default_rustls()
                .map_err(|error| invalid(&format!("TLS: {error}")))?
                .into(),
        )
    } else {
        None
    };
    Ok(Config {
        server,
        username,
        password,
        database,
        tls,
        ..Config::default()
    })
}

/// What kind of deployment a URL names, for `/healthcheck`.
pub(crate) fn describe(config: &Config) -> &'static str {
    match config.server {
        ServerConfig::Sentinel { .. } => "redis-sentinel",
        ServerConfig::Clustered { .. } => "redis-cluster",
        _ => "redis",
    }
}

/// The Redis backend: one connection (pool) and the namespace of its keys. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    client: fred::clients::Client,
    prefix: String,
    ready_key: String,
}

impl RedisBackend {
    /// Connects (waiting for the first connection, bounded) with reconnection forever after.
    /// `namespace` is the hash tag every key carries (`REDIS_KEY_PREFIX`).
    pub async fn connect(config: Config, namespace: &str) -> anyhow::Result<RedisBackend> {
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(3);
                connection.internal_command_timeout = Duration::from_secs(5);
                connection.max_command_attempts = 3;
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        client.connect();
        tokio::time::timeout(CONNECT_TIMEOUT, client.wait_for_connect())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "could not reach Redis within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })??;
        let prefix = format!("{{{namespace}}}:");
        Ok(RedisBackend {
            client,
            ready_key: format!("{prefix}ready"),
            prefix,
        })
    }

    /// Runs one of the scripts; the first key routes it to the node owning the slot.
    async fn script(&self, script: &Script, args: Vec<String>) -> Result<Value, QueueError> {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.prefix.clone());
        all.extend(args);
        script
            .evalsha_with_reload::<Value, _, _>(&self.client, vec![self.ready_key.clone()], all)
            .await
            .map_err(queue_error)
    }

    async fn strings(&self, script: &Script, args: Vec<String>) -> Result<Vec<String>, QueueError> {
        self.script(script, args)
            .await?
            .convert::<Vec<String>>()
            .map_err(queue_error)
    }

    async fn integer(&self, script: &Script, args: Vec<String>) -> Result<i64, QueueError> {
        self.script(script, args)
            .await?
            .convert::<i64>()
            .map_err(queue_error)
    }

    /// The deployment id every node of this queue uses: `candidate` if none was stored yet.
    pub async fn shared_deployment_id(&self, candidate: &str) -> Result<String, QueueError> {
        self.script(&scripts::DEPLOYMENT_ID, vec![candidate.to_string()])
            .await?
            .convert::<String>()
            .map_err(queue_error)
    }

    /// Removes every key of this namespace (tests only use it, on their own namespace).
    pub async fn clear(&self) -> Result<(), QueueError> {
        self.integer(&scripts::CLEAR, Vec::new()).await.map(|_| ())
    }
}

fn queue_error(error: FredError) -> QueueError {
    match error.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Cluster
        | ErrorKind::Sentinel
        | ErrorKind::Backpressure => QueueError::Unavailable(error.to_string()),
        _ if error.details().starts_with("LOADING")
            || error.details().starts_with("READONLY")
            || error.details().starts_with("CLUSTERDOWN")
            || error.details().starts_with("MASTERDOWN")
            || error.details().starts_with("TRYAGAIN") =>
        {
            QueueError::Unavailable(error.to_string())
        }
        _ => QueueError::Internal(error.to_string()),
    }
}
