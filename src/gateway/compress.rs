//! gzip for answers of at least [`MIN_BYTES`] when the client accepts it (`Accept-Encoding`),
//! as the original did for its JSON. The body is compressed as it is sent, one frame at a
//! time, so the output routes stay streamed: memory is the encoder's fixed state plus one
//! piece, whatever the size of the output.
//!
//! Left as they are: WebSocket upgrades and every status but 2xx (204 and 206 included), HEAD
//! answers, bodies already encoded, bodies known to be shorter than [`MIN_BYTES`], and content
//! types that do not compress (only JSON, text and HTML pages are compressed).

use super::http::{Body, BodyError, HttpResponse};
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY,
};
use hyper::StatusCode;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Smaller answers are sent as they are: gzip's header and trailer would eat the gain.
pub(crate) const MIN_BYTES: u64 = 1024;

/// Level 6 (zlib's default): most of level 9's ratio on JSON and logs for far less CPU.
const LEVEL: u32 = 6;

/// Whether the request's `Accept-Encoding` takes gzip: `gzip`, `x-gzip` or `*` with a
/// non-zero quality, and gzip not refused by `gzip;q=0`.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut accepted = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        // Bounded by the size of the header hyper accepted.
        for entry in value.split(',') {
            let mut fields = entry.split(';');
            let coding = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = fields
                .filter_map(|field| field.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => accepted = Some(quality > 0.0),
                "*" => any = Some(quality > 0.0),
                _ => {}
            }
        }
    }
    accepted.or(any).unwrap_or(false)
}

/// Compresses `response` in place when `gzip` (the client accepts it) and the answer is
/// worth it; `Vary: Accept-Encoding` is added to every answer that could have been
/// compressed, so that a cache keeps both forms apart.
pub(crate) fn compress(response: &mut HttpResponse, gzip: bool, is_head: bool) {
    let status = response.status();
    if !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || is_head
    {
        return;
    }
    let headers = response.headers();
    if headers.contains_key(CONTENT_ENCODING) || !compressible(headers) {
        return;
    }
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("Accept-Encoding"));
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let length = declared.or_else(|| response.body().size_hint().exact());
    if !gzip || length.is_some_and(|length| length < MIN_BYTES) {
        return;
    }
    let headers = response.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let body = std::mem::replace(response.body_mut(), super::http::full_body(Bytes::new()));
    *response.body_mut() = GzipBody::new(body).boxed();
}

/// JSON, text and HTML compress well; anything else (or no type) is left alone.
fn compressible(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|content_type| {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.starts_with("text/")
        })
}

/// A body compressed frame by frame: each data frame goes through the encoder and what it
/// produced so far is sent; the gzip trailer follows the last frame.
struct GzipBody {
    inner: Body,
    /// `None` once the trailer was sent.
    encoder: Option<GzEncoder<Vec<u8>>>,
}

impl GzipBody {
    fn new(inner: Body) -> GzipBody {
        GzipBody {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::new(LEVEL))),
        }
    }
}

impl hyper::body::Body for GzipBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            // Whatever the encoder produced for earlier frames goes out before reading more.
            if !encoder.get_ref().is_empty() {
                let produced = std::mem::take(encoder.get_mut());
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(produced)))));
            }
            match std::task::ready!(Pin::new(&mut self.inner).poll_frame(context)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let encoder = self.encoder.as_mut().expect("checked above");
                        if let Err(error) = encoder.write_all(&data) {
                            self.encoder = None;
                            return Poll::Ready(Some(Err(error.into())));
                        }
                    }
                    // Trailers are not sent by the gateway; one would be dropped here.
                    Err(_) => continue,
                },
                Some(Err(error)) => {
                    self.encoder = None;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    let encoder = self.encoder.take().expect("checked above");
                    return Poll::Ready(match encoder.finish() {
                        Ok(rest) => Some(Ok(Frame::data(Bytes::from(rest)))),
                        Err(error) => Some(Err(error.into())),
                    });
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        assert!(accepts_gzip(&with("gzip")));
        assert!(accepts_gzip(&with("deflate, GZIP;q=0.5, br")));
        assert!(accepts_gzip(&with("*")));
        assert!(accepts_gzip(&with("x-gzip")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("*, gzip;q=0")));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&with("gzipped")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_streamed_body_is_compressed_piece_by_piece() {
        let pieces: Vec<Result<Frame<Bytes>, BodyError>> = (0..50)
            .map(|index| {
                Ok(Frame::data(Bytes::from(
                    format!("line {index}\n").repeat(100),
                )))
            })
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(pieces)).boxed();
        let mut response = HttpResponse::new(body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        compress(&mut response, true, false);
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[VARY], "Accept-Encoding");
        let compressed = response.into_body().collect().await.unwrap().to_bytes();
        let mut text = String::new();
        GzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .unwrap();
        let expected: String = (0..50)
            .map(|index| format!("line {index}\n").repeat(100))
            .collect();
        assert_eq!(text, expected);
        assert!(compressed.len() < expected.len() / 10);
    }

    #[test]
    fn small_encoded_or_refused_answers_are_left_alone() {
        let json = |body: &'static str| {
            let mut response = HttpResponse::new(super::super::http::full_body(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        };
        let mut small = json("{}");
        compress(&mut small, true, false);
        assert!(!small.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(small.headers()[VARY], "Accept-Encoding");
        let big: &'static str = Box::leak("x".repeat(4096).into_boxed_str());
        let mut refused = json(big);
        compress(&mut refused, false, false);
        assert!(!refused.headers().contains_key(CONTENT_ENCODING));
        let mut head = json(big);
        compress(&mut head, true, true);
        assert!(!head.headers().contains_key(CONTENT_ENCODING));
        let mut upgrade = json(big);
        *upgrade.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        compress(&mut upgrade, true, false);
        assert!(!upgrade.headers().contains_key(CONTENT_ENCODING));
        let mut not_modified = json(big);
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        compress(&mut not_modified, true, false);
        assert!(!not_modified.headers().contains_key(CONTENT_ENCODING));
        let mut encoded = json(big);
        encoded
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        compress(&mut encoded, true, false);
        assert_eq!(encoded.headers()[CONTENT_ENCODING], "br");
        let mut compressed = json(big);
        compress(&mut compressed, true, false);
        assert_eq!(compressed.headers()[CONTENT_ENCODING], "gzip");
    }
}
