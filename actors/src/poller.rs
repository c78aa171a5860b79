//! PollerActor: leases due messages from the queue while the node has capacity, and hands each
//! to the RootActor to be run by a new JobActor. Started and restarted by the RootActor.
//!
//! In: `Poll` (the tick), `Wake` (messages were pushed; coalesced), `Finished`, `Renew`,
//! `Parked`.
//! Out: `RootMessage::SpawnJob`; `JobMessage::LeaseLost` to a JobActor whose lease is gone.
//!
//! It holds the set of messages this node has in flight, renews their leases (every quarter of
//! the lease) so a long run is not delivered twice, and never has more than `max_in_flight` in
//! flight besides those parked at the gate (`Parked`, from the GateActor, which bounds them):
//! executions waiting for a full pool's slot never use up the lease budget of other work.
//! A renewal that finds a lease gone (the node was paused past it and another node took the
//! message) tells the JobActor, which stops working on it without touching its container.

use crate::gate::MAX_PARKED;
use crate::messages::{job_actor_name, JobMessage, PollerMessage, RootMessage, WAKE_PENDING};
use crate::Services;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub struct PollerActor;

pub struct PollerArgs {
    pub services: Services,
    pub root: ActorRef<RootMessage>,
    /// Messages already in flight (when the poller is restarted while jobs run).
    pub in_flight: HashSet<String>,
}

pub struct PollerState {
    services: Services,
    root: ActorRef<RootMessage>,
    in_flight: HashSet<String>,
    /// How many of `in_flight` wait parked at the gate, as the gate last said.
    parked: usize,
    /// When the leases were last renewed (monotonic): a poll long after it (the process was
    /// paused, or starved) renews first, so this node's running work keeps its leases and
    /// slots before anything new is leased in their place.
    last_renewed: tokio::time::Instant,
}

/// How often the queue is looked at without being woken (delayed messages, expired leases).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Messages leased per poll while the gate parks all it may (see `poll`).
const LEASES_PAST_A_FULL_GATE: usize = 4;

impl Actor for PollerActor {
    type Msg = PollerMessage;
    type State = PollerState;
    type Arguments = PollerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PollerMessage>,
        args: PollerArgs,
    ) -> Result<PollerState, ActorProcessingErr> {
        myself.send_interval(POLL_INTERVAL, || PollerMessage::Poll);
        // Three renewals may fail (a slow backend, a short pause) before a lease expires.
        myself.send_interval(args.services.settings.lease_duration / 4, || {
            PollerMessage::Renew
        });
        // A wake-up sent to a poller that died is not coming: the next one must be sent.
        WAKE_PENDING.store(false, Ordering::Release);
        myself.cast(PollerMessage::Poll)?;
        Ok(PollerState {
            services: args.services,
            root: args.root,
            in_flight: args.in_flight,
            parked: 0,
            last_renewed: tokio::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PollerMessage>,
        message: PollerMessage,
        state: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PollerMessage::Poll => state.poll().await,
            PollerMessage::Wake => {
                // Pushes from now on send a new wake-up: this poll may miss them.
                WAKE_PENDING.store(false, Ordering::Release);
                // With the gate full, what a poll leases is most likely refused and given
                // back: during a flood of POSTs that churn held up the starts. The tick
                // (every 500 ms) leases then, a bounded number each time.
                if state.parked < MAX_PARKED {
                    state.poll().await;
                }
            }
            PollerMessage::Finished { message_id } => {
                state.in_flight.remove(&message_id);
                // With the gate full, a finished one is most likely one it refused: leasing at
                // once would lease, refuse and give back the backlog in a tight loop (the
                // node's CPU then grew with the queue). The tick leases then, as above.
                if state.parked < MAX_PARKED {
                    state.poll().await;
                }
            }
            PollerMessage::Renew => state.renew().await,
            PollerMessage::Parked { count } => {
                let more_room = count > state.parked;
                state.parked = count;
                if more_room {
                    state.poll().await;
                }
            }
        }
        Ok(())
    }
}

impl PollerState {
    async fn poll(&mut self) {
        if self.last_renewed.elapsed() >= self.services.settings.lease_duration / 2 {
            self.renew().await;
        }
        let capacity = self
            .services
            .settings
            .max_in_flight
            .saturating_sub(self.in_flight.len().saturating_sub(self.parked));
        // What the gate cannot park is most likely refused and given back: lease at most the
        // room left at the gate, plus a few that may find work for free pools (no head-of-line
        // blocking), so that a start costs the same whatever the backlog (leasing the whole
        // allowance after each start made every start lease and give back ~256 messages).
        let capacity =
            capacity.min(MAX_PARKED.saturating_sub(self.parked) + LEASES_PAST_A_FULL_GATE);
        if capacity == 0 {
            return;
        }
        let consumer = &self.services.settings.node_id;
        match self
            .services
            .queue
            .lease(consumer, capacity, self.services.settings.lease_duration)
            .await
        {
            Ok(deliveries) => {
                for delivery in deliveries {
                    self.in_flight.insert(delivery.message.id.clone());
                    if self.root.cast(RootMessage::SpawnJob(delivery)).is_err() {
                        tracing::error!("root actor is gone, cannot run leased message");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not lease from the queue"),
        }
    }

    async fn renew(&mut self) {
        self.last_renewed = tokio::time::Instant::now();
        if self.in_flight.is_empty() {
            return;
        }
        let ids: Vec<String> = self.in_flight.iter().cloned().collect();
        let settings = &self.services.settings;
        let lost = match self
            .services
            .queue
            .renew(&settings.node_id, &ids, settings.lease_duration)
            .await
        {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "could not renew leases");
                return;
            }
        };
        for message_id in lost {
            self.lease_lost(message_id);
        }
    }

    /// A message this node no longer holds: its JobActor (if still there) stops working on it;
    /// the id leaves the in-flight set when the JobActor has ended (`Finished`).
    fn lease_lost(&mut self, message_id: String) {
        let actor = uuid::Uuid::parse_str(&message_id)
            .ok()
            .and_then(|id| ractor::registry::where_is(job_actor_name(id)));
        match actor {
            Some(actor) => {
                tracing::warn!(%message_id, "lease lost, the job actor leaves the execution");
                let _ = actor.send_message(JobMessage::LeaseLost);
            }
            None => {
                self.in_flight.remove(&message_id);
            }
        }
    }
}
