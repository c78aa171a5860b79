//! The Redis queue: the [`Queue`] port on Redis standalone, Sentinel or Cluster, with fred.
//! Key layout, scripts and the message state machine: `src/adapters/design.md`.
//!
//! Every operation that touches more than one key is one Lua script, so it is atomic; every key
//! carries the hash tag `{prefix}`, so in a cluster they all live in one slot and the scripts are
//! legal there. Time inside the scripts is the server's (`TIME`), so nodes with skewed clocks
//! still agree on which leases expired.

use async_trait::async_trait;
use fastlane_actors::ports::{
    DeadLetter, Delivery, Queue, QueueError, QueueMessage, QueueStats, MAX_FAILED_DELIVERIES,
};
use fastlane_proto::Timestamp;
use fred::prelude::{Builder, ClientLike, Config, Error as FredError, ErrorKind, ReconnectPolicy};
use fred::types::config::{Server, ServerConfig, TlsConnector};
use fred::types::scripts::Script;
use fred::types::Value;
use std::time::Duration;
use uuid::Uuid;

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
    let servers = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| invalid(&format!("{host:?} needs a port")))?;
            let port: u16 = port
                .parse()
                .map_err(|_| invalid(&format!("bad port in {host:?}")))?;
            if name.is_empty() {
                return Err(invalid(&format!("{host:?} needs a host name")));
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
pub fn describe(config: &Config) -> &'static str {
    match config.server {
        ServerConfig::Sentinel { .. } => "redis-sentinel",
        ServerConfig::Clustered { .. } => "redis-cluster",
        _ => "redis",
    }
}

/// The Redis queue. Cheap to clone.
#[derive(Clone)]
pub struct RedisQueue {
    client: fred::clients::Client,
    prefix: String,
    ready_key: String,
}

impl RedisQueue {
    /// Connects (waiting for the first connection, bounded) with reconnection forever after.
    /// `namespace` is the hash tag every key carries (`REDIS_KEY_PREFIX`).
    pub async fn connect(config: Config, namespace: &str) -> anyhow::Result<RedisQueue> {
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
        Ok(RedisQueue {
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

#[derive(serde::Serialize, serde::Deserialize)]
struct MessageBody {
    task_id: String,
    job_id: Uuid,
    execution_id: Uuid,
}

fn body_of(message: &QueueMessage) -> Result<String, QueueError> {
    serde_json::to_string(&MessageBody {
        task_id: message.task_id.clone(),
        job_id: message.job_id,
        execution_id: message.execution_id,
    })
    .map_err(|error| QueueError::Internal(error.to_string()))
}

fn millis(duration: Duration) -> String {
    duration.as_millis().min(i64::MAX as u128).to_string()
}

#[async_trait]
impl Queue for RedisQueue {
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError> {
        let body = body_of(message)?;
        self.integer(
            &scripts::PUSH,
            vec![message.id.clone(), body, due.unix_millis().to_string()],
        )
        .await
        .map(|_| ())
    }

    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let flat = self
            .strings(
                &scripts::LEASE,
                vec![
                    consumer.to_string(),
                    max.to_string(),
                    millis(lease_for),
                    MAX_FAILED_DELIVERIES.to_string(),
                ],
            )
            .await?;
        let mut deliveries = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let (id, body, count) = (&triple[0], &triple[1], &triple[2]);
            match serde_json::from_str::<MessageBody>(body) {
                Ok(body) => deliveries.push(Delivery {
                    message: QueueMessage {
                        id: id.clone(),
                        task_id: body.task_id,
                        job_id: body.job_id,
                        execution_id: body.execution_id,
                    },
                    deliveries: count.parse().unwrap_or(1),
                }),
                Err(error) => {
                    self.dead_letter(id, &format!("unreadable message: {error}"))
                        .await?
                }
            }
        }
        Ok(deliveries)
    }

    async fn renew(
        &self,
        consumer: &str,
        ids: &[String],
        lease_for: Duration,
    ) -> Result<(), QueueError> {
        for chunk in ids.chunks(500) {
            let mut args = vec![consumer.to_string(), millis(lease_for)];
            args.extend(chunk.iter().cloned());
            self.integer(&scripts::RENEW, args).await?;
        }
        Ok(())
    }

    async fn ack(&self, id: &str) -> Result<(), QueueError> {
        self.integer(&scripts::ACK, vec![id.to_string()])
            .await
            .map(|_| ())
    }

    async fn release(&self, id: &str, delay: Duration) -> Result<(), QueueError> {
        self.integer(&scripts::RELEASE, vec![id.to_string(), millis(delay)])
            .await
            .map(|_| ())
    }

    async fn fail(&self, id: &str, delay: Duration, reason: &str) -> Result<bool, QueueError> {
        self.integer(
            &scripts::FAIL,
            vec![
                id.to_string(),
                millis(delay),
                reason.to_string(),
                MAX_FAILED_DELIVERIES.to_string(),
            ],
        )
        .await
        .map(|buried| buried == 1)
    }

    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        self.integer(
            &scripts::DEAD_LETTER,
            vec![id.to_string(), reason.to_string()],
        )
        .await
        .map(|_| ())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let flat = self
            .strings(&scripts::DEAD_LETTERS, vec![limit.to_string()])
            .await?;
        Ok(flat
            .chunks_exact(5)
            .map(|row| {
                let body = serde_json::from_str::<MessageBody>(&row[1]).ok();
                DeadLetter {
                    message: QueueMessage {
                        id: row[0].clone(),
                        task_id: body.as_ref().map(|b| b.task_id.clone()).unwrap_or_default(),
                        job_id: body.as_ref().map(|b| b.job_id).unwrap_or_default(),
                        execution_id: body.map(|b| b.execution_id).unwrap_or_default(),
                    },
                    reason: row[2].clone(),
                    at: Timestamp::from_unix_millis(row[3].parse().unwrap_or_default()),
                    deliveries: row[4].parse().unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn release_all(&self, consumer: &str, failed: bool) -> Result<u64, QueueError> {
        self.integer(
            &scripts::RELEASE_ALL,
            vec![
                consumer.to_string(),
                if failed { "1" } else { "0" }.to_string(),
                MAX_FAILED_DELIVERIES.to_string(),
            ],
        )
        .await
        .map(|released| released.max(0) as u64)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let counts = self.strings(&scripts::STATS, Vec::new()).await?;
        let count = |index: usize| {
            counts
                .get(index)
                .and_then(|count| count.parse().ok())
                .unwrap_or_default()
        };
        Ok(QueueStats {
            ready: count(0),
            delayed: count(1),
            leased: count(2),
            dead: count(3),
        })
    }

    async fn ping(&self) -> Result<(), QueueError> {
        // A script, not PING: it proves the node that owns our slot answers writes.
        self.strings(&scripts::STATS, Vec::new()).await.map(|_| ())
    }

    async fn acquire_slots(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        lease_for: Duration,
    ) -> Result<bool, QueueError> {
        let mut args = vec![holder.to_string(), millis(lease_for)];
        for (pool, limit) in pools {
            args.push(pool.clone());
            args.push(limit.to_string());
        }
        self.integer(&scripts::ACQUIRE_SLOTS, args)
            .await
            .map(|held| held == 1)
    }

    async fn release_slots(&self, holder: &str) -> Result<(), QueueError> {
        self.integer(&scripts::RELEASE_SLOTS, vec![holder.to_string()])
            .await
            .map(|_| ())
    }

    async fn slots_in_use(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let flat = self.strings(&scripts::SLOTS_IN_USE, Vec::new()).await?;
        let mut slots: Vec<(String, u64)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or_default()))
            .collect();
        slots.sort();
        Ok(slots)
    }

    async fn blacklist_add(&self, host: &str) -> Result<(), QueueError> {
        self.integer(&scripts::BLACKLIST, vec!["add".into(), host.to_string()])
            .await
            .map(|_| ())
    }

    async fn blacklist_remove(&self, host: &str) -> Result<(), QueueError> {
        self.integer(&scripts::BLACKLIST, vec!["remove".into(), host.to_string()])
            .await
            .map(|_| ())
    }

    async fn blacklist(&self) -> Result<Vec<String>, QueueError> {
        let mut hosts = self.strings(&scripts::BLACKLISTED, Vec::new()).await?;
        hosts.sort();
        Ok(hosts)
    }
}

/// The Lua scripts. `ARGV[1]` is always the key prefix (`{namespace}:`); `KEYS[1]` is the ready
/// list, which routes the call to the node owning the namespace's slot.
mod scripts {
    use fred::types::scripts::Script;
    use std::sync::LazyLock;

    /// Shared by every script: the server's time in ms, and burying a message.
    const PRELUDE: &str = r#"
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function bury(id, reason)
  local m = p .. 'm:' .. id
  local body = redis.call('HGET', m, 'body')
  if not body then return 0 end
  local deliveries = redis.call('HGET', m, 'deliveries') or '0'
  local owner = redis.call('HGET', m, 'owner')
  if owner then redis.call('SREM', p .. 'owned:' .. owner, id) end
  redis.call('ZREM', p .. 'leased', id)
  redis.call('ZREM', p .. 'delayed', id)
  redis.call('LREM', p .. 'ready', 0, id)
  redis.call('DEL', m)
  redis.call('HSET', p .. 'd:' .. id, 'body', body, 'reason', reason, 'at', now,
    'deliveries', deliveries)
  redis.call('LPUSH', p .. 'dead', id)
  return 1
end
local function unlease(id)
  local m = p .. 'm:' .. id
  local owner = redis.call('HGET', m, 'owner')
  if owner then redis.call('SREM', p .. 'owned:' .. owner, id) end
  redis.call('HDEL', m, 'owner')
  redis.call('ZREM', p .. 'leased', id)
end
-- A failed delivery: counted; buried at the limit, else due again after `delay` ms.
local function failed(id, delay, reason, limit)
  local m = p .. 'm:' .. id
  if redis.call('EXISTS', m) == 0 then return 0 end
  unlease(id)
  local failures = redis.call('HINCRBY', m, 'failures', 1)
  redis.call('HSET', m, 'last_error', reason)
  if failures >= limit then return bury(id, reason) end
  redis.call('ZADD', p .. 'delayed', now + delay, id)
  return 0
end
"#;

    fn script(body: &str) -> Script {
        Script::from_lua(format!("{PRELUDE}{body}"))
    }

    /// ARGV: id, body, due_ms. A message already queued, leased or dead-lettered is left as is.
    pub static PUSH: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local id = ARGV[2]
if redis.call('EXISTS', p .. 'm:' .. id) == 1 or redis.call('EXISTS', p .. 'd:' .. id) == 1 then
  return 0
end
redis.call('HSET', p .. 'm:' .. id, 'body', ARGV[3], 'deliveries', 0, 'failures', 0)
local due = tonumber(ARGV[4])
if due <= now then
  redis.call('RPUSH', p .. 'ready', id)
else
  redis.call('ZADD', p .. 'delayed', due, id)
end
return 1
"#,
        )
    });

    /// ARGV: consumer, max, lease_ms, failure limit. Expired leases are failed deliveries; due
    /// delayed messages join the ready list in due order; then up to `max` are leased, FIFO.
    /// Returns id, body, deliveries for each.
    pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local consumer, max, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', p .. 'leased', '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  failed(id, 0, 'its lease expired: the node running it stopped answering', limit)
end
local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'delayed', id)
  redis.call('RPUSH', p .. 'ready', id)
end
local out = {}
local taken = 0
while taken < max do
  local id = redis.call('LPOP', p .. 'ready')
  if not id then break end
  local m = p .. 'm:' .. id
  local body = redis.call('HGET', m, 'body')
  if body and not redis.call('HGET', m, 'owner') then
    local deliveries = redis.call('HINCRBY', m, 'deliveries', 1)
    redis.call('HSET', m, 'owner', consumer)
    redis.call('ZADD', p .. 'leased', now + lease, id)
    redis.call('SADD', p .. 'owned:' .. consumer, id)
    out[#out + 1] = id
    out[#out + 1] = body
    out[#out + 1] = tostring(deliveries)
    taken = taken + 1
  end
end
return out
"#,
        )
    });

    /// ARGV: consumer, lease_ms, ids…: extends the consumer's leases and the ids' slots.
    pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local consumer, lease = ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', p .. 'm:' .. id, 'owner') == consumer then
    redis.call('ZADD', p .. 'leased', 'XX', now + lease, id)
  end
  local held = p .. 'held:' .. id
  for _, pool in ipairs(redis.call('SMEMBERS', held)) do
    redis.call('ZADD', p .. 'slots:' .. pool, 'XX', now + lease, id)
  end
  if redis.call('EXISTS', held) == 1 then redis.call('PEXPIRE', held, lease * 2) end
end
return 1
"#,
        )
    });

    /// ARGV: id.
    pub static ACK: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local id = ARGV[2]
unlease(id)
redis.call('ZREM', p .. 'delayed', id)
redis.call('DEL', p .. 'm:' .. id)
return 1
"#,
        )
    });

    /// ARGV: id, delay_ms.
    pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local id = ARGV[2]
if redis.call('EXISTS', p .. 'm:' .. id) == 0 then return 0 end
unlease(id)
redis.call('ZADD', p .. 'delayed', now + tonumber(ARGV[3]), id)
return 1
"#,
        )
    });

    /// ARGV: id, delay_ms, reason, failure limit. 1 when buried.
    pub static FAIL: LazyLock<Script> = LazyLock::new(|| {
        script(r#"return failed(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))"#)
    });

    /// ARGV: id, reason.
    pub static DEAD_LETTER: LazyLock<Script> =
        LazyLock::new(|| script(r#"return bury(ARGV[2], ARGV[3])"#));

    /// ARGV: limit. id, body, reason, at, deliveries of the newest dead letters.
    pub static DEAD_LETTERS: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local out = {}
for _, id in ipairs(redis.call('LRANGE', p .. 'dead', 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', p .. 'd:' .. id, 'body', 'reason', 'at', 'deliveries')
  out[#out + 1] = id
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or ''
  out[#out + 1] = f[3] or '0'
  out[#out + 1] = f[4] or '0'
end
return out
"#,
        )
    });

    /// ARGV: consumer, failed (1/0), failure limit. Its leased messages go back to the front
    /// of the ready list (they were due before everything there), counted as failures when
    /// `failed`.
    pub static RELEASE_ALL: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local consumer, limit = ARGV[2], tonumber(ARGV[4])
local ids = redis.call('SMEMBERS', p .. 'owned:' .. consumer)
local released = 0
for _, id in ipairs(ids) do
  local m = p .. 'm:' .. id
  if redis.call('HGET', m, 'owner') == consumer then
    released = released + 1
    if ARGV[3] == '1' then
      if failed(id, 0, 'the node running it restarted before it finished', limit) == 0 then
        redis.call('ZREM', p .. 'delayed', id)
        redis.call('LPUSH', p .. 'ready', id)
      end
    else
      unlease(id)
      redis.call('LPUSH', p .. 'ready', id)
    end
  end
end
redis.call('DEL', p .. 'owned:' .. consumer)
return released
"#,
        )
    });

    /// ready, delayed, leased, dead.
    pub static STATS: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local due = redis.call('ZCOUNT', p .. 'delayed', '-inf', now)
return {
  tostring(redis.call('LLEN', p .. 'ready') + due),
  tostring(redis.call('ZCARD', p .. 'delayed') - due),
  tostring(redis.call('ZCARD', p .. 'leased')),
  tostring(redis.call('LLEN', p .. 'dead')),
}
"#,
        )
    });

    /// ARGV: holder, lease_ms, pool, limit, pool, limit… All or none; 1 when held.
    pub static ACQUIRE_SLOTS: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local holder, lease = ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  local key = p .. 'slots:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  if not redis.call('ZSCORE', key, holder) and redis.call('ZCARD', key) >= tonumber(ARGV[i + 1]) then
    return 0
  end
end
local held = p .. 'held:' .. holder
for i = 4, #ARGV, 2 do
  redis.call('ZADD', p .. 'slots:' .. ARGV[i], now + lease, holder)
  redis.call('SADD', p .. 'pools', ARGV[i])
  redis.call('SADD', held, ARGV[i])
end
if #ARGV >= 4 then redis.call('PEXPIRE', held, lease * 2) end
return 1
"#,
        )
    });

    /// ARGV: holder.
    pub static RELEASE_SLOTS: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local held = p .. 'held:' .. ARGV[2]
for _, pool in ipairs(redis.call('SMEMBERS', held)) do
  redis.call('ZREM', p .. 'slots:' .. pool, ARGV[2])
end
redis.call('DEL', held)
return 1
"#,
        )
    });

    /// pool, count pairs of the slots held now.
    pub static SLOTS_IN_USE: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local out = {}
for _, pool in ipairs(redis.call('SMEMBERS', p .. 'pools')) do
  local key = p .. 'slots:' .. pool
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  local used = redis.call('ZCARD', key)
  if used == 0 then
    redis.call('SREM', p .. 'pools', pool)
  else
    out[#out + 1] = pool
    out[#out + 1] = tostring(used)
  end
end
return out
"#,
        )
    });

    /// ARGV: add|remove, host.
    pub static BLACKLIST: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
if ARGV[2] == 'add' then
  return redis.call('SADD', p .. 'blacklist', ARGV[3])
end
return redis.call('SREM', p .. 'blacklist', ARGV[3])
"#,
        )
    });

    pub static BLACKLISTED: LazyLock<Script> =
        LazyLock::new(|| script(r#"return redis.call('SMEMBERS', p .. 'blacklist')"#));

    /// Deletes every key of the namespace (for tests). Keys are found with SCAN on the node
    /// that owns the slot.
    pub static CLEAR: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local cursor = '0'
local deleted = 0
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', p .. '*', 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    redis.call('DEL', key)
    deleted = deleted + 1
  end
until cursor == '0'
return deleted
"#,
        )
    });
}
