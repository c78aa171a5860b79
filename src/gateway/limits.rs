//! The gateway's bounds on what clients can hold (issue 11, point 6): open connections
//! (`MAX_CONNECTIONS`, in `server.rs`), requests being served (`MAX_IN_FLIGHT_REQUESTS`: beyond
//! it 503 with `Retry-After: 1`), the time a body may take to arrive
//! (`REQUEST_BODY_TIMEOUT_SECONDS`: 408), and WebSocket keep-alive (`WEBSOCKET_PING_INTERVAL_SECONDS`,
//! `WEBSOCKET_IDLE_TIMEOUT_SECONDS`, in `stream.rs`). A value of 0 turns a bound off.

use super::http::{Failure, HttpResponse};
use crate::config::Config;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection's place under `MAX_CONNECTIONS`, carried by each of its requests so that a
/// WebSocket upgraded from it keeps the place until the socket closes. Held, never read: the
/// place is given back when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct ConnectionSlot(#[allow(dead_code)] pub(crate) Arc<OwnedSemaphorePermit>);

/// The bounds, from the configuration.
#[derive(Clone, Debug, Default)]
pub(crate) struct Limits {
    /// Open connections; `None`: unbounded.
    pub(crate) max_connections: Option<usize>,
    /// Permits for requests being served; `None`: unbounded.
    in_flight: Option<Arc<Semaphore>>,
    /// How long a request body may take to arrive.
    pub(crate) body_timeout: Option<Duration>,
    /// How often a WebSocket is pinged.
    pub(crate) ping_interval: Option<Duration>,
    /// A WebSocket from which nothing (not even a pong) came for this long is closed.
    pub(crate) idle_timeout: Option<Duration>,
}

impl Limits {
    pub(crate) fn from_config(config: &Config) -> Limits {
        let count = |name: &str| Some(config.uint(name) as usize).filter(|count| *count > 0);
        let seconds = |name: &str| {
            Some(config.uint(name))
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
        };
        Limits {
            max_connections: count("MAX_CONNECTIONS"),
            in_flight: count("MAX_IN_FLIGHT_REQUESTS").map(|count| Arc::new(Semaphore::new(count))),
            body_timeout: seconds("REQUEST_BODY_TIMEOUT_SECONDS"),
            ping_interval: seconds("WEBSOCKET_PING_INTERVAL_SECONDS"),
            idle_timeout: seconds("WEBSOCKET_IDLE_TIMEOUT_SECONDS"),
        }
    }

    /// A permit to serve one request, held until its answer is ready; 503 with `Retry-After`
    /// when the node serves as many as it may. Never waits: a queue of waiting requests would be
    /// the unbounded buffer this bound exists to prevent.
    pub(crate) fn admit_request(&self) -> Result<Option<OwnedSemaphorePermit>, Box<HttpResponse>> {
        let Some(in_flight) = &self.in_flight else {
            return Ok(None);
        };
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let mut response = Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "admit_request",
                    "The node is serving as many requests as it may (MAX_IN_FLIGHT_REQUESTS); \
                     retry in a moment.",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                Err(Box::new(response))
            }
        }
    }
}
