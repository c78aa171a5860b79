//! End-to-end: images from a private registry (issue 15, point 6). The test starts a real
//! distribution registry (Debian's `docker-registry`) with htpasswd auth on loopback, pushes the
//! test image there with a login, removes it from the engine, and runs it as a job with
//! `DOCKER_REGISTRY_AUTH`; with a wrong password the execution fails with the registry's refusal,
//! the host's circuit stays closed, and the password shows nowhere.

mod common;

use common::{docker_hosts, image, path_of, Node};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USER: &str = "alice";
const PASSWORD: &str = "pw-Registry-9f2c";

/// A registry process with its files; killed on drop.
struct Registry {
    address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(htpasswd.status.success());
    std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: fastlane-test\n\
         auth:\n  htpasswd:\n    realm: fastlane-test\n    path: {root}/htpasswd\n",
        root = dir.path().display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry");
    let address = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&address).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry {
        address,
        child,
        _dir: dir,
    }
}

/// The docker CLI on `host` with its own client configuration (logins) in `config`.
fn docker_cli(host: &str, config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(["-H", &format!("tcp://{host}")])
        .args(args)
        .output()
        .expect("docker CLI")
}

/// Pushes the test image to the registry as `reference` (logging in with a throw-away client
/// configuration), then removes it from the engine so that a job must pull it.
fn push_private(host: &str, registry: &Registry, reference: &str) {
    let config = tempfile::tempdir().unwrap();
    let login = Command::new("docker")
        .env("DOCKER_CONFIG", config.path())
        .args(["-H", &format!("tcp://{host}"), "login", &registry.address])
        .args(["-u", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(login.status.success(), "login: {login:?}");
    for args in [
        vec!["tag", image().as_str(), reference],
        vec!["push", reference],
        vec!["rmi", reference],
    ] {
        let output = docker_cli(host, config.path(), &args);
        assert!(output.status.success(), "docker {args:?}: {output:?}");
    }
}

fn auth(registry: &Registry, password: &str) -> String {
    json!({ registry.address.as_str(): {"username": USER, "password": password} }).to_string()
}

#[tokio::test]
async fn private_images_are_pulled_with_the_configured_login() {
    let host = docker_hosts()[0].clone();
    let registry = start_registry();
    let reference = format!("{}/private/app:1", registry.address);
    push_private(&host, &registry, &reference);

    // Without a login the registry refuses, and with one it serves.
    let node = Node::start(&[("DOCKER_REGISTRY_AUTH", &auth(&registry, PASSWORD))]).await;
    let posted = node
        .post_job(
            "private-image",
            json!({"image": reference, "command": "echo from-a-private-registry"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(execution["log"], "from-a-private-registry\n");
    assert!(!node.log().contains(PASSWORD), "the password was logged");
    drop(node);

    // A wrong password: the execution fails with the registry's refusal; the host stays usable.
    common::docker(&host, &["rmi", &reference]);
    let node = Node::start(&[("DOCKER_REGISTRY_AUTH", &auth(&registry, "not-the-password"))]).await;
    let posted = node
        .post_job(
            "private-image",
            json!({"image": reference, "command": "echo never"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    let execution = node.wait_finished(&execution_url).await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains("pull") && (error.contains("unauthorized") || error.contains("auth")),
        "not the registry's refusal: {error}"
    );
    for _ in 0..2 {
        let posted = node
            .post_job(
                "public-image",
                json!({"image": image(), "command": "echo ok"}),
            )
            .await;
        let execution = node
            .wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(
            execution["status"], "done",
            "the host was blamed: {execution}"
        );
    }
    let status = node.get_json("/status/").await;
    let text = status.to_string();
    assert!(!text.contains("not-the-password"));
    assert!(
        !node.log().contains("not-the-password"),
        "the password was logged"
    );
    let details = node.get_json(path_of(&execution_url)).await;
    assert!(!details.to_string().contains("not-the-password"));
}

/// A malformed `DOCKER_REGISTRY_AUTH` stops the node at start with a message naming the option
/// and the registry, never the password.
#[test]
fn a_malformed_registry_login_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", "1"])
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .env(
            "DOCKER_REGISTRY_AUTH",
            r#"{"r.example.com": {"password": "pw-Registry-9f2c"}}"#,
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DOCKER_REGISTRY_AUTH"), "{stderr}");
    assert!(stderr.contains("r.example.com"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}
