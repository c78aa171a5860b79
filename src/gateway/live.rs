//! A live watch served over a WebSocket, with bounds on what a watcher can make the node hold.
//!
//! The socket gets one marker line when the replay leaves earlier output out
//! (`[fastlane: N bytes of earlier output not shown]`), the replay (at most the last MiB), then
//! the live chunks. It closes with:
//! - 1000 `done`: the output ended;
//! - 1008 (policy violation) `slow`: the watcher fell [`LIVE_CAPACITY`] chunks behind (the
//!   broadcast reports `Lagged`, or a frame could not be written while that many waited): the
//!   node drops it rather than buffering for it; a client may reconnect and gets the replay;
//! - 1001 (going away) `idle`: nothing, not even a pong to the pings sent every
//!   `WEBSOCKET_PING_INTERVAL_SECONDS`, came from the client for `WEBSOCKET_IDLE_TIMEOUT_SECONDS`,
//!   or a frame could not be written for that long.

use super::limits::Limits;
use super::stream::{text, Socket};
use fastlane_actors::log_feed::LIVE_CAPACITY;
use fastlane_actors::messages::LogWatch;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// How often a write that does not progress checks whether the watcher is too far behind.
const WRITE_CHECK: Duration = Duration::from_millis(200);
/// How long the close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a live socket ends.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Done,
    Slow,
    Idle,
    /// The client closed or the connection broke.
    Gone,
}

struct Watcher {
    sink: SplitSink<Socket, Message>,
    live: Option<Receiver<bytes::Bytes>>,
    /// When something last came from the client (any frame, pongs included).
    last_heard: Arc<Mutex<Instant>>,
    idle_timeout: Option<Duration>,
}

impl Watcher {
    fn idle(&self) -> bool {
        let last_heard = *self
            .last_heard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.idle_timeout
            .is_some_and(|limit| last_heard.elapsed() >= limit)
    }

    /// Writes one frame; gives up when the watcher falls too far behind or goes idle meanwhile
    /// (a client that does not read blocks the write, and would never see `Lagged`).
    async fn send(&mut self, message: Message) -> Result<(), Ending> {
        let mut check = tokio::time::interval(WRITE_CHECK);
        let sending = self.sink.send(message);
        tokio::pin!(sending);
        loop {
            tokio::select! {
                sent = &mut sending => return sent.map_err(|_| Ending::Gone),
                _ = check.tick() => {
                    if self.live.as_ref().is_some_and(|live| live.len() >= LIVE_CAPACITY) {
                        return Err(Ending::Slow);
                    }
                    let last_heard = *self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
                    if self.idle_timeout.is_some_and(|limit| last_heard.elapsed() >= limit) {
                        return Err(Ending::Idle);
                    }
                }
            }
        }
    }
}

/// Serves `watch` on `socket` until the output ends, the client leaves, or a bound is met.
pub(super) async fn serve(limits: &Limits, socket: Socket, watch: LogWatch) {
    let (sink, mut stream) = socket.split();
    let last_heard = Arc::new(Mutex::new(Instant::now()));
    // Reading is what answers the client's pings and close, and what hears its pongs.
    let (gone_sender, mut gone) = tokio::sync::oneshot::channel::<()>();
    let heard = last_heard.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            *heard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_sender.send(());
    });
    let mut watcher = Watcher {
        sink,
        live: watch.live,
        last_heard,
        idle_timeout: limits.idle_timeout,
    };
    let ending = match stream_output(
        &mut watcher,
        watch.history,
        watch.skipped_bytes,
        limits,
        &mut gone,
    )
    .await
    {
        Ok(()) => Ending::Done,
        Err(ending) => ending,
    };
    if ending != Ending::Done && ending != Ending::Gone {
        tracing::info!(reason = ?ending, "websocket watcher dropped");
    }
    let frame = match ending {
        Ending::Done => Some((CloseCode::Normal, "done")),
        Ending::Slow => Some((CloseCode::Policy, "slow")),
        Ending::Idle => Some((CloseCode::Away, "idle")),
        Ending::Gone => None,
    };
    if let Some((code, reason)) = frame {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        // A client that does not read may never take the close frame: bounded, then dropped.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, watcher.sink.send(close)).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut gone).await;
    }
    reader.abort();
}

async fn stream_output(
    watcher: &mut Watcher,
    history: Vec<bytes::Bytes>,
    skipped_bytes: u64,
    limits: &Limits,
    gone: &mut tokio::sync::oneshot::Receiver<()>,
) -> Result<(), Ending> {
    if skipped_bytes > 0 {
        let marker = format!("[fastlane: {skipped_bytes} bytes of earlier output not shown]\n");
        watcher.send(Message::Text(marker.into())).await?;
    }
    for chunk in &history {
        watcher.send(text(chunk)).await?;
    }
    drop(history);
    let tick = limits
        .ping_interval
        .or(limits.idle_timeout)
        .unwrap_or(Duration::from_secs(3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    loop {
        let Some(live) = watcher.live.as_mut() else {
            return Ok(());
        };
        // The event first, handled after the select: the receive borrows the watcher.
        let event = tokio::select! {
            _ = &mut *gone => return Err(Ending::Gone),
            _ = ticks.tick() => None,
            chunk = live.recv() => Some(chunk),
        };
        match event {
            None => {
                if watcher.idle() {
                    return Err(Ending::Idle);
                }
                if limits.ping_interval.is_some() {
                    watcher.send(Message::Ping(Default::default())).await?;
                }
            }
            Some(Ok(chunk)) => watcher.send(text(&chunk)).await?,
            Some(Err(RecvError::Lagged(_))) => return Err(Ending::Slow),
            Some(Err(RecvError::Closed)) => return Ok(()),
        }
    }
}
