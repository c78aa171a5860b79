//! The webhook adapter: HTTP(S) calls with reqwest (rustls, certificates verified), the hook's
//! method and headers, a timeout per call, and a destination vetted by [`WebhookPolicy`].
//!
//! A webhook URL is chosen by whoever submits a job, and the node sits inside the network it
//! runs containers in, so every call is checked before it connects: the adapter resolves the
//! URL's host itself (with a timeout), refuses the call when ANY of the addresses is forbidden,
//! and then connects to those vetted addresses only, through a per-call client whose resolver
//! knows nothing else. A DNS answer that changes between the check and the connection (DNS
//! rebinding) therefore cannot redirect the call. No proxy is used (it would resolve the name
//! again, elsewhere), redirects are not followed (a 3xx is the answer: following it would need
//! the same checks again, and a notification has no need to), and only the first
//! [`WEBHOOK_BODY_LIMIT`] bytes of the answer are read.

mod endpoints;
mod policy;

pub(crate) use endpoints::policy_from_config;
pub(crate) use policy::parse_networks;
pub(crate) use policy::WebhookPolicy;

use async_trait::async_trait;
use fastlane_actors::ports::{
    WebhookClient, WebhookError, WebhookRequest, WebhookResponse, WEBHOOK_BODY_LIMIT,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on resolving a hook's host name (the call's own timeout applies when shorter).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct HttpWebhooks {
    policy: WebhookPolicy,
}

impl HttpWebhooks {
    pub(crate) fn new(policy: WebhookPolicy) -> HttpWebhooks {
        HttpWebhooks { policy }
    }
}

#[async_trait]
impl WebhookClient for HttpWebhooks {
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, WebhookError> {
        let refused = |reason: String| WebhookError::Refused(reason);
        let failed = |error: reqwest::Error| WebhookError::Failed(error.to_string());
        let url = reqwest::Url::parse(&request.url)
            .map_err(|error| refused(format!("invalid URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!(
                "the scheme {}:// is not allowed: only http and https",
                url.scheme()
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| refused(format!("invalid method {:?}", request.method)))?;
        let (name, addresses) = destination(&url, request.timeout).await?;
        for address in &addresses {
            self.policy.check(*address).map_err(refused)?;
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("fastlane-node/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(request.timeout)
            .dns_resolver(Arc::new(VettedResolver { name, addresses }))
            .build()
            .map_err(failed)?;
        let mut builder = client
            .request(method, url)
            .timeout(request.timeout)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        // Read no more than is kept: an endless answer must not hold the call open or fill
        // memory. A read error after the status only shortens the body.
        let mut body = Vec::new();
        while body.len() < WEBHOOK_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        Ok(WebhookResponse {
            status,
            body: decode_prefix(&body, WEBHOOK_BODY_LIMIT),
        })
    }
}

/// The addresses the call may connect to: an address in the URL as it is, a name resolved
/// here (with a timeout). Returns the name too (`None` for an address), for the resolver.
async fn destination(
    url: &reqwest::Url,
    timeout: Duration,
) -> Result<(Option<String>, Vec<SocketAddr>), WebhookError> {
    let host = url
        .host_str()
        .ok_or_else(|| WebhookError::Refused("the URL has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| WebhookError::Refused("the URL has no port".into()))?;
    // The URL parser has already turned every IPv4 spelling (`2130706433`, `0x7f.1`) into
    // dotted decimal; IPv6 comes in brackets.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok((None, vec![SocketAddr::new(ip, port)]));
    }
    let lookup = tokio::net::lookup_host((host, port));
    let addresses: Vec<SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT.min(timeout), lookup).await {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(error)) => {
                return Err(WebhookError::Failed(format!(
                    "could not resolve {host}: {error}"
                )))
            }
            Err(_) => return Err(WebhookError::Failed(format!("resolving {host} timed out"))),
        };
    if addresses.is_empty() {
        return Err(WebhookError::Failed(format!("{host} has no address")));
    }
    Ok((Some(host.to_string()), addresses))
}

/// The resolver of one call's client: it answers the vetted name with the vetted addresses and
/// refuses every other name, so the connection can only go where the policy agreed to.
struct VettedResolver {
    name: Option<String>,
    addresses: Vec<SocketAddr>,
}

impl reqwest::dns::Resolve for VettedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let answer: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> = if self
            .name
            .as_deref()
            .is_some_and(|vetted| vetted.eq_ignore_ascii_case(name.as_str()))
        {
            Ok(Box::new(self.addresses.clone().into_iter()))
        } else {
            Err(format!("{} was not vetted for this webhook", name.as_str()).into())
        };
        Box::pin(std::future::ready(answer))
    }
}

/// At most `limit` bytes of `bytes` as text: a character cut by the limit is left out, other
/// invalid UTF-8 is replaced.
fn decode_prefix(bytes: &[u8], limit: usize) -> String {
    let bytes = &bytes[..bytes.len().min(limit)];
    let bytes = match std::str::from_utf8(bytes) {
        Err(error) if error.error_len().is_none() => &bytes[..error.valid_up_to()],
        _ => bytes,
    };
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    // Replacement characters are longer than the bytes they replace.
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::decode_prefix;

    #[test]
    fn decodes_at_most_the_limit() {
        assert_eq!(decode_prefix(b"hello", 1024), "hello");
        assert_eq!(decode_prefix(b"hello", 3), "hel");
        // 'é' is 0xC3 0xA9: a limit through it drops it.
        assert_eq!(decode_prefix("aé".as_bytes(), 2), "a");
        assert_eq!(decode_prefix(b"a\xffb", 1024), "a\u{fffd}b");
        assert!(decode_prefix(&[0xff; 10], 10).len() <= 10);
    }
}
