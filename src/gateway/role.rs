//! What a node's role lets the gateway serve. A worker (`--role worker`) runs containers and
//! answers only the paths an operator or a load balancer needs of it ([`WORKER_PATHS`]); every
//! other path gets 403 with an error JSON saying so, before any route is looked up.

use super::http::Failure;
use fastlane_actors::Role;
use hyper::StatusCode;

/// The only paths a worker serves (compared without slashes, so `/status` and `/status/` both
/// count): the health check (also at `/`), the farm status and the metrics.
pub(crate) const WORKER_PATHS: &[&str] = &["", "healthcheck", "status", "metrics"];

/// Refuses the path (its percent-decoded, non-empty `segments`) when `role` does not serve it.
pub(crate) fn admit(role: Role, segments: &[&str]) -> Result<(), Failure> {
    if role.serves_api() {
        return Ok(());
    }
    let path = segments.join("/");
    if WORKER_PATHS.contains(&path.as_str()) {
        return Ok(());
    }
    Err(Failure::new(
        StatusCode::FORBIDDEN,
        "route",
        "This node is a worker: it serves only /healthcheck, /status/ and /metrics; send the \
         API's requests to an api node.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_serves_only_health_status_and_metrics() {
        for path in [&[][..], &["healthcheck"], &["status"], &["metrics"]] {
            assert!(admit(Role::Worker, path).is_ok(), "{path:?}");
        }
        for path in [
            &["tasks"][..],
            &["tasks", "t"],
            &["docker-executor", "blacklist"],
            &["status", "x"],
        ] {
            assert!(admit(Role::Worker, path).is_err(), "{path:?}");
        }
        assert!(admit(Role::Api, &["tasks"]).is_ok());
        assert!(admit(Role::All, &["tasks"]).is_ok());
    }
}
