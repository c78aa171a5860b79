//! A newcomer's first `fastlane-node start`: without a Docker engine it says which address it
//! tried and how to name another (DOCKER_HOST, DOCKER_HOSTS); with one, the start-up log says
//! which URL to open and where the data lives; `-v`/`-vv` raise the log level unless
//! `RUST_LOG` is set.

mod common;

use common::docker_hosts;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fastlane(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fastlane-node"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DOCKER_HOSTS")
        .env_remove("LOG_LEVEL")
        .envs(env.iter().copied());
    command
}

/// The local engine's socket does not exist: `start` fails at once, naming the socket it
/// tried and the two ways out, with none of the old "invalid docker host local:0".
#[test]
fn start_without_docker_says_what_it_tried_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-docker-here.sock");
    let docker_host = format!("unix://{}", socket.display());
    let output = fastlane(
        &["start", "-p", "0"],
        &[
            ("DATA_DIR", dir.path().to_str().unwrap()),
            ("DOCKER_HOST", &docker_host),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&docker_host), "{stderr}");
    assert!(stderr.contains("no Docker engine found"), "{stderr}");
    assert!(stderr.contains("DOCKER_HOST="), "{stderr}");
    assert!(stderr.contains("DOCKER_HOSTS="), "{stderr}");
    assert!(!stderr.contains("local:0"), "{stderr}");
}

/// Starts `command`, waits until its `/healthcheck` on `port` answers and returns what it
/// logged to stderr by then (the start-up lines come before the first answer).
fn start_and_log(command: &mut Command, port: &str) -> (String, std::process::Child) {
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let written = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = written.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let url = format!("http://127.0.0.1:{port}/healthcheck");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &url])
        .status()
        .map_or(true, |status| !status.success())
    {
        assert!(
            Instant::now() < deadline,
            "node never answered: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = log.lock().unwrap().clone();
    (text, child)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The start-up log names the URL to open and the data directory with its backends; with
/// `LOG_LEVEL=warn` it is silent, `-v` brings the line back, `-vv` adds debug lines of the
/// node, and `RUST_LOG` overrides the flags.
#[test]
fn start_up_log_names_the_url_and_the_data_and_obeys_verbosity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let docker_host = format!("tcp://{}", docker_hosts()[0]);
    let run = |flags: &[&str], extra: &[(&str, &str)]| {
        let port = free_port().to_string();
        let mut args = vec!["start", "-b", "127.0.0.1", "-p", &port];
        args.extend_from_slice(flags);
        let mut env = vec![
            ("DATA_DIR", data.as_str()),
            ("DOCKER_HOST", docker_host.as_str()),
        ];
        env.extend_from_slice(extra);
        let mut command = fastlane(&args, &env);
        let (log, child) = start_and_log(&mut command, &port);
        stop(child);
        (log, port)
    };

    let (log, port) = run(&[], &[]);
    assert!(log.contains(&format!("http://127.0.0.1:{port}/")), "{log}");
    assert!(log.contains(&data), "{log}");
    assert!(log.contains("queue: embedded"), "{log}");
    assert!(log.contains("store: embedded"), "{log}");

    let (log, _) = run(&[], &[("LOG_LEVEL", "warn")]);
    assert!(!log.contains("fastlane-node listening"), "{log}");
    let (log, _) = run(&["-v"], &[("LOG_LEVEL", "warn")]);
    assert!(log.contains("fastlane-node listening"), "{log}");
    assert!(!log.contains("DEBUG"), "{log}");
    let (log, _) = run(&["-vv"], &[("LOG_LEVEL", "warn")]);
    assert!(log.contains("DEBUG"), "{log}");
    assert!(log.contains("docker host configured"), "{log}");
    let (log, _) = run(&["-vv"], &[("RUST_LOG", "warn")]);
    assert!(!log.contains("fastlane-node listening"), "{log}");
    assert!(!log.contains("DEBUG"), "{log}");
}
