//! The [`Slots`] port on Redis: a sorted set per pool (holder → lease end) and a set per holder
//! of the pools it holds; `Queue::renew` (the `RENEW` script) extends them.

use super::{scripts, RedisBackend};
use crate::adapters::message::millis;
use async_trait::async_trait;
use fastlane_actors::ports::{QueueError, Slots};
use std::time::Duration;

#[async_trait]
impl Slots for RedisBackend {
    async fn acquire(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        lease_for: Duration,
    ) -> Result<bool, QueueError> {
        let mut args = vec![holder.to_string(), millis(lease_for).to_string()];
        for (pool, limit) in pools {
            args.push(pool.clone());
            args.push(limit.to_string());
        }
        self.integer(&scripts::ACQUIRE_SLOTS, args)
            .await
            .map(|held| held == 1)
    }

    async fn release(&self, holder: &str) -> Result<(), QueueError> {
        self.integer(&scripts::RELEASE_SLOTS, vec![holder.to_string()])
            .await
            .map(|_| ())
    }

    async fn in_use(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let flat = self.strings(&scripts::SLOTS_IN_USE, Vec::new()).await?;
        let mut slots: Vec<(String, u64)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or_default()))
            .collect();
        slots.sort();
        Ok(slots)
    }
}
