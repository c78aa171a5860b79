//! The webhook adapter: HTTP(S) calls with reqwest (rustls), the hook's method and headers, a
//! timeout per call, redirects followed, TLS certificates verified (the original did not).

use async_trait::async_trait;
use fastlane_actors::ports::{WebhookClient, WebhookRequest, WebhookResponse};
use std::collections::BTreeMap;

pub(crate) struct HttpWebhooks {
    client: reqwest::Client,
}

impl HttpWebhooks {
    pub(crate) fn new() -> anyhow::Result<HttpWebhooks> {
        Ok(HttpWebhooks {
            client: reqwest::Client::builder()
                .user_agent(concat!("fastlane-node/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }
}

#[async_trait]
impl WebhookClient for HttpWebhooks {
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|error| error.to_string())?;
        let mut builder = self
            .client
            .request(method, &request.url)
            .timeout(request.timeout)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.text().await.unwrap_or_default();
        Ok(WebhookResponse {
            status,
            body,
            headers,
        })
    }
}
