//! Chooses the store and queue from the configuration: the embedded SQLite database under
//! `DATA_DIR` by default, Redis when `REDIS_URL` is set, MongoDB when `MONGODB_CONFIG` or
//! `MONGODB_URL` is. Each is chosen on its own (e.g. Redis queue with the embedded store is
//! legal, though only Redis + MongoDB lets several nodes share work).

use super::embedded::Embedded;
use super::mongo::{MongoSettings, MongoStore};
use super::redis::{self, RedisQueue};
use crate::config::Config;
use anyhow::Context;
use fastlane_actors::ports::{Queue, Store};
use std::sync::Arc;

/// The node's store and queue, and their names for `/healthcheck`.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub names: (String, String),
}

impl Backends {
    pub async fn open(config: &Config) -> anyhow::Result<Backends> {
        let data_dir = config.data_dir();
        let mut embedded = None;
        let mut open_embedded = || -> anyhow::Result<Embedded> {
            if let Some(embedded) = &embedded {
                return Ok(Clone::clone(embedded));
            }
            let opened = Embedded::open(&data_dir).with_context(|| {
                format!(
                    "could not open the embedded store in {}",
                    data_dir.display()
                )
            })?;
            embedded = Some(opened.clone());
            Ok(opened)
        };
        let (queue, queue_name): (Arc<dyn Queue>, String) = match config.optional("REDIS_URL") {
            Some(url) => {
                let redis_config = redis::parse_url(&url).map_err(anyhow::Error::msg)?;
                let name = redis::describe(&redis_config).to_string();
                let queue = RedisQueue::connect(redis_config, &config.string("REDIS_KEY_PREFIX"))
                    .await
                    .context("could not connect to Redis (REDIS_URL)")?;
                (Arc::new(queue), name)
            }
            None => (Arc::new(open_embedded()?), "embedded".into()),
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
            names: (queue_name, store_name),
        })
    }
}
