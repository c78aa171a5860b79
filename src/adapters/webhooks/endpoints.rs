//! The node's own infrastructure, which webhooks may not reach: the configured Docker hosts,
//! Redis servers (or sentinels, or cluster seeds), MongoDB servers and SMTP server, resolved to
//! addresses once at start.
//!
//! Limits: what those services discover on their own (a sentinel's primary, the other nodes of
//! a cluster or replica set, the hosts behind a `mongodb+srv://` record) is not listed; their
//! machines are covered only when they share an address with a listed one. Operators who run
//! such topologies on private networks should keep those networks out of
//! `WEBHOOKS_ALLOW_NETWORKS`, or firewall the node's outgoing connections.

use super::policy::{parse_networks, InternalEndpoint, WebhookPolicy};
use crate::config::Config;
use fastlane_proto::farm::DockerEndpoint;
use std::time::Duration;

/// How long start-up waits for the internal endpoints' names to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// MongoDB's port when a URI names none.
const MONGODB_DEFAULT_PORT: u16 = 27017;

/// The webhook policy of this configuration: `WEBHOOKS_ALLOW_NETWORKS` and the internal
/// endpoints, resolved. A name that does not resolve is logged and left out: the service it
/// names is unreachable for the node too.
pub(crate) async fn policy_from_config(config: &Config) -> anyhow::Result<WebhookPolicy> {
    let allowed =
        parse_networks(&config.string("WEBHOOKS_ALLOW_NETWORKS")).map_err(anyhow::Error::msg)?;
    let lookups = named_endpoints(config)
        .into_iter()
        .map(|(what, host, port)| async move {
            let lookup = tokio::net::lookup_host((host.as_str(), port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addresses)) => addresses
                    .map(|address| InternalEndpoint {
                        address,
                        what: what.clone(),
                    })
                    .collect(),
                Ok(Err(error)) => {
                    tracing::warn!(%what, %error, "could not resolve an internal endpoint for the webhook policy");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(%what, "resolving an internal endpoint for the webhook policy timed out");
                    Vec::new()
                }
            }
        });
    let internal = futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(WebhookPolicy::new(allowed, internal))
}

/// `(what, host, port)` of every internal endpoint the configuration names.
fn named_endpoints(config: &Config) -> Vec<(String, String, u16)> {
    let mut endpoints = Vec::new();
    for farm in &config.farms {
        for host in &farm.hosts {
            if let DockerEndpoint::Tcp { host, port, .. } = host {
                endpoints.push((format!("Docker host {host}:{port}"), host.clone(), *port));
            }
        }
    }
    if let Some(url) = config.optional("REDIS_URL") {
        if let Ok(redis) = crate::adapters::redis::parse_url(&url) {
            for server in redis.server.hosts() {
                let host = server.host.to_string();
                endpoints.push((format!("Redis {host}:{}", server.port), host, server.port));
            }
        }
    }
    let mongo = crate::adapters::mongo::MongoSettings::from_options(
        config.json("MONGODB_CONFIG"),
        config.optional("MONGODB_URL").as_deref(),
    );
    if let Ok(Some(settings)) = mongo {
        if let Ok(uri) = mongodb::options::ConnectionString::parse(&settings.uri) {
            if let mongodb::options::HostInfo::HostIdentifiers(servers) = uri.host_info {
                for server in servers {
                    if let mongodb::options::ServerAddress::Tcp { host, port } = server {
                        let port = port.unwrap_or(MONGODB_DEFAULT_PORT);
                        endpoints.push((format!("MongoDB {host}:{port}"), host, port));
                    }
                }
            }
        }
    }
    if let Some(host) = config.optional("SMTP_HOST") {
        let port = config.uint("SMTP_PORT").min(u16::MAX as u64) as u16;
        endpoints.push((format!("SMTP server {host}:{port}"), host, port));
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of internal endpoint the configuration names is listed, with its port.
    #[test]
    fn lists_the_configured_services() {
        let env = [
            (
                "DOCKER_HOSTS",
                r#"[{"match": "", "hosts": ["h1:2375", "https://h2:2376"]}]"#,
            ),
            ("REDIS_URL", "redis+sentinel://s1:26379,s2:26380/primary"),
            ("MONGODB_URL", "mongodb://m1,m2:27018/fastlane"),
            ("SMTP_HOST", "mail"),
            ("SMTP_PORT", "587"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        for name in ["ca", "cert", "key"] {
            std::fs::write(file(name), "x").unwrap();
        }
        let (ca, cert, key) = (file("ca"), file("cert"), file("key"));
        let config = Config::load_from(None, |name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
                .or(match name {
                    "DOCKER_TLS_CA" => Some(ca.clone()),
                    "DOCKER_TLS_CERT" => Some(cert.clone()),
                    "DOCKER_TLS_KEY" => Some(key.clone()),
                    _ => None,
                })
        })
        .unwrap();
        let listed: Vec<(String, u16)> = named_endpoints(&config)
            .into_iter()
            .map(|(_, host, port)| (host, port))
            .collect();
        let expected = [
            ("h1", 2375),
            ("h2", 2376),
            ("s1", 26379),
            ("s2", 26380),
            ("m1", 27017),
            ("m2", 27018),
            ("mail", 587),
        ];
        assert_eq!(
            listed,
            expected
                .map(|(host, port)| (host.to_string(), port))
                .to_vec()
        );
    }
}
