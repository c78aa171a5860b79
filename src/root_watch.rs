//! RootWatch: the supervisor of the RootActor, so that `run` learns why the actor system ended.
//!
//! ractor's `JoinHandle` only says that an actor ended, not why; a supervisor is told the
//! reason (or the error) with the termination event. `run` waits on the reason beside its
//! shutdown signal: a root that ends before shutdown ends the node with that reason, instead of
//! leaving a gateway that answers 503 forever.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

/// Supervises the RootActor and reports how it ended, once.
pub(crate) struct RootWatch;

impl Actor for RootWatch {
    type Msg = ();
    type State = Option<oneshot::Sender<String>>;
    type Arguments = oneshot::Sender<String>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        ended: oneshot::Sender<String>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Some(ended))
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        ended: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let reason = match event {
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                reason.unwrap_or_else(|| "the root actor stopped".to_string())
            }
            SupervisionEvent::ActorFailed(_, error) => format!("the root actor failed: {error}"),
            _ => return Ok(()),
        };
        if let Some(ended) = ended.take() {
            let _ = ended.send(reason);
        }
        myself.stop(None);
        Ok(())
    }
}
