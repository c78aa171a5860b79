//! GateActor: admission to the farms. A JobActor asks for its slots (its farm's `maxRunning`,
//! its task's `maxConcurrent`) before it places a container, and waits, parked, until they are
//! granted: no polling of the queue, no busy loop, first come first served. Started and
//! restarted by the RootActor, registered under [`GATE_NAME`].
//!
//! In: `Acquire` (JobActor), `Release` (RootActor, when a JobActor is gone), `Tick` (its timer:
//! slots freed by expired leases or, with a shared backend, by other nodes).
//! Out: `SlotsGranted` to a waiting JobActor.
//!
//! The slots themselves live in the queue backend (`Slots::acquire`): leased, renewed with
//! the message leases, all-or-none; so the count is exact, and holds across nodes once the
//! backend is shared. A restarted gate has lost its waiters; waiting JobActors ask again.

use crate::messages::{GateMessage, JobMessage};
use crate::ports::LEASE_DURATION;
use crate::Services;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

struct Waiter {
    holder: String,
    pools: Vec<(String, u32)>,
    job: ActorRef<JobMessage>,
}

pub struct GateActor;

pub struct GateState {
    services: Services,
    waiting: VecDeque<Waiter>,
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
                    None => state.waiting.push_back(Waiter { holder, pools, job }),
                }
                state.grant().await;
            }
            GateMessage::Release { holder } => {
                state.waiting.retain(|waiter| waiter.holder != holder);
                if let Err(error) = state.services.slots.release(&holder).await {
                    tracing::warn!(%holder, %error, "could not release slots");
                }
                state.grant().await;
            }
            GateMessage::Tick => state.grant().await,
        }
        Ok(())
    }
}

impl GateState {
    /// Grants slots to waiters in arrival order. Once a pool is found full, later waiters for
    /// it are not tried in this pass, so nobody overtakes an earlier waiter of the same pool.
    async fn grant(&mut self) {
        let mut full: HashSet<String> = HashSet::new();
        let mut index = 0;
        while index < self.waiting.len() {
            let waiter = &self.waiting[index];
            if waiter.pools.iter().any(|(pool, _)| full.contains(pool)) {
                index += 1;
                continue;
            }
            match self
                .services
                .slots
                .acquire(&waiter.holder, &waiter.pools, LEASE_DURATION)
                .await
            {
                Ok(true) => {
                    let waiter = self.waiting.remove(index).expect("index in range");
                    if waiter.job.cast(JobMessage::SlotsGranted).is_err() {
                        // The JobActor is gone: give the slots back.
                        let _ = self.services.slots.release(&waiter.holder).await;
                    }
                }
                Ok(false) => {
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
}
