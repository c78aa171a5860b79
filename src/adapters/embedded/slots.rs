//! The [`Slots`] port on the embedded database: one row per (pool, holder) in `slots`, with the
//! time its lease ends. `Queue::renew` (in `queue.rs`) extends them.

use super::Embedded;
use crate::adapters::message::millis;
use async_trait::async_trait;
use fastlane_actors::ports::{QueueError, Slots};
use rusqlite::params;
use std::time::Duration;

#[async_trait]
impl Slots for Embedded {
    async fn acquire(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        lease_for: Duration,
    ) -> Result<bool, QueueError> {
        let holder = holder.to_string();
        let pools = pools.to_vec();
        let clock = self.clock;
        self.with(move |connection| {
            let transaction = connection.savepoint()?;
            let now = clock.now_ms();
            for (pool, limit) in &pools {
                transaction.execute(
                    "DELETE FROM slots WHERE pool = ?1 AND until < ?2",
                    params![pool, now],
                )?;
                let held: bool = transaction.query_row(
                    "SELECT EXISTS (SELECT 1 FROM slots WHERE pool = ?1 AND holder = ?2)",
                    params![pool, holder],
                    |row| row.get(0),
                )?;
                if held {
                    continue;
                }
                let used: i64 = transaction.query_row(
                    "SELECT COUNT(*) FROM slots WHERE pool = ?1",
                    params![pool],
                    |row| row.get(0),
                )?;
                if used >= i64::from(*limit) {
                    // All or none: dropping the transaction gives back what this call took.
                    return Ok(false);
                }
                transaction.execute(
                    "INSERT INTO slots (pool, holder, until) VALUES (?1, ?2, ?3)",
                    params![pool, holder, now + millis(lease_for)],
                )?;
            }
            transaction.commit()?;
            Ok(true)
        })
        .await
        .map_err(QueueError::from)
    }

    async fn release(&self, holder: &str) -> Result<(), QueueError> {
        let holder = holder.to_string();
        self.with(move |connection| {
            connection.execute("DELETE FROM slots WHERE holder = ?1", params![holder])?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn in_use(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let clock = self.clock;
        self.with(move |connection| {
            let now = clock.now_ms();
            let mut statement = connection.prepare_cached(
                "SELECT pool, COUNT(*) FROM slots WHERE until >= ?1 GROUP BY pool ORDER BY pool",
            )?;
            let rows = statement
                .query_map(params![now], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(QueueError::from)
    }
}
