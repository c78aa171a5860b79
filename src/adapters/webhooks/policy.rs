//! Where a webhook may connect, as plain values: the address classes refused by default, the
//! networks an operator allows (`WEBHOOKS_ALLOW_NETWORKS`) and the node's own infrastructure.
//!
//! The rule, for each address a hook's host resolves to (all of them must pass):
//! 1. the exact address and port of a configured Docker host, Redis, MongoDB or SMTP server is
//!    refused, even in an allowed network: allowing `127.0.0.0/8` for a local receiver must not
//!    open the plaintext Docker API on the same machine;
//! 2. an address in an allowed network is accepted;
//! 3. loopback, link-local (`169.254.0.0/16`: cloud metadata; `fe80::/10`), unspecified
//!    (`0.0.0.0/8`, `::`), multicast and broadcast addresses are refused;
//! 4. any other port on the machine of an internal endpoint (the same IP) is refused too: a
//!    Redis host runs its sentinels, a Docker host its other services, on other ports;
//! 5. everything else is accepted.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address they are.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// An address of the node's own infrastructure, with what it is (for the refusal's reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InternalEndpoint {
    pub(crate) address: SocketAddr,
    /// E.g. `Docker host 10.0.0.5:2375`.
    pub(crate) what: String,
}

/// The destinations webhooks may reach. The default (no allowed network, no internal
/// endpoint) still refuses the address classes of rule 3.
#[derive(Clone, Debug, Default)]
pub(crate) struct WebhookPolicy {
    allowed: Vec<IpNet>,
    internal: Vec<InternalEndpoint>,
}

impl WebhookPolicy {
    pub(crate) fn new(allowed: Vec<IpNet>, internal: Vec<InternalEndpoint>) -> WebhookPolicy {
        let internal = internal
            .into_iter()
            .map(|endpoint| InternalEndpoint {
                address: SocketAddr::new(
                    endpoint.address.ip().to_canonical(),
                    endpoint.address.port(),
                ),
                what: endpoint.what,
            })
            .collect();
        WebhookPolicy { allowed, internal }
    }

    /// `Err(reason)` when a hook may not connect to `address`.
    pub(crate) fn check(&self, address: SocketAddr) -> Result<(), String> {
        let ip = address.ip().to_canonical();
        let port = address.port();
        if let Some(endpoint) = self
            .internal
            .iter()
            .find(|endpoint| endpoint.address.ip() == ip && endpoint.address.port() == port)
        {
            return Err(format!(
                "{ip}:{port} is the node's {}; webhooks never reach it",
                endpoint.what
            ));
        }
        if self.allowed.iter().any(|network| network.contains(&ip)) {
            return Ok(());
        }
        if let Some(class) = classify(ip) {
            return Err(format!(
                "{ip} is {class} address (allow its network in WEBHOOKS_ALLOW_NETWORKS to reach it)"
            ));
        }
        if let Some(endpoint) = self
            .internal
            .iter()
            .find(|endpoint| endpoint.address.ip() == ip)
        {
            return Err(format!(
                "{ip} is the machine of the node's {} (allow its network in \
                 WEBHOOKS_ALLOW_NETWORKS to reach its other ports)",
                endpoint.what
            ));
        }
        Ok(())
    }
}

/// The class of an address webhooks may not reach by default (with its article, for the
/// reason), or `None`. `ip` is canonical (IPv4-mapped addresses already converted).
pub(crate) fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => {
            if ip.is_loopback() {
                Some("a loopback")
            } else if ip.is_link_local() {
                Some("a link-local")
            } else if ip.octets()[0] == 0 {
                // 0.0.0.0/8 is "this network": 0.0.0.0 reaches the local host on Linux.
                Some("an unspecified")
            } else if ip.is_broadcast() {
                Some("a broadcast")
            } else if ip.is_multicast() {
                Some("a multicast")
            } else {
                None
            }
        }
        IpAddr::V6(ip) => {
            if ip.is_loopback() {
                Some("a loopback")
            } else if ip.is_unspecified() {
                Some("an unspecified")
            } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
                Some("a link-local")
            } else if ip.is_multicast() {
                Some("a multicast")
            } else {
                None
            }
        }
    }
}

/// Parses `WEBHOOKS_ALLOW_NETWORKS`: comma-separated CIDRs (`10.0.0.0/8`, `fd00::/8`); a bare
/// address means itself alone. Empty means none.
pub(crate) fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .map(|network| network.trunc())
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "invalid value for WEBHOOKS_ALLOW_NETWORKS: {item:?} is not a network \
                         in CIDR notation (e.g. 10.0.0.0/8)"
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse::<IpAddr>().unwrap().to_canonical()
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn classifies_the_addresses_refused_by_default() {
        for (address, class) in [
            ("127.0.0.1", "a loopback"),
            ("127.8.9.10", "a loopback"),
            ("::1", "a loopback"),
            ("::ffff:127.0.0.1", "a loopback"),
            ("169.254.169.254", "a link-local"),
            ("fe80::1", "a link-local"),
            ("febf::1", "a link-local"),
            ("0.0.0.0", "an unspecified"),
            ("0.1.2.3", "an unspecified"),
            ("::", "an unspecified"),
            ("224.0.0.1", "a multicast"),
            ("239.255.255.250", "a multicast"),
            ("ff02::1", "a multicast"),
            ("255.255.255.255", "a broadcast"),
        ] {
            assert_eq!(classify(ip(address)), Some(class), "{address}");
        }
        for address in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fec0::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn allowed_networks_open_refused_classes() {
        let closed = WebhookPolicy::default();
        assert!(closed
            .check(at("127.0.0.1:80"))
            .unwrap_err()
            .contains("loopback"));
        assert!(closed.check(at("[::ffff:127.0.0.1]:80")).is_err());
        assert!(closed.check(at("93.184.216.34:443")).is_ok());
        let open = WebhookPolicy::new(parse_networks("127.0.0.0/8, 169.254.1.1").unwrap(), vec![]);
        assert!(open.check(at("127.0.0.1:80")).is_ok());
        assert!(open.check(at("[::ffff:127.0.0.2]:80")).is_ok());
        assert!(open.check(at("169.254.1.1:80")).is_ok());
        assert!(open.check(at("169.254.169.254:80")).is_err());
        assert!(
            open.check(at("[::1]:80")).is_err(),
            "an IPv4 network opens no IPv6 address"
        );
    }

    #[test]
    fn internal_endpoints_are_refused() {
        let internal = vec![
            InternalEndpoint {
                address: at("127.0.0.1:2375"),
                what: "Docker host h1:2375".into(),
            },
            InternalEndpoint {
                address: at("[::ffff:10.0.0.7]:6379"),
                what: "Redis".into(),
            },
        ];
        let policy = WebhookPolicy::new(vec![], internal.clone());
        assert!(policy
            .check(at("127.0.0.1:2375"))
            .unwrap_err()
            .contains("Docker host h1:2375"));
        assert!(policy
            .check(at("10.0.0.7:6379"))
            .unwrap_err()
            .contains("Redis"));
        // The other ports of an internal machine are refused unless its network is allowed.
        assert!(policy
            .check(at("10.0.0.7:26379"))
            .unwrap_err()
            .contains("machine"));
        assert!(policy.check(at("10.0.0.8:6379")).is_ok());
        let allowing =
            WebhookPolicy::new(parse_networks("127.0.0.0/8,10.0.0.0/8").unwrap(), internal);
        assert!(allowing.check(at("10.0.0.7:26379")).is_ok());
        assert!(allowing.check(at("127.0.0.1:8080")).is_ok());
        // The endpoint itself stays refused in an allowed network.
        assert!(allowing.check(at("127.0.0.1:2375")).is_err());
        assert!(allowing.check(at("10.0.0.7:6379")).is_err());
    }

    #[test]
    fn parses_network_lists() {
        assert!(parse_networks("").unwrap().is_empty());
        assert!(parse_networks(" , ").unwrap().is_empty());
        let networks = parse_networks("10.1.2.3/8,fd00::/8,192.168.0.1").unwrap();
        assert_eq!(
            networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "fd00::/8", "192.168.0.1/32"]
        );
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/8;", "1.2.3"] {
            assert!(
                parse_networks(bad)
                    .unwrap_err()
                    .contains("WEBHOOKS_ALLOW_NETWORKS"),
                "{bad}"
            );
        }
    }
}
