//! Prometheus metrics of this node: one registry for the whole process, recorded with one-line
//! calls where things happen (a JobActor's start and end, a scheduler firing, a notification
//! attempt, an HTTP request) and rendered by the gateway's `GET /metrics` in the Prometheus text
//! format (0.0.4). Counters and histograms count what this node did since it started; gauges of
//! state (hosts, farms, queue depth, schedules) are not kept here but rendered at scrape time
//! from what `/status/` gathers ([`render`]).
//!
//! Label sets are bounded: `task` takes at most [`set_max_tasks`] distinct values (the rest are
//! counted under `task="_other"`), `status`, `kind`, `outcome`, `state` are closed lists, and
//! `route` is a pattern of the gateway's route table (or `unmatched`), never a raw path.

use crate::messages::NodeStatus;
use crate::placement::CircuitState;
use fastlane_proto::farm::Farm;
use fastlane_proto::{Execution, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `task` label of the tasks beyond the limit.
pub const OTHER_TASK: &str = "_other";

/// `METRICS_MAX_TASKS` when nothing set it.
pub const DEFAULT_MAX_TASKS: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskStatus {
    task: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process's counters and histograms.
struct Metrics {
    registry: Registry,
    executions: Family<TaskStatus, Counter>,
    execution_duration: HistogramFamily<TaskLabel>,
    queue_wait: Histogram,
    schedule_lag: Histogram,
    schedule_missed: Counter,
    notifications: Family<KindOutcome, Counter>,
    http_requests: Family<RouteStatus, Counter>,
    http_duration: HistogramFamily<RouteLabel>,
    /// The tasks that have a label of their own, at most `max_tasks`.
    tasks: Mutex<HashSet<String>>,
    max_tasks: AtomicUsize,
}

fn execution_buckets() -> Histogram {
    // 0.1 s … about 40 min.
    Histogram::new(exponential_buckets(0.1, 2.5, 12))
}

fn http_buckets() -> Histogram {
    // 1 ms … about 1 min.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let executions = Family::<TaskStatus, Counter>::default();
        registry.register(
            "fastlane_executions",
            "Executions this node ended, by task and final status",
            executions.clone(),
        );
        let execution_duration: HistogramFamily<TaskLabel> =
            Family::new_with_constructor(execution_buckets as fn() -> Histogram);
        registry.register(
            "fastlane_execution_duration_seconds",
            "Run time of ended executions that started a container (started to finished), by task",
            execution_duration.clone(),
        );
        // 10 ms … about 3 h.
        let queue_wait = Histogram::new(exponential_buckets(0.01, 3.0, 14));
        registry.register(
            "fastlane_queue_wait_seconds",
            "Time from an execution's creation (enqueued) to its container's start",
            queue_wait.clone(),
        );
        // 10 ms … about 1 h.
        let schedule_lag = Histogram::new(exponential_buckets(0.01, 2.5, 14));
        registry.register(
            "fastlane_schedule_lag_seconds",
            "Time from a scheduled firing's due time to the creation of its execution",
            schedule_lag.clone(),
        );
        let schedule_missed = Counter::default();
        registry.register(
            "fastlane_schedule_missed",
            "Scheduled firings recorded as missed or skipped (misfire and overlap policies)",
            schedule_missed.clone(),
        );
        let notifications = Family::<KindOutcome, Counter>::default();
        registry.register(
            "fastlane_notifications",
            "Notification attempts by kind (webhook, email) and outcome (delivered, failed = \
             tried again later, abandoned)",
            notifications.clone(),
        );
        let http_requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "fastlane_http_requests",
            "HTTP requests served, by route pattern and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(http_buckets as fn() -> Histogram);
        registry.register(
            "fastlane_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by route pattern",
            http_duration.clone(),
        );
        Metrics {
            registry,
            executions,
            execution_duration,
            queue_wait,
            schedule_lag,
            schedule_missed,
            notifications,
            http_requests,
            http_duration,
            tasks: Mutex::new(HashSet::new()),
            max_tasks: AtomicUsize::new(DEFAULT_MAX_TASKS),
        }
    }

    /// `task` if it has (or may get) a label of its own, else [`OTHER_TASK`].
    fn task_label(&self, task: &str) -> String {
        let max = self.max_tasks.load(Ordering::Relaxed);
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if tasks.contains(task) {
            return task.to_string();
        }
        if tasks.len() < max {
            tasks.insert(task.to_string());
            return task.to_string();
        }
        OTHER_TASK.to_string()
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Sets `METRICS_MAX_TASKS`: how many distinct tasks get a `task` label of their own. Tasks
/// that already have one keep it.
pub fn set_max_tasks(max: usize) {
    metrics().max_tasks.store(max, Ordering::Relaxed);
}

/// Seconds from `from` to `to` (0 when `to` is earlier).
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.0.saturating_sub(from.0)).max(0) as f64 / 1e6
}

/// A JobActor started `execution`'s container: the time it waited since it was enqueued.
pub fn execution_started(execution: &Execution) {
    let started = execution.started_at.unwrap_or_else(Timestamp::now);
    metrics()
        .queue_wait
        .observe(seconds_between(execution.created_at, started));
}

/// A JobActor ended `execution` (its status is final): counted by task and status, and its run
/// time observed when a container started.
pub fn execution_ended(execution: &Execution) {
    let metrics = metrics();
    let task = metrics.task_label(&execution.task_id);
    let status = execution.status.as_str();
    if let Some(started) = execution.started_at {
        let finished = execution.finished_at.unwrap_or_else(Timestamp::now);
        metrics
            .execution_duration
            .get_or_create(&TaskLabel { task: task.clone() })
            .observe(seconds_between(started, finished));
    }
    metrics
        .executions
        .get_or_create(&TaskStatus { task, status })
        .inc();
}

/// The scheduler created the execution of a firing due at `due`.
pub fn schedule_fired(due: Timestamp) {
    metrics()
        .schedule_lag
        .observe(seconds_between(due, Timestamp::now()));
}

/// The scheduler recorded `count` firings as missed or skipped.
pub fn schedule_missed(count: usize) {
    metrics().schedule_missed.inc_by(count as u64);
}

/// One notification attempt settled: `kind` is `webhook` or `email`, `outcome` `delivered`,
/// `failed` (tried again later) or `abandoned`.
pub fn notification(kind: &'static str, outcome: &'static str) {
    metrics()
        .notifications
        .get_or_create(&KindOutcome { kind, outcome })
        .inc();
}

/// The gateway answered a request of `route` (a route pattern, or `unmatched`) with `status`
/// after `seconds`.
pub fn http_request(route: &'static str, status: u16, seconds: f64) {
    let metrics = metrics();
    metrics
        .http_requests
        .get_or_create(&RouteStatus { route, status })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabel { route })
        .observe(seconds);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FarmLabel {
    /// The farm's position in `DOCKER_HOSTS`.
    farm: String,
    /// Its `match` pattern.
    r#match: String,
}

/// Registers a gauge family in `registry` and returns it.
fn gauges<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// The whole exposition: the process's counters and histograms, then gauges of the node's
/// state as `status` (from `/status/`'s gathering; `None` when it could not be had) shows it.
pub fn render(status: Option<&NodeStatus>, farms: &[Farm]) -> String {
    let mut text = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics().registry);
    let Some(status) = status else {
        return text;
    };
    let mut registry = Registry::default();
    let queue = gauges::<StateLabel>(
        &mut registry,
        "fastlane_queue_messages",
        "Messages in the queue by state: ready (due, not leased), delayed, leased, dead",
    );
    if let Ok(stats) = &status.queue {
        for (state, value) in [
            ("ready", stats.ready),
            ("delayed", stats.delayed),
            ("leased", stats.leased),
            ("dead", stats.dead),
        ] {
            queue.get_or_create(&StateLabel { state }).set(value as i64);
        }
    }
    let host_up = gauges::<HostLabel>(
        &mut registry,
        "fastlane_host_up",
        "1 when the Docker host takes work: circuit closed and not blacklisted",
    );
    let circuit_open = gauges::<HostLabel>(
        &mut registry,
        "fastlane_host_circuit_open",
        "1 when the host's circuit breaker is open or half-open",
    );
    let blacklisted = gauges::<HostLabel>(
        &mut registry,
        "fastlane_host_blacklisted",
        "1 when the host is blacklisted (drained for maintenance)",
    );
    let host_running = gauges::<HostLabel>(
        &mut registry,
        "fastlane_host_running",
        "Containers this node runs on the host",
    );
    for host in &status.hosts {
        let label = HostLabel {
            host: host.endpoint.to_string(),
        };
        let is_blacklisted = status.blacklist.contains(&label.host);
        host_up
            .get_or_create(&label)
            .set(i64::from(host.available && !is_blacklisted));
        circuit_open
            .get_or_create(&label)
            .set(i64::from(host.circuit != CircuitState::Closed));
        blacklisted
            .get_or_create(&label)
            .set(i64::from(is_blacklisted));
        host_running.get_or_create(&label).set(host.running as i64);
    }
    let farm_running = gauges::<FarmLabel>(
        &mut registry,
        "fastlane_farm_running",
        "Slots of the farm's maxRunning in use (across the nodes sharing the queue backend)",
    );
    let farm_max = gauges::<FarmLabel>(
        &mut registry,
        "fastlane_farm_max_running",
        "The farm's maxRunning",
    );
    for (index, farm) in farms.iter().enumerate() {
        let pool = format!("farm:{index}");
        let used = status
            .slots
            .iter()
            .find(|(name, _)| *name == pool)
            .map_or(0, |(_, used)| *used);
        let label = FarmLabel {
            farm: index.to_string(),
            r#match: farm.pattern.clone(),
        };
        farm_running.get_or_create(&label).set(used as i64);
        farm_max
            .get_or_create(&label)
            .set(i64::from(farm.max_running));
    }
    let scheduled: Gauge = Gauge::default();
    registry.register(
        "fastlane_scheduled_jobs",
        "Jobs with a future firing in this node's scheduler",
        scheduled.clone(),
    );
    scheduled.set(status.scheduled.0 as i64);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond the limit, new tasks share `_other`; tasks seen before keep their label.
    #[test]
    fn task_labels_are_bounded() {
        let metrics = Metrics::new();
        metrics.max_tasks.store(2, Ordering::Relaxed);
        assert_eq!(metrics.task_label("a"), "a");
        assert_eq!(metrics.task_label("b"), "b");
        assert_eq!(metrics.task_label("c"), OTHER_TASK);
        assert_eq!(metrics.task_label("a"), "a");
        assert_eq!(metrics.tasks.lock().unwrap().len(), 2);
    }

    #[test]
    fn counters_render_with_total_suffix() {
        http_request("/tasks/:task", 200, 0.01);
        let text = render(None, &[]);
        assert!(
            text.contains("# TYPE fastlane_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("fastlane_http_requests_total{route=\"/tasks/:task\",status=\"200\"}"),
            "{text}"
        );
        assert!(text.contains("fastlane_http_request_duration_seconds_bucket{"));
    }
}
