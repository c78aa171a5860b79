//! The gateway's access rules from the configuration, and the safe-start decision: a node
//! that anyone who can reach it could use to run containers on every Docker host of its farm
//! does not start unless the operator says so.

use super::auth::{parse_tokens, Credentials};
use super::site::SitePolicy;
use crate::config::Config;
use std::net::SocketAddr;

/// Who may use the gateway, from where.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub(crate) credentials: Credentials,
    pub(crate) site: SitePolicy,
    /// Shown in `/status/` (`warnings`): the node accepts anonymous requests from the network.
    pub(crate) warnings: Vec<String>,
}

/// Checks `API_TOKENS` when the configuration is loaded.
pub(crate) fn check_tokens(value: &serde_json::Value) -> Result<(), String> {
    parse_tokens(value).map(drop)
}

/// The warning a node shows when it takes anonymous requests on a non-loopback address.
pub(crate) const ANONYMOUS_WARNING: &str =
    "anonymous access on a non-loopback address (ALLOW_ANONYMOUS=true): anyone who can reach \
     this node can run containers on its Docker hosts";

impl Access {
    /// The rules for a node listening on `bind`, or the reason it must not start: a
    /// non-loopback `bind` without credentials and without `ALLOW_ANONYMOUS=true`.
    pub(crate) fn from_config(config: &Config, bind: SocketAddr) -> Result<Access, String> {
        // The configuration was validated when it was loaded; this cannot fail there.
        let tokens = parse_tokens(config.json("API_TOKENS"))
            .map_err(|error| format!("invalid value for API_TOKENS: {error}"))?;
        let basic = config
            .optional("BASIC_AUTH_USERNAME")
            .zip(config.optional("BASIC_AUTH_PASSWORD"));
        let credentials = Credentials::new(basic, tokens, config.string("BASIC_AUTH_REALM"));
        let mut warnings = Vec::new();
        if !credentials.required() && !bind.ip().to_canonical().is_loopback() {
            if !config.bool("ALLOW_ANONYMOUS") {
                return Err(format!(
                    "refusing to listen on {bind} without authentication: anyone who can reach \
                     it could run containers on every Docker host of the farm. Configure \
                     credentials (BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD, or API_TOKENS: \
                     [{{\"name\": ..., \"sha256\": <the token's SHA-256 in hex>, \"scopes\": \
                     [\"read\", \"submit\", \"admin\"]}}]), listen on loopback only (-b \
                     127.0.0.1, the default), or set ALLOW_ANONYMOUS=true to accept the risk"
                ));
            }
            tracing::warn!(%bind, "{ANONYMOUS_WARNING}");
            warnings.push(ANONYMOUS_WARNING.to_string());
        }
        let server_name = config.optional("SERVER_NAME");
        let allowed_hosts = config.string("ALLOWED_HOSTS");
        let site = SitePolicy::new(
            &config.string("CORS_ORIGINS"),
            server_name.as_deref(),
            (!credentials.required()).then_some((bind.ip(), allowed_hosts.as_str())),
        );
        Ok(Access {
            credentials,
            site,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(env: &[(&str, &str)], bind: &str) -> Result<Access, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let config = Config::load_from(None, |name| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
        .unwrap();
        Access::from_config(&config, bind.parse().unwrap())
    }

    #[test]
    fn only_loopback_or_authenticated_or_consenting_nodes_start() {
        assert!(access(&[], "127.0.0.1:1").unwrap().warnings.is_empty());
        assert!(access(&[], "[::1]:1").is_ok());
        let refused = access(&[], "0.0.0.0:1").unwrap_err();
        assert!(refused.contains("BASIC_AUTH_USERNAME") && refused.contains("ALLOW_ANONYMOUS"));
        let warned = access(&[("ALLOW_ANONYMOUS", "true")], "0.0.0.0:1").unwrap();
        assert_eq!(warned.warnings, [ANONYMOUS_WARNING]);
        let basic = [("BASIC_AUTH_USERNAME", "u"), ("BASIC_AUTH_PASSWORD", "p")];
        assert!(access(&basic, "10.0.0.1:1").unwrap().warnings.is_empty());
    }
}
