//! End-to-end: e-mails over STARTTLS with AUTH to a real SMTP server started by the test
//! (tokio + tokio-rustls, a certificate made by `openssl` for 127.0.0.1 and trusted through
//! `SMTP_TLS_CA_FILE`). The server refuses AUTH and MAIL before STARTTLS, so a mail that
//! arrives proves both the encryption and the login.

mod common;

use common::{image, wait_until, Node};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const USER: &str = "mailer";
const PASSWORD: &str = "p4ss word";

/// What the server saw of one message.
#[derive(Clone, Debug)]
struct Mail {
    /// The identity of the AUTH that succeeded before it.
    login: String,
    /// Whether the message came over TLS.
    tls: bool,
    recipients: Vec<String>,
    data: String,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    let script = r#"
set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=fastlane-smtp-test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth\n' > server.cnf
openssl x509 -req -days 2 -sha256 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -extfile server.cnf 2>/dev/null
"#;
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/testenv.sh installs it)");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn acceptor(dir: &Path) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(dir.join("server-cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

fn base64_decode(text: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The SMTP conversation on one connection (plain, then TLS after STARTTLS). Returns the
/// stream when the client asked for STARTTLS, to go on over TLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    mails: &Arc<Mutex<Vec<Mail>>>,
) -> Option<S> {
    let mut stream = BufReader::new(stream);
    let mut login: Option<String> = None;
    let mut recipients = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if tls {
                "250-test.example\r\n250 AUTH PLAIN LOGIN\r\n".into()
            } else {
                "250-test.example\r\n250 STARTTLS\r\n".into()
            }
        } else if upper.starts_with("STARTTLS") {
            if tls {
                "503 already encrypted\r\n".into()
            } else {
                stream.write_all(b"220 go ahead\r\n").await.ok()?;
                stream.flush().await.ok()?;
                return Some(stream.into_inner());
            }
        } else if upper.starts_with("AUTH PLAIN") && tls {
            let mut credentials = command[10..].trim().to_string();
            if credentials.is_empty() {
                stream.write_all(b"334 \r\n").await.ok()?;
                credentials.clear();
                stream.read_line(&mut credentials).await.ok()?;
            }
            let decoded = base64_decode(&credentials).unwrap_or_default();
            let mut parts = decoded.split('\0');
            let (_, user, password) = (parts.next(), parts.next(), parts.next());
            if user == Some(USER) && password == Some(PASSWORD) {
                login = Some(USER.to_string());
                "235 accepted\r\n".into()
            } else {
                "535 bad credentials\r\n".into()
            }
        } else if upper.starts_with("AUTH LOGIN") && tls {
            stream.write_all(b"334 VXNlcm5hbWU6\r\n").await.ok()?;
            let mut user = String::new();
            stream.read_line(&mut user).await.ok()?;
            stream.write_all(b"334 UGFzc3dvcmQ6\r\n").await.ok()?;
            let mut password = String::new();
            stream.read_line(&mut password).await.ok()?;
            if base64_decode(&user).as_deref() == Some(USER)
                && base64_decode(&password).as_deref() == Some(PASSWORD)
            {
                login = Some(USER.to_string());
                "235 accepted\r\n".into()
            } else {
                "535 bad credentials\r\n".into()
            }
        } else if upper.starts_with("AUTH") {
            "538 encryption required\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            if login.is_some() {
                "250 OK\r\n".into()
            } else {
                "530 authentication required\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            recipients.push(command[8..].trim().trim_matches(['<', '>']).to_string());
            "250 OK\r\n".into()
        } else if upper.starts_with("DATA") {
            stream.write_all(b"354 go ahead\r\n").await.ok()?;
            let mut data = String::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if line.trim_end() == "." {
                    break;
                }
                data.push_str(line.trim_end_matches(['\r', '\n']));
                data.push('\n');
            }
            mails.lock().unwrap().push(Mail {
                login: login.clone().unwrap_or_default(),
                tls,
                recipients: std::mem::take(&mut recipients),
                data,
            });
            "250 OK queued\r\n".into()
        } else if upper.starts_with("QUIT") {
            let _ = stream.write_all(b"221 bye\r\n").await;
            return None;
        } else {
            "250 OK\r\n".into()
        };
        stream.write_all(reply.as_bytes()).await.ok()?;
        stream.flush().await.ok()?;
    }
}

/// Starts the server; returns its port and what it received.
async fn smtp_server(dir: &Path) -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let acceptor = acceptor(dir);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let received = mails.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (acceptor, mails) = (acceptor.clone(), received.clone());
            tokio::spawn(async move {
                if stream.write_all(b"220 test ESMTP\r\n").await.is_err() {
                    return;
                }
                let Some(plain) = converse(stream, false, &mails).await else {
                    return;
                };
                if let Ok(encrypted) = acceptor.accept(plain).await {
                    converse(encrypted, true, &mails).await;
                }
            });
        }
    });
    (port, mails)
}

/// A failing job's e-mail reaches the server over STARTTLS after AUTH with the configured
/// user and password; the password never appears in the node's log.
#[tokio::test]
async fn email_arrives_over_starttls_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (port, mails) = smtp_server(dir.path()).await;
    let port = port.to_string();
    let ca = dir.path().join("ca.pem");
    let node = Node::start(&[
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", &port),
        ("SMTP_USE_SSL", "true"),
        ("SMTP_USER", USER),
        ("SMTP_PASSWORD", PASSWORD),
        ("SMTP_FROM", "fastlane@example.com"),
        ("SMTP_TLS_CA_FILE", ca.to_str().unwrap()),
    ])
    .await;
    let posted = node
        .post_job(
            "tls-mail",
            serde_json::json!({"image": image(), "command": "bash -c 'exit 4'",
                               "notify": {"fails": ["ops@example.com"]}}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    wait_until(Duration::from_secs(30), "the e-mail", || async {
        !mails.lock().unwrap().is_empty()
    })
    .await;
    let mail = mails.lock().unwrap()[0].clone();
    assert!(mail.tls, "{mail:?}");
    assert_eq!(mail.login, USER);
    assert_eq!(mail.recipients, ["ops@example.com"]);
    let job = format!("tls-mail/{}", posted["jobId"].as_str().unwrap());
    let data = mail.data.replace("\n ", " ");
    assert!(
        data.contains(&format!("[Fastlane] Job {job} failed with exit code 4!")),
        "{data}"
    );
    assert!(!node.log().contains(PASSWORD), "the password was logged");
}

/// Without `SMTP_TLS_CA_FILE` the test server's certificate is not trusted: nothing is sent
/// in the clear instead (no mail arrives, the failure is logged, the node goes on).
#[tokio::test]
async fn an_untrusted_certificate_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (port, mails) = smtp_server(dir.path()).await;
    let port = port.to_string();
    let node = Node::start(&[
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", &port),
        ("SMTP_USE_SSL", "true"),
        ("SMTP_USER", USER),
        ("SMTP_PASSWORD", PASSWORD),
        ("SMTP_FROM", "fastlane@example.com"),
    ])
    .await;
    let posted = node
        .post_job(
            "tls-untrusted",
            serde_json::json!({"image": image(), "command": "bash -c 'exit 4'",
                               "notify": {"fails": ["ops@example.com"]}}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    wait_until(
        Duration::from_secs(30),
        "the failure in the log",
        || async { node.log().contains("could not send e-mail") },
    )
    .await;
    assert!(mails.lock().unwrap().is_empty());
    assert!(!node.log().contains(PASSWORD), "the password was logged");
    let health = node.get("/healthcheck").await;
    assert_eq!(health.status(), 200);
}
