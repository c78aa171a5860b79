//! Node routes: `GET /healthcheck/` (and `/`), `GET /status/`, and the Docker host blacklist
//! `/docker-executor/blacklist` (`POST`/`PUT` add, `DELETE`/`DEL` remove).

use crate::gateway::http::{json_response, text_response, Failure, HttpResponse};
use crate::gateway::render;
use crate::gateway::{api_failure, call, ok, GatewaySettings};
use fastlane_actors::messages::ApiMessage;
use hyper::StatusCode;

/// `/healthcheck/`: 200 when the queue and the store answer, 503 when either does not.
pub(crate) async fn healthcheck(settings: &GatewaySettings) -> Result<HttpResponse, Failure> {
    let health = call(settings, "healthcheck", ApiMessage::Health).await?;
    let status = if health.queue.is_ok() && health.store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = render::health(&health, &settings.backends);
    Ok(json_response(status, &body, settings.debug))
}

/// `/status/`: answered from the actors' live state and the backends' counters, with no Docker
/// call per request.
pub(crate) async fn status(
    settings: &GatewaySettings,
    urls: &render::Urls,
) -> Result<HttpResponse, Failure> {
    let node = call(settings, "status", ApiMessage::Status).await?;
    let view = render::StatusView {
        urls,
        redactor: &settings.redactor,
        role: settings.role,
    };
    ok(
        settings,
        &render::node_status(&node, &settings.farms, &settings.access.warnings, &view),
    )
}

/// `POST`/`PUT` (add) and `DELETE`/`DEL` (remove) `/docker-executor/blacklist` with
/// `{"host": "host:port"}`. Any valid `host:port` is accepted, including `localhost`,
/// single-label names and IPs (the original refused them, its bug 19).
pub(crate) async fn blacklist(
    settings: &GatewaySettings,
    add: bool,
    body: &[u8],
) -> Result<HttpResponse, Failure> {
    let (operation, action) = if add {
        ("add_to_blacklist", "add host to")
    } else {
        ("remove_from_blacklist", "remove host from")
    };
    let refuse = |reason: &str| {
        Failure::invalid(
            operation,
            format!("Failed to {action} blacklist because {reason}."),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| refuse("JSON body could not be parsed"))?;
    let host = value
        .as_object()
        .ok_or_else(|| refuse("JSON body could not be parsed"))?
        .get("host")
        .ok_or_else(|| refuse("'host' attribute was not found in JSON body"))?;
    let host = host
        .as_str()
        .and_then(|host| fastlane_proto::farm::DockerEndpoint::parse(host).ok())
        .filter(|endpoint| !endpoint.host().contains('/'))
        .ok_or_else(|| refuse("'host' attribute had an invalid value"))?
        .to_string();
    call(settings, operation, |reply| ApiMessage::Blacklist {
        host,
        add,
        reply,
    })
    .await?
    .map_err(api_failure(operation))?;
    Ok(text_response(
        StatusCode::OK,
        Vec::new(),
        "text/plain; charset=utf-8",
    ))
}
