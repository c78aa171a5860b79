//! An in-memory `Queue` that records what the actors did to it: pushes (with their due time),
//! acks, releases, failures, dead letters, slot acquisitions.
//!
//! Three parts, as the ports are three: [`FakeMessages`] behind `Queue` (the message verbs),
//! [`FakeSlots`] implementing `Slots` (the concurrency semaphore) and [`FakeBlacklist`]
//! implementing `HostBlacklist`.
//!
//! Leasing is the poller's business, not the JobActor's: tests hand a JobActor its `Delivery`
//! directly, and `lease`, `renew` and the like answer `Internal` so that a test that starts
//! relying on them fails loudly.

use async_trait::async_trait;
use fastlane_actors::ports::{
    DeadLetter, Delivery, HostBlacklist, Queue, QueueError, QueueMessage, QueueStats, Slots,
};
use fastlane_proto::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not turn every later read into a second panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_faked(operation: &str) -> QueueError {
    QueueError::Internal(format!("{operation} is not implemented by the fake queue"))
}

/// What was done to the messages, in order.
#[derive(Clone, Debug, Default)]
pub struct MessageLog {
    pub pushes: Vec<(QueueMessage, Timestamp)>,
    pub acks: Vec<String>,
    pub releases: Vec<(String, Duration)>,
    pub fails: Vec<(String, Duration, String)>,
    pub dead_letters: Vec<(String, String)>,
}

/// The message part of the queue.
#[derive(Default)]
pub struct FakeMessages {
    log: Mutex<MessageLog>,
}

impl FakeMessages {
    pub fn log(&self) -> MessageLog {
        lock(&self.log).clone()
    }

    fn push(&self, message: &QueueMessage, due: Timestamp) {
        lock(&self.log).pushes.push((message.clone(), due));
    }

    fn ack(&self, id: &str) {
        lock(&self.log).acks.push(id.to_string());
    }

    fn release(&self, id: &str, delay: Duration) {
        lock(&self.log).releases.push((id.to_string(), delay));
    }

    fn fail(&self, id: &str, delay: Duration, reason: &str) {
        lock(&self.log)
            .fails
            .push((id.to_string(), delay, reason.to_string()));
    }

    fn dead_letter(&self, id: &str, reason: &str) {
        lock(&self.log)
            .dead_letters
            .push((id.to_string(), reason.to_string()));
    }
}

/// The slots held, and every successful acquisition in order.
#[derive(Clone, Debug, Default)]
pub struct SlotLog {
    /// Holder → the pools it holds a slot of.
    pub held: HashMap<String, Vec<String>>,
    pub acquisitions: Vec<(String, Vec<(String, u32)>)>,
    pub releases: Vec<String>,
}

/// The concurrency slots: all-or-none per holder, each pool capped by the limit the caller
/// gives (leases are not modelled: nothing in these tests outlives one).
#[derive(Default)]
pub struct FakeSlots {
    log: Mutex<SlotLog>,
}

impl FakeSlots {
    pub fn log(&self) -> SlotLog {
        lock(&self.log).clone()
    }

    fn take(&self, holder: &str, pools: &[(String, u32)]) -> bool {
        let mut log = lock(&self.log);
        if log.held.contains_key(holder) {
            return true;
        }
        let in_use = |pool: &str| {
            log.held
                .values()
                .filter(|held| held.iter().any(|name| name == pool))
                .count() as u64
        };
        if pools
            .iter()
            .any(|(pool, limit)| in_use(pool) >= u64::from(*limit))
        {
            return false;
        }
        log.held.insert(
            holder.to_string(),
            pools.iter().map(|(pool, _)| pool.clone()).collect(),
        );
        log.acquisitions.push((holder.to_string(), pools.to_vec()));
        true
    }

    fn give_back(&self, holder: &str) {
        let mut log = lock(&self.log);
        log.held.remove(holder);
        log.releases.push(holder.to_string());
    }

    fn counts(&self) -> Vec<(String, u64)> {
        let log = lock(&self.log);
        let mut counts: HashMap<String, u64> = HashMap::new();
        for pool in log.held.values().flatten() {
            *counts.entry(pool.clone()).or_default() += 1;
        }
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort();
        counts
    }
}

/// The blacklisted Docker hosts (`host:port`).
#[derive(Default)]
pub struct FakeBlacklist {
    hosts: Mutex<BTreeSet<String>>,
}

impl FakeBlacklist {
    fn insert(&self, host: &str) {
        lock(&self.hosts).insert(host.to_string());
    }

    fn delete(&self, host: &str) {
        lock(&self.hosts).remove(host);
    }

    fn hosts(&self) -> Vec<String> {
        lock(&self.hosts).iter().cloned().collect()
    }
}

/// The fake queue backend: its three parts, one per port.
#[derive(Default)]
pub struct FakeQueue {
    pub messages: FakeMessages,
    pub slots: Arc<FakeSlots>,
    pub blacklist: Arc<FakeBlacklist>,
}

#[async_trait]
impl Queue for FakeQueue {
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError> {
        self.messages.push(message, due);
        Ok(())
    }

    async fn lease(
        &self,
        _consumer: &str,
        _max: usize,
        _lease_for: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        Err(not_faked("lease"))
    }

    async fn renew(
        &self,
        _consumer: &str,
        _ids: &[String],
        _lease_for: Duration,
    ) -> Result<Vec<String>, QueueError> {
        Err(not_faked("renew"))
    }

    async fn ack(&self, id: &str) -> Result<(), QueueError> {
        self.messages.ack(id);
        Ok(())
    }

    async fn release(&self, id: &str, delay: Duration) -> Result<(), QueueError> {
        self.messages.release(id, delay);
        Ok(())
    }

    async fn fail(&self, id: &str, delay: Duration, reason: &str) -> Result<bool, QueueError> {
        self.messages.fail(id, delay, reason);
        Ok(false)
    }

    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        self.messages.dead_letter(id, reason);
        Ok(())
    }

    async fn dead_letters(&self, _limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Err(not_faked("dead_letters"))
    }

    async fn dead_letters_after(
        &self,
        _after: u64,
        _limit: usize,
    ) -> Result<(Vec<DeadLetter>, u64), QueueError> {
        Err(not_faked("dead_letters_after"))
    }

    async fn remove_dead_letters_before(
        &self,
        _before: fastlane_proto::Timestamp,
        _limit: usize,
    ) -> Result<u64, QueueError> {
        Ok(0)
    }

    async fn release_all(&self, _consumer: &str, _failed: bool) -> Result<u64, QueueError> {
        Err(not_faked("release_all"))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Err(not_faked("stats"))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

#[async_trait]
impl Slots for FakeSlots {
    async fn acquire(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        _lease_for: Duration,
    ) -> Result<bool, QueueError> {
        Ok(self.take(holder, pools))
    }

    async fn release(&self, holder: &str) -> Result<(), QueueError> {
        self.give_back(holder);
        Ok(())
    }

    async fn in_use(&self) -> Result<Vec<(String, u64)>, QueueError> {
        Ok(self.counts())
    }
}

#[async_trait]
impl HostBlacklist for FakeBlacklist {
    async fn add(&self, host: &str) -> Result<(), QueueError> {
        self.insert(host);
        Ok(())
    }

    async fn remove(&self, host: &str) -> Result<(), QueueError> {
        self.delete(host);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.hosts())
    }
}
