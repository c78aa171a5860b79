//! The HTTP server: accepts connections until shutdown, serves each (HTTP/1.1, upgradeable to
//! WebSocket) with [`handle`](super::handle) in its own task, then drains them, bounded. At most
//! `MAX_CONNECTIONS` are open at once; a client has [`HEADER_READ_TIMEOUT`] to send its headers.

use super::limits::ConnectionSlot;
use super::GatewaySettings;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` completes; then stops accepting, lets every connection
/// finish the request it is serving and close, and returns once all have, or after
/// `drain_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: Arc<GatewaySettings>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    // Each connection watches `stop`: on shutdown it finishes the request in flight and closes.
    // (hyper-util's GracefulShutdown does not take connections that can be upgraded to
    // WebSockets, so this is done by hand.)
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // `MAX_CONNECTIONS`: a connection holds a permit for its whole life (WebSocket included);
    // without one the loop does not accept, so further clients wait in the kernel's backlog.
    let slots = Arc::new(Semaphore::new(
        settings
            .limits
            .max_connections
            .unwrap_or(Semaphore::MAX_PERMITS),
    ));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Typically out of file descriptors: give connections time to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Reap finished connections so the set only holds live ones.
                while connections.try_join_next().is_some() {}
                let settings = settings.clone();
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let slot = ConnectionSlot(Arc::new(permit));
                    let service = service_fn(move |mut request: hyper::Request<_>| {
                        request.extensions_mut().insert(slot.clone());
                        super::handle(settings.clone(), request, peer)
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                        }
                        _ = stopped.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: no new requests, draining the ones in flight");
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some requests did not finish in time");
        // Not aborted: they may still finish while the actors stop, and end with the node.
        connections.detach_all();
    }
}
