//! The [`Queue`] port on Redis: messages as hashes, the ready list, the delayed and leased
//! sorted sets, each operation one script (`scripts.rs`).

use super::{scripts, RedisBackend};
use crate::adapters::message::{self, millis};
use async_trait::async_trait;
use fastlane_actors::ports::{
    DeadLetter, Delivery, Queue, QueueError, QueueMessage, QueueStats, MAX_FAILED_DELIVERIES,
};
use fastlane_proto::Timestamp;
use std::time::Duration;

#[async_trait]
impl Queue for RedisBackend {
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError> {
        let body =
            message::encode(message).map_err(|error| QueueError::Internal(error.to_string()))?;
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
                    millis(lease_for).to_string(),
                    MAX_FAILED_DELIVERIES.to_string(),
                ],
            )
            .await?;
        let mut deliveries = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let (id, body, count) = (&triple[0], &triple[1], &triple[2]);
            match message::decode(id, body) {
                Ok(message) => deliveries.push(Delivery {
                    message,
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

    // The RENEW script extends the ids' slots too (see `Slots`).
    async fn renew(
        &self,
        consumer: &str,
        ids: &[String],
        lease_for: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let mut lost = Vec::new();
        for chunk in ids.chunks(500) {
            let mut args = vec![consumer.to_string(), millis(lease_for).to_string()];
            args.extend(chunk.iter().cloned());
            lost.extend(self.strings(&scripts::RENEW, args).await?);
        }
        Ok(lost)
    }

    async fn ack(&self, id: &str) -> Result<(), QueueError> {
        self.integer(&scripts::ACK, vec![id.to_string()])
            .await
            .map(|_| ())
    }

    async fn release(&self, id: &str, delay: Duration) -> Result<(), QueueError> {
        self.integer(
            &scripts::RELEASE,
            vec![id.to_string(), millis(delay).to_string()],
        )
        .await
        .map(|_| ())
    }

    async fn fail(&self, id: &str, delay: Duration, reason: &str) -> Result<bool, QueueError> {
        self.integer(
            &scripts::FAIL,
            vec![
                id.to_string(),
                millis(delay).to_string(),
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
        Ok(dead_letters_of(&flat))
    }

    // The position counts from the first letter buried (see the script).
    async fn dead_letters_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, u64), QueueError> {
        let flat = self
            .strings(
                &scripts::DEAD_LETTERS_AFTER,
                vec![after.to_string(), limit.to_string()],
            )
            .await?;
        // The first element is the position of the last letter sent (or `after`): letters
        // removed by retention may lie before the first one sent.
        let next = flat.first().and_then(|next| next.parse::<u64>().ok());
        let Some(next) = next.filter(|next| *next >= after) else {
            // A cursor that would not move could loop the sweep: an error instead.
            return Err(QueueError::Internal(format!(
                "unexpected dead-letter page: {:?}",
                flat.first()
            )));
        };
        Ok((dead_letters_of(&flat[1..]), next))
    }

    async fn remove_dead_letters_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, QueueError> {
        self.integer(
            &scripts::REMOVE_DEAD_LETTERS,
            vec![before.unix_millis().to_string(), limit.to_string()],
        )
        .await
        .map(|removed| removed.max(0) as u64)
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
}

/// The letters of a flat id, body, reason, at, deliveries reply.
fn dead_letters_of(flat: &[String]) -> Vec<DeadLetter> {
    flat.chunks_exact(5)
        .map(|row| DeadLetter {
            message: message::decode_leniently(&row[0], &row[1]),
            reason: row[2].clone(),
            at: Timestamp::from_unix_millis(row[3].parse().unwrap_or_default()),
            deliveries: row[4].parse().unwrap_or_default(),
        })
        .collect()
}
