//! GateActor: admission to the farms. A JobActor asks for its slots (its farm's `maxRunning`,
//! its task's `maxConcurrent`) before it places a container, and waits, parked, until they are
//! granted: no polling of the queue, no busy loop, first come first served. Started and
//! restarted by the RootActor, registered under [`GATE_NAME`].
//!
//! In: `Acquire` (JobActor), `Release` (RootActor, when a JobActor is gone), `Tick` (its timer:
//! slots freed by expired leases or, with a shared backend, by other nodes).
//! Out: `SlotsGranted` to a waiting JobActor; `SlotsRefused` to one that would be more than
//! [`MAX_PARKED`] waiters; the number of waiters to the poller.
//!
//! The slots themselves live in the queue backend (`Slots::acquire`): leased, renewed with
//! the message leases, all-or-none; so the count is exact, and holds across nodes once the
//! backend is shared. A restarted gate has lost its waiters; waiting JobActors ask again.
//!
//! No head-of-line blocking: a parked JobActor holds its message's lease, but the poller does
//! not count parked ones against its `max_in_flight` (the gate tells it how many there are), so
//! executions waiting for a full pool never use up the lease budget other work needs. Parked
//! JobActors are bounded instead: beyond [`MAX_PARKED`] waiters a JobActor that cannot be
//! granted at once is refused and gives its message back to the queue with a growing delay (a
//! release, not a failure); the released ones come back in due order, each at most once per
//! delay, so the queue is not churned in a busy loop. A waiter blocked on one pool never holds
//! back a later waiter whose pools are free.

use crate::messages::{tell_poller_parked, GateMessage, JobMessage};
use crate::Services;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

struct Waiter {
    holder: String,
    pools: Vec<(String, u32)>,
    job: ActorRef<JobMessage>,
    /// Whether the backend was asked for this waiter's slots yet. A new waiter is asked once
    /// whatever the counts say: it may hold its slots already (its message's previous runner,
    /// e.g. this node before a restart, held them, and the lease renewals keep them), and then
    /// only the backend can tell; counting its own slots as taken would wait for them forever.
    asked: bool,
}

pub struct GateActor;

pub struct GateState {
    services: Services,
    waiting: VecDeque<Waiter>,
    /// The number of waiters the poller was last told.
    told_parked: Option<usize>,
}

const TICK: Duration = Duration::from_secs(1);

impl Actor for GateActor {
    type Msg = GateMessage;
    type State = GateState;
    type Arguments = Services;

    async fn pre_start(
        &self,
        myself: ActorRef<GateMessage>,
        services: Services,
    ) -> Result<GateState, ActorProcessingErr> {
        myself.send_interval(TICK, || GateMessage::Tick);
        Ok(GateState {
            services,
            waiting: VecDeque::new(),
            told_parked: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GateMessage>,
        message: GateMessage,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GateMessage::Acquire { holder, pools, job } => {
                match state
                    .waiting
                    .iter_mut()
                    .find(|waiter| waiter.holder == holder)
                {
                    Some(waiter) => waiter.job = job,
                    None => state.waiting.push_back(Waiter {
                        holder: holder.clone(),
                        pools,
                        job,
                        asked: false,
                    }),
                }
                state.grant(false).await;
                state.refuse_beyond_parking(&holder);
            }
            GateMessage::Release { holder } => {
                state.waiting.retain(|waiter| waiter.holder != holder);
                if let Err(error) = state.services.slots.release(&holder).await {
                    tracing::warn!(%holder, %error, "could not release slots");
                }
                state.grant(false).await;
            }
            GateMessage::Tick => {
                state.grant(true).await;
                // Also when unchanged: a restarted poller learns it within a second.
                state.told_parked = None;
            }
        }
        state.tell_parked();
        Ok(())
    }
}

/// How many JobActors of this node may wait parked; later ones that cannot be granted at once
/// give their message back to the queue (see the module doc). Each holds its job's record.
pub const MAX_PARKED: usize = 256;

impl GateState {
    /// Grants slots to waiters in arrival order. A waiter needing a full pool is passed over
    /// (it keeps its place), and nobody after it gets that pool in this pass; a later waiter
    /// whose pools are all free is served.
    ///
    /// With `announce` (every tick), the first waiter passed over for each full pool asks the
    /// backend anyway: a shared backend then counts it as waiting, so that a slot freed on
    /// another node goes to it before that node's newer waiters (see `Slots::acquire`); nodes
    /// take turns instead of one node's waiters starving another's.
    async fn grant(&mut self, announce: bool) {
        let mut full: HashSet<String> = HashSet::new();
        // A JobActor that left without a release (its lease went to another node, whose slots
        // under the same holder must stay) is forgotten without touching the slots.
        self.waiting.retain(|waiter| {
            !matches!(
                waiter.job.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            )
        });
        if self.waiting.is_empty() {
            return;
        }
        // One look at the counts per pass, so a blocked waiter costs no backend call.
        let mut used: HashMap<String, u64> = match self.services.slots.in_use().await {
            Ok(counts) => counts.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "could not read slot counts");
                return;
            }
        };
        let mut index = 0;
        while index < self.waiting.len() {
            let waiter = &self.waiting[index];
            let mut blocked = false;
            let mut first_blocked = false;
            for (pool, limit) in &waiter.pools {
                if full.contains(pool) {
                    blocked = true;
                } else if used.get(pool).copied().unwrap_or(0) >= u64::from(*limit) {
                    full.insert(pool.clone());
                    blocked = true;
                    first_blocked = true;
                }
            }
            if blocked && waiter.asked && !(announce && first_blocked) {
                index += 1;
                continue;
            }
            self.waiting[index].asked = true;
            let waiter = &self.waiting[index];
            let lease = self.services.settings.lease_duration;
            match self
                .services
                .slots
                .acquire(&waiter.holder, &waiter.pools, lease)
                .await
            {
                Ok(true) => {
                    let waiter = self.waiting.remove(index).expect("index in range");
                    for (pool, _) in &waiter.pools {
                        *used.entry(pool.clone()).or_default() += 1;
                    }
                    if waiter.job.cast(JobMessage::SlotsGranted).is_err() {
                        // The JobActor is gone: give the slots back.
                        let _ = self.services.slots.release(&waiter.holder).await;
                    }
                }
                Ok(false) => {
                    // Taken meanwhile (another node): which pool is unknown, so all of them.
                    full.extend(waiter.pools.iter().map(|(pool, _)| pool.clone()));
                    index += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not acquire slots");
                    return;
                }
            }
        }
    }

    /// Refuses `holder` if it still waits beyond the first [`MAX_PARKED`] waiters: it gives its
    /// message back instead of being parked.
    fn refuse_beyond_parking(&mut self, holder: &str) {
        let Some(position) = self
            .waiting
            .iter()
            .position(|waiter| waiter.holder == holder)
        else {
            return;
        };
        if position >= MAX_PARKED {
            let waiter = self.waiting.remove(position).expect("position in range");
            let _ = waiter.job.cast(JobMessage::SlotsRefused);
        }
    }

    /// Tells the poller how many JobActors wait, when that changed.
    fn tell_parked(&mut self) {
        let count = self.waiting.len();
        if self.told_parked != Some(count) {
            tell_poller_parked(count);
            self.told_parked = Some(count);
        }
    }
}
