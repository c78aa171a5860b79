//! `GET /metrics`: the node's Prometheus metrics in the text format (0.0.4), scope `read`.
//! Counters and histograms come from `fastlane_actors::metrics`; the gauges of state (hosts,
//! farms, queue depth) from the same gathering as `/status/`, made at scrape time.

use crate::gateway::http::{text_response, Failure, HttpResponse};
use crate::gateway::{call, GatewaySettings};
use fastlane_actors::messages::ApiMessage;
use fastlane_actors::metrics;
use hyper::StatusCode;

/// Renders the metrics. When the node's state cannot be had (the actors are starting or did not
/// answer in time) the counters are still served, without the gauges of state.
pub(crate) async fn scrape(settings: &GatewaySettings) -> Result<HttpResponse, Failure> {
    let status = match call(settings, "metrics", ApiMessage::Status).await {
        Ok(status) => Some(status),
        Err(_) => {
            tracing::warn!("metrics served without the node's state: it did not answer");
            None
        }
    };
    let text = metrics::render(status.as_ref(), &settings.farms);
    Ok(text_response(
        StatusCode::OK,
        text.into_bytes(),
        metrics::CONTENT_TYPE,
    ))
}
