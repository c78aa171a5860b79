//! Chooses the store and queue from the configuration: the embedded SQLite database under
//! `DATA_DIR` by default, Redis when `REDIS_URL` is set, MongoDB when `MONGODB_CONFIG` or
//! `MONGODB_URL` is. Each is chosen on its own (e.g. Redis queue with the embedded store is
//! legal, though only Redis + MongoDB lets several nodes share work). The slots and the host
//! blacklist always come from the queue's backend: renewing a lease renews its slots there.

use super::embedded::{Durability, Embedded};
use super::mongo::{MongoSettings, MongoStore};
use super::redis::{self, RedisBackend};
use crate::config::Config;
use anyhow::Context;
use fastlane_actors::ports::{HostBlacklist, Queue, Slots, Store};
use std::sync::Arc;

/// The node's store, queue, slots and blacklist, and the names of the queue's and the store's
/// backends for `/healthcheck`.
pub(crate) struct Backends {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub slots: Arc<dyn Slots>,
    pub blacklist: Arc<dyn HostBlacklist>,
    pub names: (String, String),
    /// The Redis backend when it serves the queue: what several nodes share besides the ports.
    pub redis: Option<RedisBackend>,
}

/// The ports one backend serves together.
type QueuePorts = (Arc<dyn Queue>, Arc<dyn Slots>, Arc<dyn HostBlacklist>);

/// The three ports on one backend.
fn queue_ports<B: Queue + Slots + HostBlacklist + Clone>(backend: B) -> QueuePorts {
    (
        Arc::new(backend.clone()),
        Arc::new(backend.clone()),
        Arc::new(backend),
    )
}

impl Backends {
    /// Opens (connects to) every backend the configuration names; the embedded database once,
    /// when it serves the queue, the store or both.
    pub(crate) async fn open(config: &Config) -> anyhow::Result<Backends> {
        let data_dir = config.data_dir();
        let durability = Durability::parse(&config.string("SQLITE_SYNCHRONOUS"))
            .context("invalid value for SQLITE_SYNCHRONOUS: expected full or normal")?;
        let mut embedded = None;
        let mut open_embedded = || -> anyhow::Result<Embedded> {
            if let Some(embedded) = &embedded {
                return Ok(Clone::clone(embedded));
            }
            let opened = Embedded::open_with(&data_dir, durability).with_context(|| {
                format!(
                    "could not open the embedded store in {}",
                    data_dir.display()
                )
            })?;
            embedded = Some(opened.clone());
            Ok(opened)
        };
        let mut shared_redis = None;
        let ((queue, slots, blacklist), queue_name) = match config.optional("REDIS_URL") {
            Some(url) => {
                let redis_config = redis::parse_url(&url).map_err(anyhow::Error::msg)?;
                let name = redis::describe(&redis_config).to_string();
                let redis = RedisBackend::connect(redis_config, &config.string("REDIS_KEY_PREFIX"))
                    .await
                    .context("could not connect to Redis (REDIS_URL)")?;
                shared_redis = Some(redis.clone());
                (queue_ports(redis), name)
            }
            None => (queue_ports(open_embedded()?), "embedded".to_string()),
        };
        let mongo = MongoSettings::from_options(
            config.json("MONGODB_CONFIG"),
            config.optional("MONGODB_URL").as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let (store, store_name): (Arc<dyn Store>, String) = match mongo {
            Some(settings) => {
                let store = MongoStore::connect(&settings)
                    .await
                    .context("could not connect to MongoDB (MONGODB_CONFIG / MONGODB_URL)")?;
                (Arc::new(store), "mongodb".into())
            }
            None => (Arc::new(open_embedded()?), "embedded".into()),
        };
        Ok(Backends {
            store,
            queue,
            slots,
            blacklist,
            names: (queue_name, store_name),
            redis: shared_redis,
        })
    }
}
