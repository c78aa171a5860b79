//! Stored outputs sent in pieces: the output routes (`stdout`, `stderr`, `logs`) and the replay
//! of a finished execution on its WebSocket read at most [`PIECE_BYTES`] from the store at a
//! time (one `ReadOutput` call of the ApiActor each), so a response holds one piece in memory
//! however large the output is (up to `EXECUTION_OUTPUT_MAX_BYTES` per stream).

use super::http::{Body, BodyError, Failure};
use super::{api_failure, call, GatewaySettings};
use bytes::Bytes;
use fastlane_actors::messages::ApiMessage;
use fastlane_actors::ports::OutputStream;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::collections::VecDeque;
use std::sync::Arc;
use uuid::Uuid;

/// The most read from the store at once: big enough that a 64 MiB output takes 64 calls,
/// small enough that many readers at once stay within a few MiB each (MongoDB reads its 4 MiB
/// chunk to serve one).
pub(crate) const PIECE_BYTES: u64 = 1024 * 1024;

/// The operation named in errors of the output routes.
const OPERATION: &str = "retrieve_execution_details";

/// One part of what is sent: a stored output of a known length, or fixed bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Part {
    /// The execution's output `stream`, of this many bytes (as measured before sending).
    Stored(OutputStream, u64),
    /// Bytes sent as they are (the `-=-` line between stdout and stderr).
    Fixed(&'static [u8]),
}

impl Part {
    pub(crate) fn len(self) -> u64 {
        match self {
            Part::Stored(_, len) => len,
            Part::Fixed(bytes) => bytes.len() as u64,
        }
    }
}

/// The stored length of an output; 0 when there is none.
pub(crate) async fn stored_len(
    settings: &GatewaySettings,
    execution_id: Uuid,
    stream: OutputStream,
) -> Result<u64, Failure> {
    let len = call(settings, OPERATION, |reply| ApiMessage::OutputLen {
        execution_id,
        stream,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    Ok(len.unwrap_or(0))
}

/// The parts' bytes, in order, one piece of at most [`PIECE_BYTES`] at a time. A stored output
/// that became shorter than measured (rewritten meanwhile) ends the stream with an error: the
/// length already promised cannot be met.
pub(crate) fn pieces(
    settings: Arc<GatewaySettings>,
    execution_id: Uuid,
    parts: Vec<Part>,
) -> impl Stream<Item = Result<Bytes, Failure>> + Send + 'static {
    let state = (settings, VecDeque::from(parts), 0_u64);
    futures_util::stream::unfold(Some(state), move |state| async move {
        let (settings, mut parts, mut offset) = state?;
        loop {
            let (stream, len) = match parts.front().copied()? {
                Part::Fixed(bytes) => {
                    parts.pop_front();
                    if bytes.is_empty() {
                        continue;
                    }
                    return Some((Ok(Bytes::from_static(bytes)), Some((settings, parts, 0))));
                }
                Part::Stored(_, len) if offset >= len => {
                    parts.pop_front();
                    offset = 0;
                    continue;
                }
                Part::Stored(stream, len) => (stream, len),
            };
            let max_len = PIECE_BYTES.min(len - offset);
            let read = call(&settings, OPERATION, |reply| ApiMessage::ReadOutput {
                execution_id,
                stream,
                offset,
                max_len,
                reply,
            })
            .await
            .and_then(|answer| answer.map_err(api_failure(OPERATION)));
            return match read {
                Ok(piece) if !piece.is_empty() => {
                    let next = offset + piece.len() as u64;
                    Some((Ok(Bytes::from(piece)), Some((settings, parts, next))))
                }
                Ok(_) => {
                    let message = "The output changed while it was being sent.";
                    Some((Err(Failure::invalid(OPERATION, message)), None))
                }
                Err(failure) => Some((Err(failure), None)),
            };
        }
    })
}

/// A response body sending the parts in pieces.
pub(crate) fn body(settings: Arc<GatewaySettings>, execution_id: Uuid, parts: Vec<Part>) -> Body {
    let frames = pieces(settings, execution_id, parts).map(|piece| {
        piece.map(Frame::data).map_err(|failure| -> BodyError {
            tracing::warn!(error = %failure.message, "stored output could not be sent");
            failure.message.into()
        })
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// Where to cut `bytes` so that the text before holds no split UTF-8 sequence: the bytes after
/// the cut (at most 3, the start of a character whose rest is in the next piece) are carried
/// over to the next WebSocket frame.
pub(crate) fn utf8_cut(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        // An incomplete sequence at the very end: keep it for the next piece.
        Err(error) if error.error_len().is_none() && bytes.len() - error.valid_up_to() < 4 => {
            error.valid_up_to()
        }
        // Invalid bytes are sent as U+FFFD like before; only a trailing partial one is held.
        Err(_) => {
            let tail = bytes.len().saturating_sub(3);
            (tail..bytes.len())
                .find(|&start| {
                    std::str::from_utf8(&bytes[start..])
                        .err()
                        .is_some_and(|error| {
                            error.valid_up_to() == 0 && error.error_len().is_none()
                        })
                })
                .unwrap_or(bytes.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cut_holds_back_a_split_character() {
        let text = "aé".as_bytes();
        assert_eq!(utf8_cut(text), 3);
        assert_eq!(utf8_cut(&text[..2]), 1);
        assert_eq!(utf8_cut(b"a\xffb"), 3);
        assert_eq!(utf8_cut(b"\xff\xc3"), 1);
        assert_eq!(utf8_cut(b""), 0);
    }
}
