//! Live output of one watched container: one Docker log stream shared by every watcher, a
//! bounded replay buffer for late joiners, and a bounded broadcast of what arrives.
//!
//! Bounds (issue 11, point 5): the replay keeps the last [`REPLAY_MAX_BYTES`] (older chunks are
//! dropped and counted, so a late joiner is told how much it missed); the broadcast holds at most
//! [`LIVE_CAPACITY`] chunks of at most [`CHUNK_MAX_BYTES`], and a watcher that falls that far
//! behind is dropped by the gateway (it sees `Lagged`) instead of being buffered for; output is
//! sent in chunks at most every [`BATCH`] (unless full), so `LIVE_CAPACITY` chunks are seconds of
//! output rather than a few milliseconds of single lines. The stream
//! itself ends [`LINGER`] after its last watcher left, so an unwatched container costs nothing.

use crate::messages::{HostMessage, LogWatch};
use bytes::{Bytes, BytesMut};
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How much earlier output a late joiner gets.
pub const REPLAY_MAX_BYTES: usize = 1024 * 1024;
/// How many chunks a watcher may fall behind before it is dropped.
pub const LIVE_CAPACITY: usize = 64;
/// Docker delivers a chatty container's output line by line: what is waiting is merged into
/// chunks of up to this size, so a watcher gets few large frames rather than millions of small.
const CHUNK_MAX_BYTES: usize = 64 * 1024;
/// The longest output waits in the feed before it goes out in a chunk (a full chunk goes at once).
const BATCH: Duration = Duration::from_millis(50);
/// Replay chunks smaller than this are merged, so a trickle of short lines cannot make the
/// replay a long list of tiny allocations.
const REPLAY_SEGMENT_BYTES: usize = 16 * 1024;
/// How long a stream without watchers is kept (a page reloading, a client reconnecting).
const LINGER: Duration = Duration::from_secs(3);

/// One Docker log stream shared by every watcher of a container.
pub struct LogFeed {
    /// The feed's number within its HostActor, so that the end of an old feed does not remove
    /// a newer one of the same container.
    pub generation: u64,
    replay: Mutex<Replay>,
    sender: broadcast::Sender<Bytes>,
}

/// The last output, bounded, and the stream's state.
#[derive(Default)]
struct Replay {
    /// Full segments, oldest first.
    segments: VecDeque<Bytes>,
    /// The segment being filled.
    open: BytesMut,
    /// Bytes in `segments` and `open`.
    bytes: usize,
    /// Bytes dropped from the front.
    dropped: u64,
    /// The container's output ended: watchers get the replay and no live receiver.
    ended: bool,
    /// The stream was given up for lack of watchers: a new watcher needs a new stream.
    abandoned: bool,
}

impl Replay {
    fn push(&mut self, chunk: &[u8]) {
        self.open.extend_from_slice(chunk);
        self.bytes += chunk.len();
        if self.open.len() >= REPLAY_SEGMENT_BYTES {
            self.segments.push_back(self.open.split().freeze());
        }
        while self.bytes > REPLAY_MAX_BYTES {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= oldest.len();
            self.dropped += oldest.len() as u64;
        }
    }
}

impl LogFeed {
    /// A new feed and its first watcher's view.
    pub fn new(generation: u64) -> (Arc<LogFeed>, LogWatch) {
        let (sender, _) = broadcast::channel(LIVE_CAPACITY);
        let feed = Arc::new(LogFeed {
            generation,
            replay: Mutex::new(Replay::default()),
            sender,
        });
        let watch = feed
            .subscribe()
            .expect("a new feed is neither ended nor abandoned");
        (feed, watch)
    }

    fn replay(&self) -> std::sync::MutexGuard<'_, Replay> {
        self.replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A watcher's view: the replay and a receiver of what comes next (taken under the same lock
    /// the feed pushes under, so nothing is missed or sent twice). `None` when the feed was given
    /// up: the caller starts a new one.
    pub fn subscribe(&self) -> Option<LogWatch> {
        let replay = self.replay();
        if replay.abandoned {
            return None;
        }
        let mut history: Vec<Bytes> = replay.segments.iter().cloned().collect();
        if !replay.open.is_empty() {
            history.push(Bytes::copy_from_slice(&replay.open));
        }
        Some(LogWatch {
            history,
            skipped_bytes: replay.dropped,
            live: (!replay.ended).then(|| self.sender.subscribe()),
        })
    }

    fn publish(&self, chunk: Bytes) {
        let mut replay = self.replay();
        replay.push(&chunk);
        // No receiver is not an error: the feed lingers for the next watcher.
        let _ = self.sender.send(chunk);
    }

    /// Gives the feed up when nobody watches; decided under the lock `subscribe` takes.
    fn abandon_if_unwatched(&self) -> bool {
        let mut replay = self.replay();
        if self.sender.receiver_count() == 0 {
            replay.abandoned = true;
        }
        replay.abandoned
    }

    /// Reads the Docker stream into the feed until the output ends or nobody has watched for
    /// [`LINGER`]; then tells the HostActor, and drops the stream (which closes it).
    pub async fn run(
        self: Arc<Self>,
        mut chunks: mpsc::Receiver<Bytes>,
        host: ActorRef<HostMessage>,
        container_id: String,
    ) {
        let mut check = tokio::time::interval(LINGER);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        let mut unwatched_checks = 0;
        // What arrived since the last chunk went out, and when it must go out at the latest:
        // Docker delivers a chatty container's output line by line, and a watcher gets it as at
        // most ~1/BATCH frames a second (plus full chunks), however finely it is split. The
        // stream is drained meanwhile, so batching never slows the reading of it.
        let mut pending = BytesMut::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                chunk = chunks.recv() => {
                    let Some(chunk) = chunk else {
                        if !pending.is_empty() {
                            self.publish(pending.split().freeze());
                        }
                        self.replay().ended = true;
                        break;
                    };
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= CHUNK_MAX_BYTES {
                        self.publish(pending.split().freeze());
                        flush_at = None;
                    } else if flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + BATCH);
                    }
                }
                () = flush => {
                    self.publish(pending.split().freeze());
                    flush_at = None;
                }
                _ = check.tick() => {
                    // Two checks in a row: unwatched for at least one whole LINGER.
                    unwatched_checks = if self.sender.receiver_count() == 0 {
                        unwatched_checks + 1
                    } else {
                        0
                    };
                    if unwatched_checks >= 2 && self.abandon_if_unwatched() {
                        tracing::info!(container_id, "live output stream closed: no watchers");
                        break;
                    }
                }
            }
        }
        drop(chunks);
        let _ = host.cast(HostMessage::FeedEnded {
            container_id,
            generation: self.generation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replay keeps the last MiB (whole segments) and counts what it dropped.
    #[test]
    fn replay_is_bounded_and_counts_what_it_dropped() {
        let mut replay = Replay::default();
        let line = vec![b'y'; 1000];
        for _ in 0..5000 {
            replay.push(&line);
        }
        assert!(replay.bytes <= REPLAY_MAX_BYTES);
        assert!(replay.bytes > REPLAY_MAX_BYTES - REPLAY_SEGMENT_BYTES - 1000);
        assert_eq!(replay.dropped + replay.bytes as u64, 5_000_000);
        assert!(replay.segments.len() <= REPLAY_MAX_BYTES / REPLAY_SEGMENT_BYTES + 1);
    }
}
