//! PollerActor: leases due messages from the queue while the node has capacity, and hands each
//! to the RootActor to be run by a new JobActor. Started and restarted by the RootActor.
//!
//! In: `Poll` (a tick, a new message was pushed, or a slot freed), `Finished`, `Renew`.
//! Out: `RootMessage::SpawnJob`.
//!
//! It holds the set of messages this node has in flight, renews their leases so a long run is
//! not delivered twice, and never leases more than `max_in_flight`.

use crate::messages::{PollerMessage, RootMessage};
use crate::ports::LEASE_DURATION;
use crate::Services;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
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
}

/// How often the queue is looked at without being woken (delayed messages, expired leases).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const RENEW_INTERVAL: Duration = Duration::from_secs(15);

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
        myself.send_interval(RENEW_INTERVAL, || PollerMessage::Renew);
        myself.cast(PollerMessage::Poll)?;
        Ok(PollerState {
            services: args.services,
            root: args.root,
            in_flight: args.in_flight,
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
            PollerMessage::Finished { message_id } => {
                state.in_flight.remove(&message_id);
                state.poll().await;
            }
            PollerMessage::Renew => state.renew().await,
        }
        Ok(())
    }
}

impl PollerState {
    async fn poll(&mut self) {
        let capacity = self
            .services
            .settings
            .max_in_flight
            .saturating_sub(self.in_flight.len());
        if capacity == 0 {
            return;
        }
        let consumer = &self.services.settings.node_id;
        match self
            .services
            .queue
            .lease(consumer, capacity, LEASE_DURATION)
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

    async fn renew(&self) {
        if self.in_flight.is_empty() {
            return;
        }
        let ids: Vec<String> = self.in_flight.iter().cloned().collect();
        if let Err(error) = self
            .services
            .queue
            .renew(&self.services.settings.node_id, &ids, LEASE_DURATION)
            .await
        {
            tracing::warn!(%error, "could not renew leases");
        }
    }
}
