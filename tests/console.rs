//! The web console (`/ui/`), driven in headless Chromium through chromedriver (W3C WebDriver
//! spoken as raw JSON over HTTP): find a task by search, open its job, watch a running
//! execution's output arrive line by line, stop it, blacklist a host on the farm page; hostile
//! task ids and outputs shown as text with no script run; API tokens pasted in the page;
//! a phone-sized window. Screenshots land in `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (installed by `scripts/testenv.sh`): without them the
//! tests fail, they do not skip.

mod common;

use base64::Engine;
use common::{docker, docker_hosts, image, Node};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One chromedriver with one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    client: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver on a free port and a desktop session (a 1280×900 window) in the
    /// Asia/Tokyo time zone, so that local times differ from UTC.
    async fn start() -> Browser {
        Self::start_with(json!({})).await
    }

    /// The same with a phone's screen (390×844 CSS pixels, touch, mobile viewport).
    async fn phone() -> Browser {
        Self::start_with(json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": true}}))
            .await
    }

    async fn start_with(mobile: Value) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TZ", "Asia/Tokyo")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian package chromium-driver, installed by scripts/testenv.sh)",
            );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{root}/status")).send().await;
            if let Ok(ready) = ready {
                let status: Value = ready.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("chromium is installed");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--disable-dev-shm-usage",
                         "--window-size=1280,900"],
            },
        }}});
        let mut capabilities = capabilities;
        if mobile.as_object().is_some_and(|m| !m.is_empty()) {
            capabilities["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] =
                mobile;
        }
        let answer: Value = client
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new WebDriver session")
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start: {answer}"))
            .to_string();
        Browser {
            driver,
            base: format!("{root}/session/{session}"),
            client,
        }
    }

    /// A WebDriver command; returns its `value`, or `Err` with the error's `value`.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer = request.send().await.expect("chromedriver answers");
        let ok = answer.status().is_success();
        let value: Value = answer.json().await.unwrap_or_default();
        if ok {
            Ok(value["value"].clone())
        } else {
            Err(value["value"].clone())
        }
    }

    async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap();
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Polls `script` (returning a value; `null`/`false`/`""` mean not yet) until `limit`.
    async fn wait(&self, what: &str, limit: Duration, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.js(script, args.clone()).await;
            if !(value.is_null() || value == false || value == "") {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.body.innerText", json!([])).await;
                panic!("timed out waiting for {what}; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the element `script` returns, then clicks it.
    async fn click(&self, what: &str, script: &str, args: Value) {
        let element = self.wait(what, Duration::from_secs(20), script, args).await;
        let Some(id) = element[ELEMENT].as_str().map(str::to_string) else {
            panic!("{what} is not an element: {element}");
        };
        self.command("POST", &format!("/element/{id}/click"), None)
            .await
            .unwrap_or_else(|error| panic!("click {what}: {error}"));
    }

    /// Clicks the link whose text is `text`.
    async fn click_link(&self, text: &str) {
        self.click(
            &format!("link {text:?}"),
            "return [...document.querySelectorAll('main a')].find(a => a.textContent === arguments[0]) || null",
            json!([text]),
        )
        .await;
    }

    /// Clicks the button whose text is `text` (within `scope`, a CSS selector), then accepts
    /// the confirmation it asks.
    async fn click_confirmed(&self, scope: &str, text: &str) {
        self.click(
            &format!("button {text:?}"),
            "return [...document.querySelectorAll(arguments[0] + ' button')].find(b => b.textContent === arguments[1] && !b.disabled) || null",
            json!([scope, text]),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(question) = self.command("GET", "/alert/text", None).await {
                assert!(
                    question.as_str().is_some_and(|q| q.contains('?')),
                    "{question}"
                );
                self.command("POST", "/alert/accept", None).await.unwrap();
                return;
            }
            assert!(Instant::now() < deadline, "no confirmation for {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, selector: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
            json!([selector]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Saves a PNG of the window as `target/console-screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.command("GET", "/screenshot", None).await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session, then chromedriver (which ends its Chromium).
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A node on both test engines (so the farm has a host to blacklist and one to run on).
async fn farm_node(extra: &[(&str, &str)]) -> Node {
    let hosts = docker_hosts();
    let farms = json!([{"match": "", "hosts": hosts, "maxRunning": 8}]).to_string();
    let mut env = vec![("DOCKER_HOSTS", farms.as_str())];
    env.extend_from_slice(extra);
    Node::start(&env).await
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The page, script and style: served without credentials, with the security headers, small.
#[tokio::test]
async fn the_console_is_served_small_and_locked_down() {
    let tokens =
        json!([{"name": "reader", "sha256": sha256_hex("read-token"), "scopes": ["read"]}]);
    let node = Node::start(&[
        ("API_TOKENS", &tokens.to_string()),
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A browser at / is sent to the console; API clients keep the healthcheck.
    let browser = client
        .get(node.url("/"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 303);
    assert_eq!(browser.headers()["location"], "/ui/");
    let api = client
        .get(node.url("/"))
        .header("accept", "application/json")
        .bearer_auth("read-token")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    let health: Value = api.json().await.unwrap();
    assert_eq!(health["redis"], true);
    let anonymous = client.get(node.url("/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "no data without credentials");
    // The page holds no data: served without credentials, gzipped, under 100 KiB in all.
    let page = client
        .get(node.url("/ui/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    assert!(!policy.contains("unsafe"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = String::from_utf8(
        client
            .get(node.url("/ui/"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let mut transferred = page.bytes().await.unwrap().len();
    for asset in ["app.js", "app.css"] {
        let start = html.find(&format!("{asset}?v=")).expect(asset);
        let end = start + html[start..].find('"').unwrap();
        let linked = &html[start..end];
        let answer = client
            .get(node.url(&format!("/ui/{linked}")))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{linked}");
        assert_eq!(
            answer.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(answer.headers().contains_key("content-security-policy"));
        transferred += answer.bytes().await.unwrap().len();
    }
    assert!(
        transferred < 100 * 1024,
        "the first page is {transferred} bytes"
    );
    println!("console first load: {transferred} bytes transferred (gzip)");
    let missing = client.get(node.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/json");
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["operation"], "console");
    // The console's routes take no other method; data routes still need credentials.
    let post = client.post(node.url("/ui/")).send().await.unwrap();
    assert_ne!(post.status(), 200);
    let tasks = client.get(node.url("/tasks/")).send().await.unwrap();
    assert_eq!(tasks.status(), 401);
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The operator's night: find the task, open the job, watch the output, stop it, take a host
/// out of service.
#[tokio::test]
async fn click_through_search_job_live_output_stop_and_blacklist() {
    let node = farm_node(&[]).await;
    let task = unique("console-nightly");
    for other in ["console-other-a", "console-other-b"] {
        node.post_job(other, json!({"image": image(), "command": "true"}))
            .await;
    }
    let enqueued = node
        .post_job(
            &task,
            json!({
                "image": image(),
                "command": "sh -c 'for i in $(seq 1 120); do echo line-$i; sleep 0.4; done'",
                "envs": {"API_PASSWORD": "hunter2-secret"},
            }),
        )
        .await;
    let job = enqueued["jobId"].as_str().unwrap().to_string();
    let execution = enqueued["executionId"].as_str().unwrap().to_string();

    let browser = Browser::start().await;
    // A browser opening the node lands on the console.
    browser.goto(&node.url("/")).await;
    browser
        .wait(
            "the tasks page",
            Duration::from_secs(20),
            "return location.pathname === '/ui/' && document.querySelector('#search')",
            json!([]),
        )
        .await;
    browser.screenshot("tasks").await;
    // Search by a word of the task id.
    browser
        .click(
            "the search box",
            "return document.querySelector('#search')",
            json!([]),
        )
        .await;
    let word = task.rsplit('-').next().unwrap();
    let search = browser
        .js("return document.querySelector('#search')", json!([]))
        .await;
    let search = search[ELEMENT].as_str().unwrap().to_string();
    browser
        .command(
            "POST",
            &format!("/element/{search}/value"),
            Some(json!({ "text": format!("{word}\u{E007}") })),
        )
        .await
        .unwrap();
    browser
        .wait(
            "the search results",
            Duration::from_secs(20),
            "return location.hash.includes('q=') && [...document.querySelectorAll('main a')].some(a => a.textContent === arguments[0])",
            json!([task]),
        )
        .await;
    let listed = browser.text("main table").await;
    assert!(!listed.contains("console-other-a"), "{listed}");
    browser.screenshot("search").await;
    browser.click_link(&task).await;
    browser.click_link(&job).await;
    // The job: its fields, secrets redacted, its executions.
    browser
        .wait(
            "the job page",
            Duration::from_secs(20),
            "return [...document.querySelectorAll('main a')].some(a => a.textContent === arguments[0])",
            json!([execution]),
        )
        .await;
    browser
        .click(
            "the metadata",
            "return document.querySelector('main details summary')",
            json!([]),
        )
        .await;
    let metadata = browser
        .wait(
            "the metadata shown",
            Duration::from_secs(10),
            "const d = document.querySelector('main details'); return d.open && d.querySelector('pre').offsetHeight > 0 && d.textContent",
            json!([]),
        )
        .await;
    assert!(
        metadata
            .as_str()
            .unwrap()
            .contains(r#""API_PASSWORD": "***""#),
        "{metadata}"
    );
    let shown = browser.text("main").await;
    assert!(
        !shown.contains("hunter2-secret"),
        "a secret is shown: {shown}"
    );
    browser.screenshot("job").await;
    browser.click_link(&execution).await;
    // The output arrives line by line.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 {
        let output = browser.text("#output").await;
        let lines = output
            .lines()
            .filter(|line| line.starts_with("line-"))
            .count();
        if lines > 0 && seen.last() != Some(&lines) {
            seen.push(lines);
        }
        assert!(
            Instant::now() < deadline,
            "output did not grow: {seen:?} {output:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    assert!(
        seen[0] < 60,
        "the output did not arrive as it was written: {seen:?}"
    );
    let output = browser.text("#output").await;
    assert!(output.starts_with("line-1\nline-2\n"), "{output:?}");
    assert_eq!(browser.text("#exec-status").await, "running");
    let host = browser.text("main dl").await;
    assert!(host.contains("Container"), "{host}");
    browser.screenshot("execution-running").await;
    // Stop it: the status changes, the live output ends.
    browser.click_confirmed("main", "Stop execution").await;
    browser
        .wait(
            "the stopped status",
            Duration::from_secs(30),
            "const s = document.querySelector('#exec-status'); return s && s.textContent === 'stopped'",
            json!([]),
        )
        .await;
    browser
        .wait(
            "the end of the live output",
            Duration::from_secs(30),
            "return document.querySelector('#follow').getAttribute('data-state') === 'done'",
            json!([]),
        )
        .await;
    let finished = node
        .get_json(&format!("/tasks/{task}/jobs/{job}/executions/{execution}/"))
        .await;
    assert_eq!(finished["execution"]["status"], "stopped");
    browser.screenshot("execution-stopped").await;
    // The job's history, filtered by status.
    browser.click_link(&job).await;
    browser
        .click(
            "the 'stopped' filter",
            "return document.querySelector('#status-filter option[value=stopped]')",
            json!([]),
        )
        .await;
    let rows = browser
        .wait(
            "the filtered history",
            Duration::from_secs(20),
            "if (!location.hash.includes('status=stopped')) return null; \
             const rows = [...document.querySelectorAll('main tbody tr')].filter(r => r.querySelector('.status')); \
             return rows.length ? rows.map(r => r.querySelector('.status').textContent) : null",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(["stopped"]));

    // The farm: blacklist a host, see the page change, put it back.
    let target = docker_hosts()[1].clone();
    browser.goto(&node.url("/ui/#/farm")).await;
    let blacklisted_cell =
        "const b = document.querySelector(`button[data-key=\"host:${arguments[0]}\"]`); \
                            return b && b.textContent === arguments[1]";
    browser
        .wait(
            "the farm page",
            Duration::from_secs(20),
            blacklisted_cell,
            json!([target, "Blacklist"]),
        )
        .await;
    browser.screenshot("farm").await;
    browser
        .click(
            "the blacklist button",
            "return document.querySelector(`button[data-key=\"host:${arguments[0]}\"]`)",
            json!([target]),
        )
        .await;
    accept_alert(&browser).await;
    browser
        .wait(
            "the host blacklisted on the page",
            Duration::from_secs(20),
            blacklisted_cell,
            json!([target, "Un-blacklist"]),
        )
        .await;
    let status = node.get_json("/status/").await;
    let host = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|host| format!("{}:{}", host["host"].as_str().unwrap(), host["port"]) == target)
        .cloned()
        .unwrap();
    assert_eq!(host["blacklisted"], true, "{host}");
    browser.screenshot("farm-blacklisted").await;
    browser
        .click(
            "the un-blacklist button",
            "return document.querySelector(`button[data-key=\"host:${arguments[0]}\"]`)",
            json!([target]),
        )
        .await;
    accept_alert(&browser).await;
    browser
        .wait(
            "the host back in service",
            Duration::from_secs(20),
            blacklisted_cell,
            json!([target, "Blacklist"]),
        )
        .await;
    // The page follows changes made elsewhere: a host blacklisted through the API shows up.
    node.set_blacklisted(&target, true).await;
    browser
        .wait(
            "the farm page refreshed",
            Duration::from_secs(20),
            blacklisted_cell,
            json!([target, "Un-blacklist"]),
        )
        .await;
    node.set_blacklisted(&target, false).await;
    // Keyboard: the first Tab reaches the skip link, which moves the focus to the content.
    browser.goto(&node.url("/ui/?keyboard#/tasks")).await;
    browser
        .wait(
            "the tasks page",
            Duration::from_secs(20),
            "return document.querySelector('#search')",
            json!([]),
        )
        .await;
    let tab = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
        {"type": "keyDown", "value": "\u{E004}"}, {"type": "keyUp", "value": "\u{E004}"}]}]});
    browser
        .command("POST", "/actions", Some(tab))
        .await
        .unwrap();
    let focused = browser
        .js("return document.activeElement.textContent", json!([]))
        .await;
    assert_eq!(focused, "Skip to content");
    let enter = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
        {"type": "keyDown", "value": "\u{E007}"}, {"type": "keyUp", "value": "\u{E007}"}]}]});
    browser
        .command("POST", "/actions", Some(enter))
        .await
        .unwrap();
    let focused = browser
        .js("return document.activeElement.id", json!([]))
        .await;
    assert_eq!(focused, "main");
    assert!(browser.js("return location.hash", json!([])).await == "#/tasks");
    // No error was shown on the way.
    assert_eq!(browser.text("#notice").await, "");
    drop(browser);
    finish(node, &[&task, "console-other-a", "console-other-b"]);
}

async fn accept_alert(browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .command("POST", "/alert/accept", None)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no confirmation asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the node (so it starts nothing more), then removes the containers of `tasks`.
fn finish(mut node: Node, tasks: &[&str]) {
    node.terminate();
    for host in docker_hosts() {
        for task in tasks {
            let ids = docker(
                &host,
                &[
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=fastlane.task_id={task}"),
                ],
            );
            for id in ids.split_whitespace() {
                docker(&host, &["rm", "-f", id]);
            }
        }
    }
}

/// Task ids, metadata and outputs that are HTML or script are shown as text; nothing runs.
#[tokio::test]
async fn hostile_strings_are_shown_as_text() {
    let node = Node::start(&[]).await;
    let payload = "<img src=x onerror=\"window.pwned=1;document.title='pwned'\"><script>window.pwned=2</script>";
    // A task id cannot hold a slash; the output and the metadata hold the whole payload.
    let task = "evil<img src=x onerror=\"window.pwned=3;document.title='pwned'\"><svg onload=\"window.pwned=4\">";
    let enqueued = node
        .post_job(
            task,
            json!({
                "image": image(),
                "command": format!("sh -c 'echo \"{}\" >&2; echo \"{}\"'", payload.replace(['\'', '"'], ""), payload.replace(['\'', '"'], "")),
                "metadata": {"note": payload},
            }),
        )
        .await;
    let job = enqueued["jobId"].as_str().unwrap().to_string();
    let execution_url = enqueued["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    let browser = Browser::start().await;
    browser.goto(&node.url("/ui/#/tasks")).await;
    browser
        .wait(
            "the hostile task listed",
            Duration::from_secs(20),
            "return [...document.querySelectorAll('main a')].some(a => a.textContent === arguments[0])",
            json!([task]),
        )
        .await;
    let title = browser.js("return document.title", json!([])).await;
    browser.click_link(task).await;
    browser.click_link(&job).await;
    browser
        .wait(
            "the job's metadata",
            Duration::from_secs(20),
            "return document.querySelector('main pre') && document.querySelector('main pre').textContent.includes('onerror')",
            json!([]),
        )
        .await;
    let execution = common::path_of(&execution_url)
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    browser.click_link(&execution).await;
    browser
        .wait(
            "the hostile output",
            Duration::from_secs(20),
            "return document.querySelector('#output') && document.querySelector('#output').textContent.includes('<img src=x')",
            json!([]),
        )
        .await;
    browser.screenshot("hostile").await;
    // The whole stored output, on demand, as text too.
    browser
        .js(
            "document.querySelector('#output').textContent = ''",
            json!([]),
        )
        .await;
    browser
        .click(
            "the full output button",
            "return document.querySelector('#full-output')",
            json!([]),
        )
        .await;
    let full = browser
        .wait(
            "the full output",
            Duration::from_secs(20),
            "return document.querySelector('#output').textContent",
            json!([]),
        )
        .await;
    let full = full.as_str().unwrap();
    assert!(full.contains("<script>window.pwned=2</script>\n"), "{full}");
    assert!(full.contains("\n-=-\n<img src=x"), "{full}");
    let checks = browser
        .js(
            "return {pwned: window.pwned === undefined ? null : window.pwned, title: document.title, \
             images: document.querySelectorAll('img').length, scripts: document.querySelectorAll('main script').length, \
             heading: document.querySelector('.crumbs').textContent}",
            json!([]),
        )
        .await;
    assert_eq!(checks["pwned"], Value::Null, "a payload ran: {checks}");
    assert_eq!(checks["title"], title, "{checks}");
    assert_eq!(checks["title"], "Fastlane console");
    assert_eq!(checks["images"], 0, "{checks}");
    assert_eq!(checks["scripts"], 0, "{checks}");
    assert!(
        checks["heading"].as_str().unwrap().contains(task),
        "{checks}"
    );
    drop(browser);
    finish(node, &[task]);
}

/// With API tokens the page is served without one, asks for one, sends the pasted token, and
/// the token's scopes hold: a read-only token cannot stop a job (the page says so).
#[tokio::test]
async fn tokens_pasted_in_the_console_keep_their_scopes() {
    let tokens = json!([
        {"name": "reader", "sha256": sha256_hex("read-token"), "scopes": ["read"]},
    ]);
    let node = Node::start(&[
        ("API_TOKENS", &tokens.to_string()),
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let task = unique("console-token");
    let enqueued: Value = reqwest::Client::new()
        .post(node.url(&format!("/tasks/{task}/")))
        .basic_auth("harness", Some("harness"))
        .json(&json!({"image": image(), "command": "sleep 30"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = enqueued["jobId"].as_str().unwrap().to_string();
    let browser = Browser::start().await;
    browser.goto(&node.url("/ui/#/login")).await;
    browser
        .click(
            "the token field",
            "return document.querySelector('#token')",
            json!([]),
        )
        .await;
    let field = browser
        .js("return document.querySelector('#token')", json!([]))
        .await;
    let field = field[ELEMENT].as_str().unwrap().to_string();
    browser
        .command(
            "POST",
            &format!("/element/{field}/value"),
            Some(json!({"text": "read-token\u{E007}"})),
        )
        .await
        .unwrap();
    browser
        .wait(
            "the token saved",
            Duration::from_secs(10),
            "return document.querySelector('#token-state').textContent.includes('saved')",
            json!([]),
        )
        .await;
    browser
        .goto(&node.url(&format!("/ui/#/job/{task}/{job}")))
        .await;
    browser
        .wait(
            "the job page with the token",
            Duration::from_secs(20),
            "return document.querySelector('#status-filter')",
            json!([]),
        )
        .await;
    browser.click_confirmed("main", "Stop job").await;
    let refused = browser
        .wait(
            "the refusal",
            Duration::from_secs(20),
            "return document.querySelector('#notice').textContent",
            json!([]),
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("'submit' scope"),
        "{refused}"
    );
    // The job was not stopped.
    let details: Value = reqwest::Client::new()
        .get(node.url(&format!("/tasks/{task}/jobs/{job}/")))
        .bearer_auth("read-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = details["job"]["executions"][0]["status"].as_str().unwrap();
    assert_ne!(status, "stopped");
    drop(browser);
    finish(node, &[&task]);
}

/// On a phone-sized screen the pages fit the width: no sideways scrolling.
#[tokio::test]
async fn pages_fit_a_phone() {
    let node = farm_node(&[]).await;
    let task = unique("console-phone-with-a-rather-long-task-identifier");
    let enqueued = node
        .post_job(
            &task,
            json!({"image": image(), "command": "echo small screen"}),
        )
        .await;
    node.wait_finished(enqueued["executionUrl"].as_str().unwrap())
        .await;
    let job = enqueued["jobId"].as_str().unwrap();
    let cron = node
        .post_job(
            &task,
            json!({"image": image(), "command": "true", "cron": "0 3 * * *"}),
        )
        .await;
    let cron_job = cron["jobId"].as_str().unwrap();
    let browser = Browser::phone().await;
    // A cron job: its next firing in the browser's time zone (Tokyo), UTC on hover.
    browser
        .goto(&node.url(&format!("/ui/#/job/{task}/{cron_job}")))
        .await;
    let next = browser
        .wait(
            "the next firing",
            Duration::from_secs(20),
            "const dt = [...document.querySelectorAll('dt')].find(d => d.textContent === 'Next firing'); \
             const t = dt && dt.nextElementSibling.querySelector('time'); \
             return t ? [t.textContent, t.getAttribute('title')] : null",
            json!([]),
        )
        .await;
    assert!(next[0].as_str().unwrap().contains("12:00:00"), "{next}");
    assert!(
        next[1].as_str().unwrap().ends_with("03:00:00 UTC"),
        "{next}"
    );
    browser.screenshot("phone-schedule").await;
    // Pause and resume the schedule, each behind a confirmation; the node agrees.
    browser.click_confirmed("main", "Pause schedule").await;
    browser
        .wait(
            "the job shown paused",
            Duration::from_secs(20),
            "const dt = [...document.querySelectorAll('dt')].find(d => d.textContent === 'Paused'); \
             return dt && dt.nextElementSibling.textContent.startsWith('yes, since') \
                 && [...document.querySelectorAll('main button')].some(b => b.textContent === 'Resume schedule')",
            json!([]),
        )
        .await;
    let paused = node
        .get_json(&format!("/tasks/{task}/jobs/{cron_job}/"))
        .await;
    assert_eq!(paused["job"]["schedule"]["paused"], true, "{paused}");
    browser.click_confirmed("main", "Resume schedule").await;
    browser
        .wait(
            "the job shown running its schedule again",
            Duration::from_secs(20),
            "return [...document.querySelectorAll('main button')].some(b => b.textContent === 'Pause schedule')",
            json!([]),
        )
        .await;
    let resumed = node
        .get_json(&format!("/tasks/{task}/jobs/{cron_job}/"))
        .await;
    assert_eq!(resumed["job"]["schedule"]["paused"], false, "{resumed}");
    for (page, hash, ready) in [
        ("phone-tasks", "#/tasks".to_string(), "main table"),
        ("phone-job", format!("#/job/{task}/{job}"), "#status-filter"),
        ("phone-farm", "#/farm".to_string(), "main button"),
    ] {
        browser.goto(&node.url(&format!("/ui/{hash}"))).await;
        browser
            .wait(
                page,
                Duration::from_secs(20),
                "return document.querySelector(arguments[0])",
                json!([ready]),
            )
            .await;
        let widths = browser
            .js(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                json!([]),
            )
            .await;
        assert_eq!(widths[1], 390, "not a phone's width");
        assert!(
            widths[0].as_u64().unwrap() <= widths[1].as_u64().unwrap(),
            "{page} scrolls sideways: {widths}"
        );
        browser.screenshot(page).await;
    }
    // Executions across tasks, by status: listed when the node serves `/executions/`, else
    // the page says it cannot (it must not fail).
    browser
        .goto(&node.url("/ui/#/executions?status=done"))
        .await;
    let listed = browser
        .wait(
            "the executions page",
            Duration::from_secs(20),
            "if (document.querySelector('#no-listing')) return 'none'; \
             const rows = [...document.querySelectorAll('main tbody .status')]; \
             return rows.length ? rows.map(r => r.textContent) : null",
            json!([]),
        )
        .await;
    if listed != "none" {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|status| status == "done"),
            "{listed}"
        );
    }
    assert_eq!(browser.text("#notice").await, "");
    // Retry the finished job from its page: the history gains an execution.
    browser
        .goto(&node.url(&format!("/ui/#/job/{task}/{job}")))
        .await;
    browser.click_confirmed("main", "Retry job").await;
    browser
        .wait(
            "the retried execution in the history",
            Duration::from_secs(30),
            "return document.querySelectorAll('main tbody tr').length === 2",
            json!([]),
        )
        .await;
    node.wait_executions(
        enqueued["jobUrl"].as_str().unwrap(),
        2,
        Duration::from_secs(60),
    )
    .await;
    // The farm lists the scheduled job.
    browser.goto(&node.url("/ui/#/farm")).await;
    browser
        .wait(
            "the scheduled job on the farm page",
            Duration::from_secs(20),
            "return [...document.querySelectorAll('main a')].some(a => a.textContent === arguments[0])",
            json!([cron_job]),
        )
        .await;
    // Delete the cron job from its page: the task page no longer lists it.
    browser
        .goto(&node.url(&format!("/ui/#/job/{task}/{cron_job}")))
        .await;
    browser.click_confirmed("main", "Delete job").await;
    browser
        .wait(
            "the task page without the deleted job",
            Duration::from_secs(20),
            "return location.hash.startsWith('#/task/') && document.querySelector('main h2') && \
             document.querySelector('main h2').textContent === '1 job(s)' && \
             ![...document.querySelectorAll('main a')].some(a => a.textContent === arguments[0])",
            json!([cron_job]),
        )
        .await;
    let gone = node
        .get(&format!("/tasks/{task}/jobs/{cron_job}/"))
        .await
        .status();
    assert_eq!(gone, 404);
    // Keyboard: the first Tab reaches the skip link, labelled controls have names.
    let unlabelled = browser
        .js(
            "return [...document.querySelectorAll('input, select')].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).length",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, 0);
    drop(browser);
    finish(node, &[&task]);
}

/// With basic auth the browser's login serves the page's calls and its live WebSocket (the
/// same login the stream page uses); nothing is sent without it.
#[tokio::test]
async fn the_browsers_basic_auth_login_follows_the_live_output() {
    let node = Node::start(&[
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let task = unique("console-login");
    let enqueued: Value = reqwest::Client::new()
        .post(node.url(&format!("/tasks/{task}/")))
        .basic_auth("harness", Some("harness"))
        .json(&json!({"image": image(), "command": "sh -c 'for i in $(seq 1 60); do echo tick-$i; sleep 0.3; done'"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = enqueued["jobId"].as_str().unwrap();
    let execution = enqueued["executionId"].as_str().unwrap();
    let browser = Browser::start().await;
    // The login as the browser sends it once the operator typed it in its prompt (WebDriver
    // cannot type into that prompt: the DevTools protocol adds the same header).
    for (cmd, params) in [
        ("Network.enable", json!({})),
        (
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"Authorization": "Basic aGFybmVzczpoYXJuZXNz"}}),
        ),
    ] {
        browser
            .command(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": cmd, "params": params})),
            )
            .await
            .unwrap_or_else(|error| panic!("{cmd}: {error}"));
    }
    browser
        .goto(&node.url(&format!("/ui/#/execution/{task}/{job}/{execution}")))
        .await;
    browser
        .wait(
            "live output through the login",
            Duration::from_secs(60),
            "const o = document.querySelector('#output'); return o && o.textContent.includes('tick-3') && \
             document.querySelector('#follow').getAttribute('data-state') === 'live'",
            json!([]),
        )
        .await;
    assert_eq!(browser.text("#notice").await, "");
    drop(browser);
    finish(node, &[&task]);
}
