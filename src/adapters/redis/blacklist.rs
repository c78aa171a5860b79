//! The [`HostBlacklist`] port on Redis: one set of `host:port`.

use super::{scripts, RedisBackend};
use async_trait::async_trait;
use fastlane_actors::ports::{HostBlacklist, QueueError};

#[async_trait]
impl HostBlacklist for RedisBackend {
    async fn add(&self, host: &str) -> Result<(), QueueError> {
        self.integer(&scripts::BLACKLIST, vec!["add".into(), host.to_string()])
            .await
            .map(|_| ())
    }

    async fn remove(&self, host: &str) -> Result<(), QueueError> {
        self.integer(&scripts::BLACKLIST, vec!["remove".into(), host.to_string()])
            .await
            .map(|_| ())
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        let mut hosts = self.strings(&scripts::BLACKLISTED, Vec::new()).await?;
        hosts.sort();
        Ok(hosts)
    }
}
