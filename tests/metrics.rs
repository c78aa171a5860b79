//! End-to-end: `GET /metrics` on a node running real jobs on a real Docker engine serves the
//! Prometheus text format with the families, labels and values those jobs make: executions by
//! task and status, run time and queue wait, scheduling lag and misses, farm and host state,
//! queue depth, HTTP requests by route pattern; the task label is bounded by
//! `METRICS_MAX_TASKS`.

mod common;

use common::{image, wait_until, Node};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the `# TYPE` of each family and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the Prometheus text format (0.0.4), failing on anything malformed: every sample
    /// must belong to a family declared with `# TYPE` before it.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                exposition.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let sample = parse_sample(line);
            let family = exposition
                .types
                .keys()
                .find(|family| {
                    sample.name == **family
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| sample.name == format!("{family}{suffix}"))
                })
                .unwrap_or_else(|| panic!("sample of no declared family: {line}"));
            assert!(!family.is_empty());
            exposition.samples.push(sample);
        }
        exposition
    }

    /// The samples called `name` whose labels include `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(value)
                    })
            })
            .collect()
    }

    /// The value of the one sample called `name` with `labels`, 0 when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert!(
            found.len() <= 1,
            "several samples {name} {labels:?}: {found:?}"
        );
        found.first().map_or(0.0, |sample| sample.value)
    }
}

/// `name{key="value",…} value`, with `\\`, `\"` and `\n` escapes in values.
fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(brace) => (&line[..brace], &line[brace + 1..]),
        None => {
            let (name, value) = line.split_once(' ').expect("sample value");
            return Sample {
                name: name.to_string(),
                labels: BTreeMap::new(),
                value: value.parse().expect("sample value"),
            };
        }
    };
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "metric name {name}"
    );
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} in {line}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("after a label: {other:?} in {line}"),
        }
    }
    let value: String = chars.collect();
    Sample {
        name: name.to_string(),
        labels,
        value: value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("value of {line}")),
    }
}

async fn scrape(node: &Node) -> Exposition {
    let response = node.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Exposition::parse(&response.text().await.unwrap())
}

/// Scraped while a job runs, the farm, host and queue gauges show it; after a done, a failed
/// and a scheduled job, the counters and histograms show all three, by task and status; HTTP
/// requests are counted by route pattern, never by raw path; a cron job whose firings overlap a
/// running one counts them as missed.
#[tokio::test]
async fn metrics_follow_real_jobs() {
    let node = Node::start(&[]).await;
    let host = common::docker_hosts()[0].clone();

    // During: one running job.
    let slow = node
        .post_job(
            "metrics-slow",
            json!({"image": image(), "command": "sleep 4"}),
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let during = loop {
        let exposition = scrape(&node).await;
        if exposition.value("fastlane_farm_running", &[("farm", "0")]) >= 1.0 {
            break exposition;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the running job never showed in /metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        during.value("fastlane_farm_max_running", &[("farm", "0"), ("match", "")]),
        8.0
    );
    assert_eq!(during.value("fastlane_host_up", &[("host", &host)]), 1.0);
    assert_eq!(
        during.value("fastlane_host_circuit_open", &[("host", &host)]),
        0.0
    );
    assert!(during.value("fastlane_queue_messages", &[("state", "leased")]) >= 1.0);
    for state in ["ready", "delayed", "leased", "dead"] {
        assert_eq!(
            during
                .find("fastlane_queue_messages", &[("state", state)])
                .len(),
            1
        );
    }
    assert_eq!(during.types["fastlane_queue_messages"], "gauge");

    // A done job, a failed one, a scheduled one.
    let done = node
        .post_job(
            "metrics-done",
            // A hook to loopback is refused (not retried): one abandoned notification.
            json!({"image": image(), "command": "echo ok",
                   "webhooks": {"finishes": [{"url": "http://127.0.0.1:9/hook"}]}}),
        )
        .await;
    let failed = node
        .post_job(
            "metrics-failed",
            json!({"image": image(), "command": "bash -c 'exit 3'"}),
        )
        .await;
    let scheduled = node
        .post_job(
            "metrics-scheduled",
            json!({"image": image(), "command": "echo later", "startIn": "1s"}),
        )
        .await;
    node.wait_finished(slow["executionUrl"].as_str().unwrap())
        .await;
    node.wait_finished(done["executionUrl"].as_str().unwrap())
        .await;
    node.wait_finished(failed["executionUrl"].as_str().unwrap())
        .await;
    node.wait_executions(
        scheduled["jobUrl"].as_str().unwrap(),
        1,
        Duration::from_secs(60),
    )
    .await;
    // A 404 on a made-up job: counted under its pattern.
    let missing = node
        .get("/tasks/metrics-done/jobs/6f1c2a52-1d0e-4b8e-9a57-0a2b6c1f3e10/")
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(node.get("/no/such/route/here").await.status(), 404);

    let notified = [("kind", "webhook"), ("outcome", "abandoned")];
    wait_until(
        Duration::from_secs(30),
        "the refused webhook in /metrics",
        || async {
            scrape(&node)
                .await
                .value("fastlane_notifications_total", &notified)
                >= 1.0
        },
    )
    .await;
    let after = scrape(&node).await;
    let executions = "fastlane_executions_total";
    assert_eq!(after.types[executions], "counter");
    assert_eq!(
        after.value(executions, &[("task", "metrics-done"), ("status", "done")]),
        1.0
    );
    assert_eq!(
        after.value(executions, &[("task", "metrics-slow"), ("status", "done")]),
        1.0
    );
    assert_eq!(
        after.value(
            executions,
            &[("task", "metrics-failed"), ("status", "failed")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            executions,
            &[("task", "metrics-scheduled"), ("status", "done")]
        ),
        1.0
    );
    assert_eq!(
        after.types["fastlane_execution_duration_seconds"],
        "histogram"
    );
    let slow_runs = [("task", "metrics-slow")];
    assert_eq!(
        after.value("fastlane_execution_duration_seconds_count", &slow_runs),
        1.0
    );
    let slow_seconds = after.value("fastlane_execution_duration_seconds_sum", &slow_runs);
    assert!(
        (3.0..60.0).contains(&slow_seconds),
        "sleep 4 ran {slow_seconds} s"
    );
    assert_eq!(
        after.value(
            "fastlane_execution_duration_seconds_bucket",
            &[("task", "metrics-slow"), ("le", "+Inf")]
        ),
        1.0
    );
    assert!(after.value("fastlane_queue_wait_seconds_count", &[]) >= 4.0);
    assert!(after.value("fastlane_schedule_lag_seconds_count", &[]) >= 1.0);
    let lag = after.value("fastlane_schedule_lag_seconds_sum", &[]);
    assert!((0.0..30.0).contains(&lag), "lag {lag}");
    assert_eq!(after.types["fastlane_schedule_missed_total"], "counter");
    assert_eq!(after.value("fastlane_farm_running", &[("farm", "0")]), 0.0);

    let requests = "fastlane_http_requests_total";
    assert!(after.value(requests, &[("route", "/tasks/:task"), ("status", "200")]) >= 4.0);
    assert!(after.value(requests, &[("route", "/metrics"), ("status", "200")]) >= 1.0);
    assert_eq!(
        after.value(
            requests,
            &[("route", "/tasks/:task/jobs/:job"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        after.value(requests, &[("route", "unmatched"), ("status", "404")]),
        1.0
    );
    assert!(
        after.value(
            "fastlane_http_request_duration_seconds_count",
            &[("route", "/tasks/:task")]
        ) >= 4.0
    );
    for sample in after.find(requests, &[]) {
        let route = &sample.labels["route"];
        assert!(
            route == "unmatched" || route.starts_with('/') && !route.contains("metrics-"),
            "a raw path as a route label: {route}"
        );
    }

    check_dashboard(&after);

    // A cron job firing every second while its last execution still runs: skipped firings
    // count as missed.
    let cron = node
        .post_job(
            "metrics-cron",
            json!({"image": image(), "command": "sleep 3", "cron": "* * * * * *"}),
        )
        .await;
    wait_until(Duration::from_secs(30), "a missed firing", || async {
        scrape(&node)
            .await
            .value("fastlane_schedule_missed_total", &[])
            >= 1.0
    })
    .await;
    let job_path = common::path_of(cron["jobUrl"].as_str().unwrap());
    let (status, _) = node.post_empty(&format!("{job_path}stop/")).await;
    assert_eq!(status, 200);
    wait_until(
        Duration::from_secs(30),
        "the cron job's container to end",
        || async { common::running_containers(&host, "metrics-cron") == 0 },
    )
    .await;
}

/// With `METRICS_MAX_TASKS=2`, the third task's executions are counted under `task="_other"`.
#[tokio::test]
async fn task_labels_beyond_the_limit_are_other() {
    let node = Node::start(&[("METRICS_MAX_TASKS", "2")]).await;
    for task in ["limit-a", "limit-b", "limit-c", "limit-d"] {
        let posted = node
            .post_job(task, json!({"image": image(), "command": "true"}))
            .await;
        node.wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
    }
    let exposition = scrape(&node).await;
    let executions = "fastlane_executions_total";
    assert_eq!(
        exposition.value(executions, &[("task", "limit-a"), ("status", "done")]),
        1.0
    );
    assert_eq!(
        exposition.value(executions, &[("task", "limit-b"), ("status", "done")]),
        1.0
    );
    assert_eq!(
        exposition.value(executions, &[("task", "_other"), ("status", "done")]),
        2.0
    );
    assert!(exposition
        .find(executions, &[("task", "limit-c")])
        .is_empty());
    let tasks: std::collections::BTreeSet<&str> = exposition
        .find("fastlane_execution_duration_seconds_count", &[])
        .iter()
        .map(|sample| sample.labels["task"].as_str())
        .collect();
    assert_eq!(tasks, ["_other", "limit-a", "limit-b"].into());
}

/// `/metrics` needs the `read` scope like `/status/`.
#[tokio::test]
async fn metrics_need_the_read_scope() {
    let sha256_hex = |token: &str| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    let submit_only = "submit-only-token";
    let reader = "reader-token";
    let tokens = json!([
        {"name": "submitter", "sha256": sha256_hex(submit_only), "scopes": ["submit"]},
        {"name": "reader", "sha256": sha256_hex(reader), "scopes": ["read"]},
    ])
    .to_string();
    let node = Node::start(&[
        ("API_TOKENS", &tokens),
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let client = reqwest::Client::new();
    let status = |token: Option<&'static str>| {
        let mut request = client.get(node.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some(submit_only)).await, 403);
    assert_eq!(status(Some(reader)).await, 200);
}

/// `examples/grafana-dashboard.json` is a Grafana dashboard importable as it is (its Prometheus
/// data source an input, `${DS_PROMETHEUS}`) whose queries use only families `/metrics` serves.
fn check_dashboard(exposition: &Exposition) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{target}");
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs.push(
        dashboard["templating"]["list"][0]["definition"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let served = |name: &str| {
        exposition.types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|family| {
                    exposition
                        .types
                        .get(family)
                        .is_some_and(|kind| kind == "histogram")
                })
            })
    };
    let mut referenced = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("fastlane_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            referenced.insert(name);
        }
    }
    assert!(referenced.len() >= 12, "{referenced:?}");
    for name in &referenced {
        assert!(
            served(name),
            "the dashboard uses {name}, which /metrics does not serve"
        );
    }
}
