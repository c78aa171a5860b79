//! Which sites may talk to the node: the `Origin` check that stops cross-site requests, and the
//! `Host` check that stops DNS rebinding.
//!
//! A web page the operator opens can make the browser send requests to the node: a form or a
//! `fetch(..., {mode: "no-cors"})` POST is sent whatever the answer's CORS headers say, with the
//! browser's cached basic-auth login. Browsers name the page's origin in `Origin` (and
//! `Sec-Fetch-Site`), so a state-changing request from another origin is refused unless that
//! origin is listed in `CORS_ORIGINS`. Clients that are not browsers send no `Origin` and are
//! not affected.
//!
//! DNS rebinding gets around the origin rule: the attacker's name first resolves to the
//! attacker's server, then to the node, so the page is "same-origin" with the node under the
//! attacker's name. The `Host` header then carries that name, so without authentication (where
//! the browser holds no login for that name to hijack) only names that cannot be rebound are
//! accepted: loopback names and addresses, IP literals, `SERVER_NAME` and `ALLOWED_HOSTS`.

use std::net::IpAddr;

/// The node's site rules, from the configuration.
#[derive(Clone, Debug, Default)]
pub(crate) struct SitePolicy {
    /// Origins `CORS_ORIGINS` lists explicitly (`*` is not a listing: it opens reads only).
    listed_origins: Vec<String>,
    /// `SERVER_NAME`, lower case: the node's own origin when a proxy rewrites `Host`.
    server_name: Option<String>,
    /// `None` when authentication is configured: the `Host` header is not checked then.
    hosts: Option<HostRule>,
}

#[derive(Clone, Debug, Default)]
struct HostRule {
    /// The bind address; an unspecified one (`0.0.0.0`) accepts every IP literal.
    bind: Option<IpAddr>,
    /// `SERVER_NAME` and the `ALLOWED_HOSTS` entries, lower case; `*` accepts every host.
    names: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The `Host` header names a host the node does not answer for.
    Host,
    /// A cross-site request whose origin is not listed.
    CrossSite,
}

impl SitePolicy {
    /// The rules: `cors_origins` is `CORS_ORIGINS`, `server_name` is `SERVER_NAME`;
    /// `host_check` is `Some((bind, ALLOWED_HOSTS))` when no authentication is configured.
    pub(crate) fn new(
        cors_origins: &str,
        server_name: Option<&str>,
        host_check: Option<(IpAddr, &str)>,
    ) -> SitePolicy {
        let server_name = server_name.map(|name| name.trim().to_ascii_lowercase());
        let listed_origins = cors_origins
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty() && origin != "*")
            .collect();
        let hosts = host_check.map(|(bind, allowed_hosts)| HostRule {
            bind: Some(bind),
            // SERVER_NAME's host matches on any port: a proxy in front may use another one.
            names: server_name
                .as_deref()
                .map(host_name)
                .into_iter()
                .chain(allowed_hosts.split(','))
                .map(|name| name.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
        });
        SitePolicy {
            listed_origins,
            server_name,
            hosts,
        }
    }

    /// Checks the `Host` header (when there is no authentication). A request without one
    /// (HTTP/1.0 clients) is not from a browser and passes.
    pub(crate) fn check_host(&self, host: Option<&str>) -> Result<(), Refusal> {
        let (Some(rule), Some(host)) = (&self.hosts, host) else {
            return Ok(());
        };
        let authority = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = host_name(&authority);
        let name = name.trim_end_matches('.');
        let by_address = name.parse::<IpAddr>().is_ok_and(|ip| {
            ip.is_loopback()
                || rule
                    .bind
                    .is_some_and(|bind| bind.is_unspecified() || bind == ip)
        });
        let by_name = name == "localhost"
            || name.ends_with(".localhost")
            || rule.names.iter().any(|allowed| {
                allowed == "*"
                    || *allowed == authority
                    || (!allowed.contains(':') && allowed == name)
            });
        if by_address || by_name {
            Ok(())
        } else {
            Err(Refusal::Host)
        }
    }

    /// Checks a state-changing request (or a WebSocket upgrade): its `Origin`, when present,
    /// must be the node's own (the same authority as `Host`) or listed; `Sec-Fetch-Site:
    /// cross-site` needs a listed origin.
    pub(crate) fn check_origin(
        &self,
        origin: Option<&str>,
        fetch_site: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), Refusal> {
        let origin = origin.map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase());
        let listed = origin
            .as_ref()
            .is_some_and(|origin| self.listed_origins.iter().any(|listed| listed == origin));
        if listed {
            return Ok(());
        }
        if fetch_site.is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site")) {
            return Err(Refusal::CrossSite);
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        let own = origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .is_some_and(|authority| {
                host.is_some_and(|host| authority.eq_ignore_ascii_case(host.trim()))
                    || self.server_name.as_deref() == Some(authority)
            });
        if own {
            Ok(())
        } else {
            Err(Refusal::CrossSite)
        }
    }
}

/// The name part of `host[:port]` or `[v6]:port`, without brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_node(bind: &str, allowed: &str) -> SitePolicy {
        SitePolicy::new(
            "*",
            Some("fl.example:8080"),
            Some((bind.parse().unwrap(), allowed)),
        )
    }

    #[test]
    fn without_auth_only_names_that_cannot_be_rebound_pass() {
        let policy = open_node("127.0.0.1", "jobs.internal, other.example:9000");
        for host in [
            "127.0.0.1:10000",
            "127.9.9.9",
            "localhost",
            "LOCALHOST:10000",
            "app.localhost:1",
            "[::1]:10000",
            "fl.example",
            "fl.example:8080",
            "jobs.internal:10000",
            "jobs.internal.",
            "other.example:9000",
        ] {
            assert_eq!(policy.check_host(Some(host)), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:10000",
            "localhost.evil.example",
            "10.0.0.5:10000",
            "other.example:9001",
            "",
        ] {
            assert_eq!(policy.check_host(Some(host)), Err(Refusal::Host), "{host}");
        }
        assert_eq!(policy.check_host(None), Ok(()));
        let anywhere = open_node("0.0.0.0", "");
        assert_eq!(anywhere.check_host(Some("10.0.0.5:10000")), Ok(()));
        assert_eq!(
            anywhere.check_host(Some("evil.example")),
            Err(Refusal::Host)
        );
        assert_eq!(
            open_node("127.0.0.1", "*").check_host(Some("evil.example")),
            Ok(())
        );
        let with_auth = SitePolicy::new("*", None, None);
        assert_eq!(with_auth.check_host(Some("evil.example")), Ok(()));
    }

    #[test]
    fn state_changes_need_the_own_or_a_listed_origin() {
        let policy = SitePolicy::new("https://app.example, *", Some("fl.example"), None);
        let host = Some("127.0.0.1:10000");
        let check = |origin, site| policy.check_origin(origin, site, host);
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("http://127.0.0.1:10000"), None), Ok(()));
        assert_eq!(
            check(Some("http://127.0.0.1:10000"), Some("same-origin")),
            Ok(())
        );
        assert_eq!(
            check(Some("https://APP.example/"), Some("cross-site")),
            Ok(())
        );
        assert_eq!(
            check(Some("https://evil.example"), None),
            Err(Refusal::CrossSite)
        );
        assert_eq!(check(Some("null"), None), Err(Refusal::CrossSite));
        assert_eq!(
            check(Some("http://127.0.0.1:10001"), None),
            Err(Refusal::CrossSite)
        );
        assert_eq!(check(None, Some("cross-site")), Err(Refusal::CrossSite));
        assert_eq!(check(None, Some("same-site")), Ok(()));
        assert_eq!(check(Some("https://fl.example"), None), Ok(()));
        assert_eq!(
            policy.check_origin(Some("http://127.0.0.1:10000"), None, None),
            Err(Refusal::CrossSite)
        );
    }
}
