//! Fuzzing the HTTP API (issue 13, point 6): one real node gets at least 10,000 generated and
//! mutated requests — random bytes, deep JSON nesting (past serde's limit of 128), huge and
//! negative numbers, invalid UTF-8 and percent-escapes in paths and bodies, odd methods and
//! paths, duplicate keys and wrong types in every field of the enqueue payload — and must answer
//! none of them with a 5xx, log no panic, stay healthy and still run a normal job afterwards.
//!
//! The seed and the case count are printed; `FASTLANE_FUZZ_SEED` and `FASTLANE_FUZZ_CASES`
//! replay or widen a run. Requests are generated up front from the seed (so a run is the same
//! whatever the timing), then sent 32 at a time: most over one keep-alive client, the ones no
//! HTTP client would send (bytes that are not a request, non-UTF-8 request lines) over raw TCP.
//!
//! Valid jobs would run containers: the payloads are built on templates scheduled far in the
//! future (`startIn: 240h`, or a cron firing on 1 January), with the test image and `true` as
//! command, so a mutant that happens to be valid is stored but does not run.

mod common;

use common::{image, Node};
use futures_util::stream::{self, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One generated request.
#[derive(Clone, Debug)]
enum Case {
    /// Sent with the HTTP client: a method, a path (with query), a content type and a body.
    Http {
        method: String,
        path: String,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// Written as is to a fresh TCP connection.
    Raw(Vec<u8>),
}

/// Every field of the enqueue payload, with the template value that makes it valid.
const FIELDS: &[&str] = &[
    "image",
    "command",
    "envs",
    "metadata",
    "retries",
    "timeout",
    "expiration",
    "startAt",
    "startIn",
    "cron",
    "timezone",
    "webhooks",
    "notify",
    "additionalDNSEntries",
    "misfire",
    "overlap",
    "backoff",
    "maxConcurrent",
];

/// A valid payload that does not run now: `(key, JSON text)` pairs, in order.
fn template(cron: bool) -> Vec<(String, String)> {
    let mut fields = vec![
        ("image".to_string(), json!(image()).to_string()),
        ("command".to_string(), "\"true\"".to_string()),
        ("envs".to_string(), r#"{"A": "1"}"#.to_string()),
        ("metadata".to_string(), r#"{"owner": "fuzz"}"#.to_string()),
        ("retries".to_string(), "0".to_string()),
        ("timeout".to_string(), "10".to_string()),
        (
            "backoff".to_string(),
            r#"{"minMs": 100, "factor": 2}"#.to_string(),
        ),
    ];
    if cron {
        fields.push(("cron".into(), "\"0 0 1 1 *\"".into()));
        fields.push(("timezone".into(), "\"UTC\"".into()));
        fields.push(("misfire".into(), "\"skip\"".into()));
        fields.push(("overlap".into(), "\"forbid\"".into()));
    } else {
        fields.push(("startIn".into(), "\"240h\"".into()));
    }
    fields
}

/// JSON text (or nearly JSON text) of any type: what a field gets instead of its valid value.
fn value_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|value| value.to_string()),
        any::<i64>().prop_map(|value| value.to_string()),
        any::<u64>().prop_map(|value| value.to_string()),
        any::<f64>().prop_map(|value| value.to_string()),
        (1usize..400).prop_map(|digits| "9".repeat(digits)),
        (1usize..400).prop_map(|digits| format!("-{}", "9".repeat(digits))),
        prop::sample::select(vec![
            "1e400",
            "-1e400",
            "-0",
            "1e-400",
            "0.5",
            "-1",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "18446744073709551616",
            "-9223372036854775809",
            "4294967296",
            "65536",
            "1e11",
            "\"\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\u00\"",
            "\"a\u{0}b\"",
            "\"2h30m50s\"",
            "\"0h\"",
            "\"99999999999h\"",
            "\"-1s\"",
            "\"* * * * *\"",
            "\"Nowhere/City\"",
            "\"all\"",
            "\"replace\"",
            "\"x:y\"",
            "\"1.2.3.4\"",
            "\"http://127.0.0.1:9/\"",
            "\"me@example.com\"",
            "99999999999",
            "9.9e10",
            "1e10",
            "4294967295",
            "9223372036854775807",
            "\"999999999h\"",
            "\"1s\"",
            "\"59 23 31 12 *\"",
            "\"0 0 29 2 *\"",
            "{\"minMs\": 18446744073709551615, \"factor\": 1e308, \"maxMs\": 0}",
            "{\"fails\": [{\"url\": \"http://127.0.0.1:9/?a=b\", \"retries\": 99999}]}",
            "{\"db\": \"::1\"}",
            "[[\"db\", \"1.2.3.4\"]]",
            "[]",
            "{}",
            "[[]]",
            "{\"\":{}}",
        ])
        .prop_map(String::from),
        // Regex strategies are slow to sample: plain collections of chars instead.
        prop::collection::vec(any::<char>(), 0..40)
            .prop_map(|chars| json!(chars.into_iter().collect::<String>()).to_string()),
        (0usize..3000, any::<char>()).prop_map(|(length, fill)| {
            json!(std::iter::repeat_n(fill, length).collect::<String>()).to_string()
        }),
    ];
    let nested = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((any::<char>(), inner), 0..6).prop_map(|pairs| {
                let fields: Vec<String> = pairs
                    .into_iter()
                    .map(|(key, value)| format!("{}: {value}", json!(key)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    prop_oneof![
        8 => nested,
        1 => deep_nesting(),
    ]
}

/// Arrays or objects nested up to well past serde_json's recursion limit (128).
fn deep_nesting() -> impl Strategy<Value = String> {
    (1usize..3000, any::<bool>(), any::<bool>()).prop_map(|(depth, arrays, closed)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let mut text = open.repeat(depth);
        text.push('1');
        if closed {
            text.push_str(&close.repeat(depth));
        }
        text
    })
}

/// An enqueue payload: a template with some fields replaced by values of any type, some
/// removed, some repeated (duplicate keys), then perhaps mangled byte by byte.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec((prop::sample::select(FIELDS), value_text(), 0u8..10), 1..4),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    )
        .prop_map(|(cron, changes, byte_flips, truncate_at)| {
            let mut fields = template(cron);
            for (field, value, how) in changes {
                match how {
                    // Removed.
                    0 => fields.retain(|(key, _)| key != field),
                    // Repeated: the same key twice, with a valid and an odd value.
                    1 => fields.push((field.to_string(), value)),
                    _ => {
                        fields.retain(|(key, _)| key != field);
                        fields.push((field.to_string(), value));
                    }
                }
            }
            let body: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("{}: {value}", json!(key)))
                .collect();
            let mut bytes = format!("{{{}}}", body.join(", ")).into_bytes();
            for (index, byte) in byte_flips {
                if !bytes.is_empty() {
                    let at = index.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            if let Some(index) = truncate_at {
                bytes.truncate(index.index(bytes.len() + 1));
            }
            bytes
        })
}

/// A body: mostly payloads, sometimes JSON of the wrong shape, random bytes or invalid UTF-8.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => payload(),
        3 => value_text().prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => Just(vec![0xff, 0xfe, b'{', b'}']),
        1 => Just(b"{\"image\": \"\xc0\xaf\", \"command\": \"\xed\xa0\x80\"}".to_vec()),
        1 => Just(Vec::new()),
    ]
}

/// A path segment: a name, an id, or something no router expects.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("fuzz".to_string()),
        Just(uuid::Uuid::nil().to_string()),
        Just("00000000-0000-0000-0000-00000000000g".to_string()),
        prop::collection::vec(prop::sample::select(b"abcXYZ019_.-".to_vec()), 1..20)
            .prop_map(|bytes| String::from_utf8(bytes).expect("ASCII")),
        prop::sample::select(vec![
            "%ZZ",
            "%FF%FE",
            "%C0%AF",
            "%00",
            "%",
            "%2F",
            "%2e%2e",
            "..",
            ".",
            "%E2%82",
            "~",
            "%25",
            "a%20b",
            "%0A",
            "%0D%0A",
            "%7B%7D",
            "%ED%A0%80",
            "stream",
            "ws",
            "stdout",
            "stderr",
            "logs",
            "executions",
            "stop",
            "retry",
            "jobs",
        ])
        .prop_map(String::from),
        (1usize..600).prop_map(|length| "t".repeat(length)),
        prop::collection::vec(any::<u8>(), 1..12)
            .prop_map(|bytes| { bytes.iter().map(|byte| format!("%{byte:02X}")).collect() }),
    ]
}

/// A path: one of the API's routes with odd segments, a query, or random segments.
fn path() -> impl Strategy<Value = String> {
    let query = prop_oneof![
        Just(String::new()),
        (segment(), segment()).prop_map(|(query, page)| format!("?query={query}&page={page}")),
        segment().prop_map(|page| format!("?page={page}")),
        segment().prop_map(|text| format!("?{text}&{text}=&=")),
    ];
    let route =
        (segment(), segment(), segment(), 0u8..12).prop_map(|(task, job, execution, kind)| {
            match kind {
                0 => format!("/tasks/{task}/"),
                1 => format!("/tasks/{task}"),
                2 => format!("/tasks/{task}/jobs/{job}/"),
                3 => format!("/tasks/{task}/jobs/{job}/stop"),
                4 => format!("/tasks/{task}/jobs/{job}/retry/"),
                5 => format!("/tasks/{task}/jobs/{job}/executions/{execution}/"),
                6 => format!("/tasks/{task}/jobs/{job}/executions/{execution}/stop"),
                7 => format!("/tasks/{task}/jobs/{job}/{execution}"),
                8 => format!("/tasks/{task}/jobs/{job}/executions/{execution}/logs"),
                9 => "/tasks/".to_string(),
                10 => "/search/".to_string(),
                _ => format!("/{task}/{job}//{execution}"),
            }
        });
    (route, query).prop_map(|(route, query)| format!("{route}{query}"))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => Just("POST".to_string()),
        4 => Just("PUT".to_string()),
        4 => Just("GET".to_string()),
        3 => prop::sample::select(vec![
            "DELETE", "PATCH", "HEAD", "OPTIONS", "DEL", "get", "Post", "FOO", "M-SEARCH", "PROPFIND",
        ])
        .prop_map(String::from),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/json; charset=latin1".to_string())),
        Just(Some("text/plain".to_string())),
        Just(Some("multipart/form-data; boundary=x".to_string())),
        prop::collection::vec(0x20u8..0x7f, 0..30)
            .prop_map(|bytes| Some(String::from_utf8(bytes).expect("ASCII"))),
    ]
}

/// A request line and headers no client library would send: non-UTF-8 paths, odd versions,
/// contradicting lengths; or plain random bytes.
fn raw() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        (prop::collection::vec(any::<u8>(), 1..40), body()).prop_map(|(path, body)| {
            let mut bytes = b"POST /tasks/".to_vec();
            bytes.extend(path.into_iter().filter(|byte| !byte.is_ascii_whitespace()));
            bytes.extend(b"/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
            bytes.extend(format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes());
            bytes.extend(body);
            bytes
        }),
        (method(), path(), prop::sample::select(vec![
            "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "http/1.1", "", "HTTP/1.1 extra",
        ]), prop::sample::select(vec![
            "Content-Length: 5\r\n", "Content-Length: -1\r\n", "Content-Length: 99999999999999999999\r\n",
            "Content-Length: 1\r\nContent-Length: 2\r\n", "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n", "Expect: 100-continue\r\n", "Host: a\r\nHost: b\r\n",
            "Upgrade: websocket\r\nConnection: Upgrade\r\n", "X: \u{ff}\r\n", ": empty\r\n", "\r\n",
        ])).prop_map(|(method, path, version, header)| {
            format!("{method} {path} {version}\r\nHost: 127.0.0.1\r\n{header}Connection: close\r\n\r\nzzzzz")
                .into_bytes()
        }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        9 => (method(), path(), content_type(), body()).prop_map(|(method, path, content_type, body)| {
            Case::Http { method, path, content_type, body }
        }),
        // The enqueue routes get most of the mutated payloads.
        9 => (prop::sample::select(vec!["POST", "PUT"]), segment(), any::<u128>(), content_type(), payload()).prop_map(
            |(method, task, job, content_type, body)| {
                let path = if method == "POST" {
                    format!("/tasks/fuzz-{task}/")
                } else {
                    format!("/tasks/fuzz-{task}/jobs/{}/", uuid::Uuid::from_u128(job))
                };
                Case::Http { method: method.to_string(), path, content_type, body }
            }
        ),
        2 => raw().prop_map(Case::Raw),
    ]
}

/// What one request got: its status, or none (the connection was closed, which is fine).
async fn send(client: &reqwest::Client, port: u16, case: &Case) -> Option<u16> {
    match case {
        Case::Http {
            method,
            path,
            content_type,
            body,
        } => {
            let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
            let mut request = client
                .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
                .body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await.ok()?;
            let response = common::openapi::checked(method.as_str(), response).await;
            let status = response.status().as_u16();
            // Read the whole body, so the connection can be reused.
            let _ = response.bytes().await;
            Some(status)
        }
        Case::Raw(bytes) => {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            stream.write_all(bytes).await.ok()?;
            let _ = stream.shutdown().await;
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
            let _ = read.await;
            let line = String::from_utf8_lossy(&answer[..answer.len().min(16)]).into_owned();
            line.strip_prefix("HTTP/1.1 ")
                .or_else(|| line.strip_prefix("HTTP/1.0 "))
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// At least 10,000 generated and mutated requests: no 5xx, no panic in the log, the node still
/// healthy and a normal job still done afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_requests_get_no_5xx_and_no_panic() {
    let seed = env_number("FASTLANE_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let num_cases = env_number("FASTLANE_FUZZ_CASES").unwrap_or(10_000) as usize;
    println!("fuzz: seed {seed}, {num_cases} cases (replay: FASTLANE_FUZZ_SEED={seed} FASTLANE_FUZZ_CASES={num_cases})");

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let generating = Instant::now();
    let strategy = case();
    let cases: Vec<Case> = (0..num_cases)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .collect();

    println!(
        "fuzz: generated in {:.1}s",
        generating.elapsed().as_secs_f64()
    );

    let node = Node::start(&[]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let started = Instant::now();
    let port = node.port;
    let outcomes: Vec<(usize, Option<u16>)> = stream::iter(cases.iter().enumerate())
        .map(|(index, case)| {
            let client = client.clone();
            async move { (index, send(&client, port, case).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut statuses = std::collections::BTreeMap::new();
    for (_, status) in &outcomes {
        *statuses.entry(*status).or_insert(0usize) += 1;
    }
    println!(
        "fuzz: {} requests in {:.1}s; answers by status (None: connection closed): {statuses:?}",
        cases.len(),
        started.elapsed().as_secs_f64()
    );

    let server_errors: Vec<String> = outcomes
        .iter()
        .filter(|(_, status)| status.is_some_and(|status| status >= 500))
        .take(5)
        .map(|(index, status)| {
            format!("case {index} got {status:?}: {:?}", shorten(&cases[*index]))
        })
        .collect();
    assert!(
        server_errors.is_empty(),
        "seed {seed}: 5xx answers:\n{}",
        server_errors.join("\n")
    );
    // Whatever was stored renders: every page of tasks, every task and every job.
    let mut pages = 1;
    let mut page = 1;
    while page <= pages {
        let listed = node.get_json(&format!("/tasks/?page={page}")).await;
        pages = listed["pages"].as_u64().unwrap_or(0);
        for item in listed["items"].as_array().into_iter().flatten() {
            let task = node
                .get(common::path_of(item["url"].as_str().unwrap()))
                .await;
            assert!(task.status().is_success(), "seed {seed}: {item}");
            let task: serde_json::Value = task.json().await.unwrap();
            for job in task["jobs"].as_array().into_iter().flatten() {
                let details = node
                    .get(common::path_of(job["url"].as_str().unwrap()))
                    .await;
                assert_eq!(details.status(), 200, "seed {seed}: {job}");
            }
        }
        page += 1;
    }

    let log = node.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("ERROR") || line.contains("WARN"))
        .collect();
    println!("fuzz: {} warnings and errors in the log", errors.len());
    for line in errors.iter().take(10) {
        println!("fuzz: {line}");
    }
    assert!(
        !log.contains("panicked"),
        "seed {seed}: a panic in the log:\n{log}"
    );
    assert_eq!(node.get("/healthcheck").await.status(), 200);

    let posted = node
        .post_job(
            "fuzz-after",
            json!({"image": image(), "command": "echo still fine"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(execution["log"], "still fine\n");
}

/// A case, with long bodies cut, for the failure message.
fn shorten(case: &Case) -> String {
    let text = match case {
        Case::Http {
            method,
            path,
            content_type,
            body,
        } => format!(
            "{method} {path} {content_type:?} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(400)])
        ),
        Case::Raw(bytes) => format!(
            "raw {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
        ),
    };
    text
}
