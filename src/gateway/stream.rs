//! Live output: the WebSocket routes (`…/ws/`) and the stream pages (`…/stream/`).
//!
//! Protocol (the documented one; the original's pinned library sent `wsdone`/`wsretry` and code
//! 1010, its bugs 33–34): output arrives as text frames; the socket closes with code 1000 and
//! reason `done` when there is nothing more to come (the execution ended: its stored output is
//! replayed first) or `retry` when the execution has not started yet (the page reconnects).
//! A running execution's socket is served by `live.rs`, which documents its further closes
//! (`slow`, `idle`).

use super::guard::same_site;
use super::http::{text_response, Failure, HttpResponse};
use super::limits::ConnectionSlot;
use super::output::{self, Part};
use super::{call, GatewaySettings};
use fastlane_actors::messages::{ApiMessage, WatchOutcome};
use fastlane_actors::ports::OutputStream;
use fastlane_proto::Execution;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// The execution a socket or page is about.
pub(crate) struct Target {
    pub(crate) task_id: String,
    pub(crate) job_id: String,
    pub(crate) execution_id: Option<String>,
}

/// Answers the WebSocket handshake and serves the socket in its own task. The router has
/// checked the `read` scope; a handshake from another site is refused here (403), since
/// browsers let any page open a WebSocket to any address, with the node's login.
pub(crate) fn accept(
    settings: Arc<GatewaySettings>,
    mut request: Request<Incoming>,
    target: Target,
) -> HttpResponse {
    if let Err(refused) = same_site(&settings, request.headers()) {
        return refused.into_response();
    }
    let key = request
        .headers()
        .get("sec-websocket-key")
        .map(|key| derive_accept_key(key.as_bytes()));
    let upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let (Some(accept_key), true) = (key, upgrade) else {
        return Failure::invalid("stream_logs", "This route only speaks WebSocket.")
            .into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The socket keeps its connection's place under MAX_CONNECTIONS until it closes.
    let slot = request.extensions_mut().remove::<ConnectionSlot>();
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                serve(&settings, socket, target).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = text_response(StatusCode::SWITCHING_PROTOCOLS, Vec::new(), "text/plain");
    let headers = response.headers_mut();
    headers.remove("content-type");
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert("sec-websocket-accept", value);
    }
    response
}

pub(super) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn close(mut socket: Socket, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Let the client answer the close before the connection goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

pub(super) fn text(bytes: &[u8]) -> Message {
    Message::Text(String::from_utf8_lossy(bytes).into_owned().into())
}

async fn serve(settings: &Arc<GatewaySettings>, socket: Socket, target: Target) {
    let (Ok(job_id), Ok(execution_id)) = (
        Uuid::parse_str(&target.job_id),
        target
            .execution_id
            .as_deref()
            .map(Uuid::parse_str)
            .transpose(),
    ) else {
        return close(socket, "").await;
    };
    let outcome = call(settings, "stream_logs", |reply| ApiMessage::Watch {
        task_id: target.task_id,
        job_id,
        execution_id,
        reply,
    })
    .await;
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        _ => return close(socket, "retry").await,
    };
    match outcome {
        WatchOutcome::NoJob => close(socket, "").await,
        WatchOutcome::NoExecution | WatchOutcome::Pending => close(socket, "retry").await,
        WatchOutcome::Finished(execution) => replay(settings, socket, &execution).await,
        WatchOutcome::Live(watch) => super::live::serve(&settings.limits, socket, watch).await,
    }
}

/// A finished execution's output: the exit code, stdout, a `-=-` line and stderr, each read
/// from the store in pieces (one text frame each, a character split between two pieces sent
/// whole with the second), then closed with `done`.
async fn replay(settings: &Arc<GatewaySettings>, mut socket: Socket, execution: &Execution) {
    let id = execution.execution_id;
    let mut parts = Vec::with_capacity(3);
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        match output::stored_len(settings, id, stream).await {
            Ok(len) => parts.push(Part::Stored(stream, len)),
            Err(_) => return close(socket, "retry").await,
        }
        if stream == OutputStream::Stdout {
            parts.push(Part::Fixed(b"\n-=-\n"));
        }
    }
    if let Some(code) = execution.exit_code {
        if socket
            .send(text(format!("EXIT CODE: {code}\n").as_bytes()))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut pieces = std::pin::pin!(output::pieces(settings.clone(), id, parts));
    let mut carried: Vec<u8> = Vec::new();
    while let Some(piece) = pieces.next().await {
        let Ok(piece) = piece else {
            return close(socket, "retry").await;
        };
        carried.extend_from_slice(&piece);
        let cut = output::utf8_cut(&carried);
        let rest = carried.split_off(cut);
        let frame = std::mem::replace(&mut carried, rest);
        if !frame.is_empty() && socket.send(text(&frame)).await.is_err() {
            return;
        }
    }
    if !carried.is_empty() && socket.send(text(&carried)).await.is_err() {
        return;
    }
    close(socket, "done").await
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The stream page: shows the output as it arrives (as text, never as HTML), reconnects on
/// `retry`, stops on `done`.
pub(crate) fn page(target: &Target, ws_path: &str) -> HttpResponse {
    let title = match &target.execution_id {
        Some(execution_id) => format!(
            "{} - {} - {} - Fastlane",
            target.task_id, target.job_id, execution_id
        ),
        None => format!("{} - {} - Fastlane", target.task_id, target.job_id),
    };
    // JSON is valid JavaScript; "</" is escaped so the string cannot end the script element.
    let ws_path = serde_json::to_string(ws_path)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let html = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ background: #111; color: #ddd; font-family: monospace; }} pre {{ white-space: pre-wrap; }}</style>
</head><body>
<pre><code id="log"></code></pre>
<script>
(function () {{
  var log = document.getElementById('log');
  var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + {ws_path};
  function connect() {{
    log.textContent = '';
    log.removeAttribute('data-state');
    var socket = new WebSocket(url);
    socket.onmessage = function (event) {{ log.appendChild(document.createTextNode(event.data)); }};
    socket.onclose = function (event) {{
      if (event.reason === 'done') {{ log.setAttribute('data-state', 'done'); }}
      else {{ log.setAttribute('data-state', 'retrying'); setTimeout(connect, 5000); }}
    }};
  }}
  connect();
}})();
</script>
</body></html>
"#,
        title = escape_html(&title),
    );
    text_response(
        StatusCode::OK,
        html.into_bytes(),
        "text/html; charset=utf-8",
    )
}
