//! Test harness: starts the real `fastlane-node` binary against the private Docker engines that
//! `scripts/test.sh` provisions (`FASTLANE_TEST_DOCKER_HOSTS`, `FASTLANE_TEST_IMAGE`), and talks
//! to it over HTTP.
#![allow(dead_code)]

pub mod openapi;
pub mod redis;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Docker engines of the test environment, `host:port` each.
pub fn docker_hosts() -> Vec<String> {
    let hosts = std::env::var("FASTLANE_TEST_DOCKER_HOSTS").expect(
        "FASTLANE_TEST_DOCKER_HOSTS is not set: run the tests with scripts/test.sh, which starts \
         private Docker engines and builds the test image",
    );
    hosts.split(',').map(str::to_string).collect()
}

/// The test image (busybox applets and bash).
pub fn image() -> String {
    std::env::var("FASTLANE_TEST_IMAGE").unwrap_or_else(|_| "fastlane-test:1".to_string())
}

/// Runs the docker CLI against `host`.
pub fn docker(host: &str, args: &[&str]) -> String {
    let output = Command::new("docker")
        .arg("-H")
        .arg(format!("tcp://{host}"))
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running node with its own data directory and port.
pub struct Node {
    pub port: u16,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Extra arguments of `start` (e.g. `--role worker`).
    args: Vec<String>,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node on the first test engine with `extra` environment variables.
    pub async fn start(extra: &[(&str, &str)]) -> Node {
        Self::start_with_args(extra, &[]).await
    }

    /// Starts a node with `extra` environment variables and extra arguments of `start`.
    pub async fn start_with_args(extra: &[(&str, &str)], args: &[&str]) -> Node {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().to_path_buf();
        let farms = format!(
            r#"[{{"match": "", "hosts": ["{}"], "maxRunning": 8}}]"#,
            docker_hosts()[0]
        );
        let mut env: Vec<(String, String)> = vec![
            ("DOCKER_HOSTS".into(), farms),
            ("RUST_LOG".into(), "info".into()),
        ];
        for (key, value) in extra {
            env.retain(|(existing, _)| existing != key);
            env.push((key.to_string(), value.to_string()));
        }
        let mut node = Node {
            // The node picks its own port (`-p 0`), so no other test can take it in between.
            port: 0,
            data_dir,
            env,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            _temp: Some(temp),
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log_path = self.data_dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        // What this start writes comes after what earlier starts wrote.
        let offset = log.metadata().map(|meta| meta.len()).unwrap_or(0) as usize;
        let child = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
            .args(["start", "-b", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .env("DATA_DIR", &self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fastlane-node");
        // Held by the node before waiting, so that a failed wait still stops it.
        let child = self.child.insert(child);
        self.port = listening_port(&log_path, offset, child).await;
        let url = self.url("/healthcheck");
        // A node with basic auth answers /healthcheck only to its login.
        let setting = |name: &str| {
            self.env
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let login = setting("BASIC_AUTH_USERNAME").zip(setting("BASIC_AUTH_PASSWORD"));
        wait_until(
            Duration::from_secs(20),
            "node to answer /healthcheck",
            || async {
                let mut request = reqwest::Client::new().get(&url);
                if let Some((user, password)) = &login {
                    request = request.basic_auth(user, Some(password));
                }
                request.send().await.is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The node process's id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        unsafe_kill(child.id(), "TERM");
        child.wait().unwrap()
    }

    /// Kills the node with SIGKILL (no cleanup at all).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("node running");
        unsafe_kill(child.id(), "KILL");
        let _ = child.wait();
    }

    /// Sets (or replaces) an environment variable for the next start of the node, so that it
    /// can be started again over the same `DATA_DIR` with another configuration.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts the node again after `kill` or `terminate`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn().await;
    }

    /// PUTs a job (create or update) and returns the answer.
    pub async fn put_job(&self, task: &str, job_id: &str, body: Value) -> Value {
        self.send_job(
            reqwest::Method::PUT,
            &format!("/tasks/{task}/jobs/{job_id}/"),
            body,
        )
        .await
    }

    /// POSTs to `path` with an empty body and returns status and JSON.
    pub async fn post_empty(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .send()
            .await
            .unwrap();
        let response = openapi::checked("POST", response).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The job's executions, oldest first.
    pub async fn executions(&self, job_url: &str) -> Vec<Value> {
        let job = self.get_json(path_of(job_url)).await;
        let mut executions = job["job"]["executions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        executions.reverse();
        executions
    }

    /// Waits until the job has `count` finished executions; returns all of them, oldest first.
    pub async fn wait_executions(
        &self,
        job_url: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let executions = self.executions(job_url).await;
            let finished = executions
                .iter()
                .filter(|e| {
                    ["done", "failed", "timedout", "expired", "stopped"]
                        .contains(&e["status"].as_str().unwrap_or(""))
                })
                .count();
            if finished >= count {
                return executions;
            }
            assert!(
                Instant::now() < deadline,
                "job never had {count} finished executions: {executions:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(status.success(), "node exited with {status}");
        }
        self.spawn().await;
    }

    /// Blacklists `host` through this node, or puts it back into service.
    pub async fn set_blacklisted(&self, host: &str, blacklisted: bool) {
        let client = reqwest::Client::new();
        let url = self.url("/docker-executor/blacklist");
        let request = if blacklisted {
            client.post(url)
        } else {
            client.delete(url)
        };
        let answer = request.json(&json!({"host": host})).send().await.unwrap();
        let method = if blacklisted { "POST" } else { "DELETE" };
        let answer = openapi::checked(method, answer).await;
        assert_eq!(answer.status(), 200, "blacklisted {host}: {blacklisted}");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let response = reqwest::get(self.url(path)).await.unwrap();
        openapi::checked("GET", response).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Posts a job and returns the enqueue response.
    pub async fn post_job(&self, task: &str, body: Value) -> Value {
        self.send_job(reqwest::Method::POST, &format!("/tasks/{task}/"), body)
            .await
    }

    /// Sends a job with `method` to `path`, asserts 200 and returns the answer.
    async fn send_job(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .request(method.clone(), self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let response = openapi::checked(method.as_str(), response).await;
        assert_eq!(
            response.status(),
            200,
            "{method} job: {:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    /// Waits until the execution at `execution_url` has a terminal status; returns it.
    pub async fn wait_finished(&self, execution_url: &str) -> Value {
        self.wait_finished_within(execution_url, Duration::from_secs(60))
            .await
    }

    /// [`Node::wait_finished`], for at most `limit`.
    pub async fn wait_finished_within(&self, execution_url: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let response = reqwest::get(execution_url).await.unwrap();
            let details: Value = openapi::checked("GET", response)
                .await
                .json()
                .await
                .unwrap();
            let status = details["execution"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if ["done", "failed", "timedout", "expired", "stopped"].contains(&status.as_str()) {
                return details["execution"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "execution never finished: {details}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `condition` until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The port a node started as `child` listens on, from the "listening" line it logs to
/// `log_path` after `offset`: the tests start nodes with `-p 0`, as a port picked beforehand
/// could be taken by another test's node meanwhile (whose /healthcheck would answer instead).
pub async fn listening_port(log_path: &Path, offset: usize, child: &mut Child) -> u16 {
    const LINE: &str = "listening: open http://";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read(log_path).unwrap_or_default();
        let this_start = String::from_utf8_lossy(log.get(offset..).unwrap_or_default());
        // Only a whole address counts: the line may be read while it is being written.
        let address = this_start
            .find(LINE)
            .map(|at| &this_start[at + LINE.len()..])
            .and_then(|rest| rest.split_once('/'))
            .map(|(authority, _)| authority);
        if let Some(authority) = address {
            let port = authority.rsplit(':').next().unwrap_or_default();
            return port.parse().expect("a port in the listening line");
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the node exited ({status}) before listening:\n{this_start}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the node to listen:\n{this_start}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn path_of(url: &str) -> &str {
    let without_scheme = url.trim_start_matches("http://");
    &without_scheme[without_scheme.find('/').unwrap()..]
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A private Docker engine a test can kill and restart (the shared ones must stay up for the
/// tests running beside it).
pub struct Engine {
    pub address: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// With TLS: the directory of `ca.pem`, `cert.pem`, `key.pem` (client) and the server's.
    pub tls: Option<PathBuf>,
}

impl Engine {
    pub fn start() -> Engine {
        Self::start_with(false)
    }

    /// An engine that only accepts TLS clients with a certificate of its own test CA.
    pub fn start_tls() -> Engine {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let tls = tls.then(|| {
            let certs = dir.path().join("certs");
            make_certificates(&certs);
            certs
        });
        let mut engine = Engine {
            address,
            dir,
            child: None,
            tls,
        };
        engine.spawn();
        let rootfs = std::env::var("FASTLANE_TEST_ROOTFS")
            .expect("FASTLANE_TEST_ROOTFS (run scripts/test.sh)");
        let status = engine
            .cli()
            .args(["import", &rootfs, &image()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "docker import on the private engine");
        engine
    }

    /// The docker CLI, pointed at this engine.
    pub fn cli(&self) -> Command {
        let mut command = Command::new("docker");
        command.arg("-H").arg(format!("tcp://{}", self.address));
        if let Some(certs) = &self.tls {
            command
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", certs);
        }
        command
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let mut dockerd = Command::new("dockerd");
        if let Some(certs) = &self.tls {
            dockerd
                .arg("--tlsverify")
                .arg(format!("--tlscacert={}", certs.join("ca.pem").display()))
                .arg(format!(
                    "--tlscert={}",
                    certs.join("server-cert.pem").display()
                ))
                .arg(format!(
                    "--tlskey={}",
                    certs.join("server-key.pem").display()
                ));
        }
        let child = dockerd
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("-H")
            .arg(format!("tcp://{}", self.address))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .cli()
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < deadline, "private dockerd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the engine (SIGKILL to dockerd and its containerd).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and directories.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
        self.spawn();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Number of running containers labelled with `task_id` on `host`.
pub fn running_containers(host: &str, task_id: &str) -> usize {
    docker(
        host,
        &[
            "ps",
            "--filter",
            &format!("label=fastlane.task_id={task_id}"),
            "--format",
            "{{.ID}}",
        ],
    )
    .lines()
    .filter(|line| !line.trim().is_empty())
    .count()
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`
/// (`ca.pem`, `server-cert.pem`, `server-key.pem`, `cert.pem`, `key.pem`).
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=fastlane-test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth\n' > server.cnf
openssl x509 -req -days 2 -sha256 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -extfile server.cnf 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=fastlane-client -keyout key.pem -out client.csr 2>/dev/null
printf 'extendedKeyUsage = clientAuth\n' > client.cnf
openssl x509 -req -days 2 -sha256 -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -extfile client.cnf 2>/dev/null
"#;
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
