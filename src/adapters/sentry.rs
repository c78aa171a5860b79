//! Sentry (`SENTRY_DSN`): the client, a transport over the node's own HTTP client, and the
//! [`ErrorReporter`] the actors use. Nothing is sent when the DSN is empty.

use fastlane_actors::ports::ErrorReporter;
use sentry::protocol::Envelope;
use sentry::{ClientInitGuard, ClientOptions, Transport};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends envelopes with reqwest on the current tokio runtime.
struct HttpTransport {
    client: reqwest::Client,
    url: String,
    auth: String,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            return;
        }
        let request = self
            .client
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .timeout(Duration::from_secs(5))
            .body(body);
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        self.runtime.spawn(async move {
            if let Err(error) = request.send().await {
                tracing::warn!(%error, "could not send an event to Sentry");
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Starts the Sentry client when `dsn` is set; keep the guard alive while the node runs.
/// Must be called inside the tokio runtime.
pub(crate) fn init(dsn: Option<String>) -> anyhow::Result<Option<ClientInitGuard>> {
    let Some(dsn) = dsn else { return Ok(None) };
    let parsed: sentry::types::Dsn = dsn
        .parse()
        .map_err(|error| anyhow::anyhow!("invalid SENTRY_DSN: {error}"))?;
    let transport = Arc::new(HttpTransport {
        client: reqwest::Client::new(),
        url: parsed.envelope_api_url().to_string(),
        auth: parsed
            .to_auth(Some(concat!("fastlane-node/", env!("CARGO_PKG_VERSION"))))
            .to_string(),
        runtime: tokio::runtime::Handle::current(),
        in_flight: Arc::new(AtomicUsize::new(0)),
    });
    let mut options = ClientOptions::default();
    options.dsn = Some(parsed);
    options.release = Some(concat!("fastlane-node@", env!("CARGO_PKG_VERSION")).into());
    options.transport = Some(Arc::new(transport));
    Ok(Some(sentry::init(options)))
}

/// Reports through the Sentry client (a no-op when it was not started).
pub(crate) struct SentryReporter;

impl ErrorReporter for SentryReporter {
    fn report(&self, message: &str, extra: &BTreeMap<String, String>) {
        sentry::with_scope(
            |scope| {
                for (key, value) in extra {
                    scope.set_extra(key, value.clone().into());
                    if matches!(
                        key.as_str(),
                        "task_id" | "job_id" | "execution_id" | "operation"
                    ) {
                        scope.set_tag(key, value);
                    }
                }
            },
            || sentry::capture_message(message, sentry::Level::Error),
        );
    }
}
