//! The e-mail adapter: SMTP with lettre (`SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASSWORD`,
//! `SMTP_FROM`, `SMTP_USE_SSL` = STARTTLS, `SMTP_TLS_CA_FILE` = extra trusted CAs). The password
//! is never logged.

use async_trait::async_trait;
use fastlane_actors::ports::{Email, Mailer};
use lettre::message::{MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub(crate) struct SmtpMailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<String>,
}

/// Timeout of one SMTP conversation step.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

impl SmtpMailer {
    pub(crate) fn new(
        host: Option<String>,
        port: u16,
        starttls: bool,
        user: Option<String>,
        password: Option<String>,
        from: Option<String>,
        ca_file: Option<std::path::PathBuf>,
    ) -> anyhow::Result<SmtpMailer> {
        let transport = match host {
            None => None,
            Some(host) => {
                let mut builder = if starttls {
                    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)?;
                    if let Some(ca_file) = ca_file {
                        builder = builder.tls(Tls::Required(tls_trusting(&host, &ca_file)?));
                    }
                    builder
                } else {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                };
                builder = builder.port(port).timeout(Some(SMTP_TIMEOUT));
                if let (Some(user), Some(password)) = (user, password) {
                    builder = builder.credentials(Credentials::new(user, password));
                }
                Some(builder.build())
            }
        };
        Ok(SmtpMailer { transport, from })
    }
}

/// STARTTLS parameters for `host` trusting the public roots and the certificates of
/// `ca_file` (a start-up error when it cannot be read or holds no certificate).
fn tls_trusting(host: &str, ca_file: &std::path::Path) -> anyhow::Result<TlsParameters> {
    use anyhow::Context;
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("SMTP_TLS_CA_FILE: cannot read {}", ca_file.display()))?;
    anyhow::ensure!(
        pem.windows(27)
            .any(|window| window == b"-----BEGIN CERTIFICATE-----"),
        "SMTP_TLS_CA_FILE: {} holds no PEM certificate",
        ca_file.display()
    );
    let certificate = Certificate::from_pem(&pem).with_context(|| {
        format!(
            "SMTP_TLS_CA_FILE: {} holds no PEM certificate",
            ca_file.display()
        )
    })?;
    Ok(TlsParameters::builder(host.to_string())
        .add_root_certificate(certificate)
        .build_rustls()?)
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn configured(&self) -> bool {
        self.transport.is_some() && self.from.is_some()
    }

    async fn send(&self, email: &Email) -> Result<(), String> {
        let (Some(transport), Some(from)) = (&self.transport, &self.from) else {
            return Err("SMTP is not configured".into());
        };
        let message = Message::builder()
            .from(
                from.parse()
                    .map_err(|error| format!("SMTP_FROM: {error}"))?,
            )
            .to(email
                .to
                .parse()
                .map_err(|error| format!("recipient {}: {error}", email.to))?)
            .subject(&email.subject)
            // Stable across attempts and nodes: a repeat after a lost answer is recognisable.
            .message_id(Some(format!("<{}@fastlane-node>", email.delivery_id)))
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(email.text.clone()))
                    .singlepart(SinglePart::html(email.html.clone())),
            )
            .map_err(|error| error.to_string())?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}
