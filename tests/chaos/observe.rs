//! What the chaos suite watches while it runs, from outside the node: the engines' container
//! `create` events (streamed, so an engine that is killed loses none it had emitted), the number
//! of running fastlane containers per farm (sampled), and a webhook receiver that can be told to
//! fail.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `filters` of the events the suite counts: container creations and starts.
const EVENT_FILTERS: &str = r#"{"type":["container"],"event":["create","start"]}"#;
/// `filters` of the containers the sampler counts: running ones the node labelled.
const RUNNING_FILTERS: &str = r#"{"label":["fastlane.execution_id"],"status":["running"]}"#;
/// Most bytes of an engine answer the suite reads (a listing of a few hundred containers).
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn docker_time(nanos: i64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// Opens an HTTP/1.0 GET of `path` on the engine at `address` (HTTP/1.0: no chunking, the body
/// ends when the engine closes the connection); returns the stream after the response head.
fn open(address: &str, path: &str, timeout: Duration) -> Option<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let status_ok = head.starts_with(b"HTTP/1.") && head.get(9) == Some(&b'2');
    status_ok.then_some((stream, head))
}

/// The whole body of a GET of `path`, or `None` when the engine cannot be reached.
fn get_text(address: &str, path: &str) -> Option<String> {
    let (stream, _) = open(address, path, Duration::from_secs(10))?;
    let mut body = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// Ids of the running fastlane containers on the engine; empty when it cannot be reached.
fn running(address: &str) -> BTreeSet<String> {
    let path = format!("/containers/json?filters={}", encode(RUNNING_FILTERS));
    get_text(address, &path)
        .and_then(|body| serde_json::from_str::<Vec<Value>>(&body).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|container| container["Id"].as_str().map(str::to_string))
        .collect()
}

/// Ids of every fastlane container (any state) on the engine, with its name; `None` when the
/// engine cannot be reached.
pub fn fastlane_containers(address: &str) -> Option<Vec<(String, String)>> {
    let filters = encode(r#"{"label":["fastlane.execution_id"]}"#);
    let body = get_text(
        address,
        &format!("/containers/json?all=1&filters={filters}"),
    )?;
    let containers: Vec<Value> = serde_json::from_str(&body).ok()?;
    Some(
        containers
            .iter()
            .map(|container| {
                (
                    container["Id"]
                        .as_str()
                        .unwrap_or("?")
                        .chars()
                        .take(12)
                        .collect(),
                    container["Names"][0].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
    )
}

/// One container event, as the engine reported it.
#[derive(Clone, Debug)]
pub struct ContainerEvent {
    pub engine: String,
    pub action: String,
    pub container_id: String,
    pub name: String,
    pub time_nanos: i64,
}

fn parse_event(engine: &str, line: &str) -> Option<ContainerEvent> {
    let event: Value = serde_json::from_str(line).ok()?;
    Some(ContainerEvent {
        engine: engine.to_string(),
        action: event["Action"].as_str()?.to_string(),
        container_id: event["Actor"]["ID"].as_str()?.to_string(),
        name: event["Actor"]["Attributes"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        time_nanos: event["timeNano"].as_i64().unwrap_or(0),
    })
}

/// Events seen, by (engine, container id, action): a stream that reconnects, and the final query,
/// see some twice.
type Seen = BTreeMap<(String, String, String), ContainerEvent>;

/// Every container event of the run, from a stream per engine that reconnects (from the last
/// event seen) after the engine was killed, and a final `since..until` query that fills in.
pub struct EventLog {
    since_nanos: i64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    engines: Vec<String>,
}

impl EventLog {
    pub fn start(engines: &[String]) -> EventLog {
        let since_nanos = now_nanos() - 1_000_000_000;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = engines
            .iter()
            .map(|engine| {
                let (engine, stop, seen) = (engine.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || follow(&engine, since_nanos, &stop, &seen))
            })
            .collect();
        EventLog {
            since_nanos,
            stop,
            seen,
            threads,
            engines: engines.to_vec(),
        }
    }

    /// Stops the streams, queries each engine for the whole run and returns every event.
    pub fn finish(mut self) -> Vec<ContainerEvent> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let until = now_nanos();
        for engine in &self.engines {
            let path = format!(
                "/events?since={}&until={}&filters={}",
                docker_time(self.since_nanos),
                docker_time(until),
                encode(EVENT_FILTERS)
            );
            for line in get_text(engine, &path).unwrap_or_default().lines() {
                record(&self.seen, parse_event(engine, line));
            }
        }
        let seen = self.seen.lock().unwrap();
        seen.values().cloned().collect()
    }
}

fn record(seen: &Mutex<Seen>, event: Option<ContainerEvent>) {
    if let Some(event) = event {
        let key = (
            event.engine.clone(),
            event.container_id.clone(),
            event.action.clone(),
        );
        seen.lock().unwrap().entry(key).or_insert(event);
    }
}

/// Streams the engine's events until `stop`; reconnects from the last event seen.
fn follow(engine: &str, since_nanos: i64, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut last = since_nanos;
    while !stop.load(Ordering::Relaxed) {
        let path = format!(
            "/events?since={}&filters={}",
            docker_time(last),
            encode(EVENT_FILTERS)
        );
        let Some((mut stream, _)) = open(engine, &path, Duration::from_millis(500)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let mut pending = Vec::new();
        let mut chunk = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => pending.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            }
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event = parse_event(engine, &String::from_utf8_lossy(&line));
                if let Some(event) = &event {
                    last = last.max(event.time_nanos);
                }
                record(seen, event);
            }
            // A line longer than any event: the stream is not what we expect.
            if pending.len() > 1 << 20 {
                break;
            }
        }
    }
}

/// The most running fastlane containers seen at once across the farm's engines, with the sample
/// that showed it. Engines are read one after the other; a container counts only when it was
/// running in the reading of its engine before and after the others were read, so a container
/// that ended while another engine was read is never counted with its successor: the figure is
/// a lower bound of the true concurrency, never more.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    worst: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(engines: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let worst = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, max, samples, worst) =
                (stop.clone(), max.clone(), samples.clone(), worst.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let outer = &engines[round % engines.len()];
                    let before = running(outer);
                    let mut seen: Vec<String> = engines
                        .iter()
                        .filter(|engine| *engine != outer)
                        .flat_map(|engine| running(engine))
                        .collect();
                    let after = running(outer);
                    seen.extend(before.intersection(&after).cloned());
                    samples.fetch_add(1, Ordering::Relaxed);
                    if seen.len() > max.fetch_max(seen.len(), Ordering::Relaxed) {
                        *worst.lock().unwrap() = seen
                            .iter()
                            .map(|id| id.chars().take(12).collect())
                            .collect();
                    }
                    round += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Sampler {
            stop,
            max,
            samples,
            worst,
            thread: Some(thread),
        }
    }

    /// Stops sampling: (the maximum, the containers of that sample, number of samples).
    pub fn finish(mut self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let worst = self.worst.lock().unwrap().clone();
        (
            self.max.load(Ordering::Relaxed),
            worst,
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub body: Value,
    pub delivery_id: Option<String>,
    pub answered: u16,
}

/// A webhook receiver on loopback: records every request; answers 500 while `failing` is set,
/// 200 otherwise.
pub struct Receiver {
    pub base: String,
    pub failing: Arc<AtomicBool>,
    pub hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let failing = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (fail, recorded) = (failing.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (fail, recorded) = (fail.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (fail, recorded) = (fail.clone(), recorded.clone());
                            async move {
                                let path = request.uri().path().to_string();
                                let delivery_id = request
                                    .headers()
                                    .get("fastlane-delivery-id")
                                    .and_then(|value| value.to_str().ok())
                                    .map(str::to_string);
                                // Webhook bodies are bounded by the node (the execution view).
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|body| body.to_bytes())
                                    .unwrap_or_default();
                                let answered = if fail.load(Ordering::Relaxed) {
                                    500
                                } else {
                                    200
                                };
                                recorded.lock().unwrap().push(Hit {
                                    path,
                                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                    delivery_id,
                                    answered,
                                });
                                let mut response = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"ok"),
                                ));
                                *response.status_mut() =
                                    hyper::StatusCode::from_u16(answered).unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            base,
            failing,
            hits,
        }
    }

    /// Every hit so far, grouped by path.
    pub fn by_path(&self) -> HashMap<String, Vec<Hit>> {
        let mut grouped: HashMap<String, Vec<Hit>> = HashMap::new();
        for hit in self.hits.lock().unwrap().iter() {
            grouped
                .entry(hit.path.clone())
                .or_default()
                .push(hit.clone());
        }
        grouped
    }
}
