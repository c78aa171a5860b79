//! Secrets (issue 13, point 5), end to end: what the API shows of a job hides secret env values,
//! webhook header values and URL query values; DATA_DIR and its files are private; bad
//! configuration never quotes a secret, and numbers too large for their option stop start-up.

mod common;

use common::{image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// Job details redact env values by the widened default words (token, pass, session, …), every
/// webhook header value and every webhook URL's query values; the execution's recorded webhook
/// attempt shows the redacted URL too. None of the secret texts appears anywhere in either view.
#[tokio::test]
async fn job_details_hide_envs_webhook_headers_and_query_strings() {
    let node = Node::start(&[]).await;
    let hook = "http://127.0.0.1:9/hook?token=q-secret-1&page=2";
    let posted = node
        .post_job(
            "secrets",
            json!({"image": image(), "command": "echo x",
                   "envs": {"GITHUB_TOKEN": "env-secret-1", "DB_PASS": "env-secret-2",
                            "SESSION_ID": "env-secret-3", "AUTH_HEADER": "env-secret-4",
                            "NAME": "plain-value"},
                   "webhooks": {"finishes": [{"url": hook,
                                              "headers": {"X-Anything": "hdr-secret-1"}}]}}),
        )
        .await;
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    let details = node.get_json(&job_path).await;
    let metadata = &details["job"]["metadata"];
    for name in ["GITHUB_TOKEN", "DB_PASS", "SESSION_ID", "AUTH_HEADER"] {
        assert_eq!(metadata["envs"][name], "***", "{name}");
    }
    assert_eq!(metadata["envs"]["NAME"], "plain-value");
    let shown_hook = &metadata["webhooks"]["finishes"][0];
    assert_eq!(
        shown_hook["url"],
        "http://127.0.0.1:9/hook?token=***&page=***"
    );
    assert_eq!(shown_hook["headers"]["X-Anything"], "***");

    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    let execution_path = path_of(&execution_url).to_string();
    wait_until(
        Duration::from_secs(30),
        "a recorded webhook attempt",
        || {
            let node = &node;
            let path = execution_path.clone();
            async move {
                let execution = node.get_json(&path).await;
                execution["execution"]["metadata"]["webhookDispatch"]
                    .as_array()
                    .is_some_and(|entries| !entries.is_empty())
            }
        },
    )
    .await;
    let execution = node.get_json(&execution_path).await;
    let entry = &execution["execution"]["metadata"]["webhookDispatch"][0];
    assert!(
        entry["url"]
            .as_str()
            .is_some_and(|url| !url.contains("q-secret")),
        "{entry}"
    );
    let details = node.get_json(&job_path).await;
    for view in [details.to_string(), execution.to_string()] {
        for secret in [
            "env-secret-1",
            "env-secret-2",
            "env-secret-3",
            "env-secret-4",
            "q-secret-1",
            "hdr-secret-1",
        ] {
            assert!(!view.contains(secret), "{secret} shown: {view}");
        }
    }
    assert!(!node.log().contains("q-secret-1"), "{}", node.log());
}

/// After start, DATA_DIR is 0700 and every file in it (node id, SQLite database and its WAL
/// files) 0600; a directory and files left wider are tightened at the next start, with a log
/// line.
#[tokio::test]
async fn data_dir_and_its_files_are_private() {
    let mut node = Node::start(&[]).await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let check = |node: &Node| {
        assert_eq!(mode(&node.data_dir), 0o700);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&node.data_dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert_eq!(mode(&entry.path()), 0o600, "{name}");
                names.push(name);
            }
        }
        assert!(names.iter().any(|name| name == "node-id"), "{names:?}");
        assert!(
            names.iter().any(|name| name == "fastlane.sqlite3"),
            "{names:?}"
        );
    };
    check(&node);
    assert!(node.terminate().success());
    let set = |path: &std::path::Path, bits: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap()
    };
    set(&node.data_dir, 0o755);
    set(&node.data_dir.join("node-id"), 0o644);
    set(&node.data_dir.join("fastlane.sqlite3"), 0o666);
    node.start_again().await;
    check(&node);
    assert!(
        node.log().contains("data directory permissions tightened"),
        "{}",
        node.log()
    );
}

fn start_with(env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", "0"])
        .env("DATA_DIR", dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Bad secret-bearing values stop start-up without being quoted.
#[test]
fn config_errors_never_quote_secrets() {
    for (name, value) in [
        ("REDIS_URL", "redis://user:pw-secret-1@host:notaport/0"),
        ("REDIS_URL", "redis+cluster://u:pw-secret-1@h:1,h:x"),
        ("MONGODB_URL", "mongo://user:pw-secret-1@host/db"),
        ("MONGODB_CONFIG", "{\"host\": \"pw-secret-1"),
        ("SENTRY_DSN", "pw-secret-1"),
    ] {
        let (started, stderr) = start_with(&[(name, value)]);
        assert!(!started, "{name}={value} was accepted");
        assert!(!stderr.contains("pw-secret-1"), "{name}: {stderr}");
    }
}

/// A number too large for its option is a start-up error naming it, not a panic nor a clamp.
#[test]
fn oversized_numbers_stop_start_up() {
    for (name, value) in [
        ("SMTP_PORT", "99999999999999999999"),
        ("SMTP_PORT", "70000"),
        ("HARD_EXECUTION_TIMEOUT_SECONDS", "1e30"),
        ("HARD_EXECUTION_TIMEOUT_SECONDS", "18446744073709551615"),
        ("DOCKER_CALL_TIMEOUT_SECONDS", "18446744073709551615"),
        ("EXPONENTIAL_BACKOFF_FACTOR", "1e300"),
    ] {
        let (started, stderr) = start_with(&[(name, value)]);
        assert!(!started, "{name}={value} was accepted");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}={value}: {stderr}");
    }
}

/// SMTP credentials without TLS are refused at start-up unless SMTP_ALLOW_PLAINTEXT_AUTH=true.
#[tokio::test]
async fn smtp_plaintext_auth_is_refused_unless_allowed() {
    let smtp = [
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", "2525"),
        ("SMTP_USER", "me"),
        ("SMTP_PASSWORD", "smtp-secret-1"),
        ("SMTP_FROM", "node@example.com"),
    ];
    let (started, stderr) = start_with(&smtp);
    assert!(!started);
    assert!(stderr.contains("SMTP_ALLOW_PLAINTEXT_AUTH"), "{stderr}");
    assert!(!stderr.contains("smtp-secret-1"), "{stderr}");
    let mut allowed = smtp.to_vec();
    allowed.push(("SMTP_ALLOW_PLAINTEXT_AUTH", "true"));
    let node = Node::start(&allowed).await;
    let health: Value = node.get_json("/healthcheck").await;
    assert_eq!(health["redis"], true);
}
