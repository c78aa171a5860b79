//! The invariants the chaos suite checks once everything is quiet, as plain functions of what
//! the node answers and what the engines and the webhook receiver saw.

use crate::observe::{ContainerEvent, Hit};
use crate::JobSpec;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const TERMINAL: [&str; 5] = ["done", "failed", "timedout", "expired", "stopped"];

/// One broken invariant: its class (the name `FASTLANE_CHAOS_KNOWN` lists) and the evidence.
#[derive(Debug)]
pub struct Violation {
    pub class: &'static str,
    pub detail: String,
}

fn violation(class: &'static str, detail: String) -> Violation {
    Violation { class, detail }
}

fn status(execution: &Value) -> &str {
    execution["status"].as_str().unwrap_or("")
}

fn id(execution: &Value) -> &str {
    execution["executionId"].as_str().unwrap_or("?")
}

/// Where an execution's container ran, `host:port`.
pub fn engine_of(execution: &Value) -> String {
    format!(
        "{}:{}",
        execution["metadata"]["docker_host"].as_str().unwrap_or("?"),
        execution["metadata"]["docker_port"]
    )
}

/// A wrong result the suite caused itself, on an engine it killed: the engine's restart kills
/// the containers it ran (`failed`), and what a container wrote while its engine was down is
/// lost (`done` with exit 0, or `failed` with the job's own exit code, and no output: dockerd
/// copies the output into its log, without live-restore nobody reads it meanwhile).
fn excused(execution: &Value, killed_engines: &BTreeSet<String>) -> bool {
    let lost_output = status(execution) == "done"
        && execution["exitCode"] == 0
        && execution["log"].as_str().unwrap_or("").is_empty();
    (status(execution) == "failed" || lost_output) && killed_engines.contains(&engine_of(execution))
}

/// Whether the job needs nothing more: every execution terminal, and it ended done or used up
/// its retries.
pub fn settled(spec: &JobSpec, executions: &[Value]) -> bool {
    let Some(last) = executions.last() else {
        return false;
    };
    executions
        .iter()
        .all(|execution| TERMINAL.contains(&status(execution)))
        && (status(last) == "done" || executions.len() > spec.retries as usize)
}

/// The job's executions against what its command dictates: a job that echoes and exits 0 ends
/// with one `done` execution (earlier ones only failed because the suite killed their engine); a
/// job that exits 3 fails `retries + 1` times; each execution has the echoed output. Returns the
/// violations and the number of excused executions.
pub fn check_job(
    spec: &JobSpec,
    executions: &[Value],
    killed_engines: &BTreeSet<String>,
) -> (Vec<Violation>, usize) {
    let mut found = Vec::new();
    let job = format!("job {} ({})", spec.n, spec.describe());
    let unfinished: Vec<String> = executions
        .iter()
        .filter(|execution| !TERMINAL.contains(&status(execution)))
        .map(|execution| format!("{} {}", id(execution), status(execution)))
        .collect();
    if executions.is_empty() || !unfinished.is_empty() {
        found.push(violation(
            "ended",
            format!(
                "{job}: executions never ended: {unfinished:?} of {}",
                executions.len()
            ),
        ));
        return (found, 0);
    }
    let allowed = spec.retries as usize + 1;
    if executions.len() > allowed {
        found.push(violation(
            "retries",
            format!(
                "{job}: {} executions, at most {allowed} allowed",
                executions.len()
            ),
        ));
    }
    if !spec.succeeds && executions.len() < allowed {
        found.push(violation(
            "retries",
            format!(
                "{job}: {} executions, its {} retries not all run",
                executions.len(),
                spec.retries
            ),
        ));
    }
    let mut num_excused = 0;
    let last = executions.len() - 1;
    for (index, execution) in executions.iter().enumerate() {
        let wanted = if spec.succeeds && index == last {
            "done"
        } else {
            "failed"
        };
        let excuse = excused(execution, killed_engines);
        // Excused: a failure the engine's restart caused, or the job's own exit 3 whose output
        // was written while its engine was down (lost by Docker, as for `done` above).
        let output_lost = execution["log"].as_str().unwrap_or("").is_empty();
        if excuse && (wanted == "done" || execution["exitCode"] != 3 || output_lost) {
            num_excused += 1;
            continue;
        }
        let exit_code = if wanted == "done" { 0 } else { 3 };
        let right = status(execution) == wanted
            && execution["exitCode"] == exit_code
            && execution["log"] == spec.output();
        if !right {
            found.push(violation(
                "output",
                format!(
                    "{job}: execution {} on {} is {} (exit {}, log {:?}, error {:?}), wanted {wanted} (exit {exit_code}, log {:?})",
                    id(execution),
                    engine_of(execution),
                    status(execution),
                    execution["exitCode"],
                    execution["log"],
                    execution["error"],
                    spec.output()
                ),
            ));
        }
    }
    (found, num_excused)
}

/// No execution ran twice: at most one container was created under its name on all engines.
/// Returns the violations and the executions no creation was seen for (an engine killed just
/// after creating loses its in-memory event log: a note, not a violation).
pub fn check_creations(
    executions: &[Value],
    events: &[ContainerEvent],
) -> (Vec<Violation>, Vec<String>) {
    let mut creations: HashMap<String, Vec<&ContainerEvent>> = HashMap::new();
    for event in events.iter().filter(|event| event.action == "create") {
        let name = event.name.trim_start_matches('/');
        if let Some(execution_id) = name.strip_prefix("fastlane-job-") {
            creations
                .entry(execution_id.to_string())
                .or_default()
                .push(event);
        }
    }
    let mut found = Vec::new();
    let mut unseen = Vec::new();
    for execution in executions {
        let created = creations
            .get(id(execution))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if created.len() > 1 {
            let containers: Vec<String> = created
                .iter()
                .map(|event| {
                    let started = events
                        .iter()
                        .filter(|other| {
                            other.action == "start" && other.container_id == event.container_id
                        })
                        .map(|other| format!("started {}", clock(other.time_nanos)))
                        .next();
                    format!(
                        "{} on {} created {} ({})",
                        &event.container_id[..12.min(event.container_id.len())],
                        event.engine,
                        clock(event.time_nanos),
                        started.unwrap_or_else(|| "never started".into())
                    )
                })
                .collect();
            found.push(violation(
                "twice",
                format!(
                    "execution {} ({}, result from {}) had {} containers created: {}",
                    id(execution),
                    status(execution),
                    engine_of(execution),
                    created.len(),
                    containers.join(", ")
                ),
            ));
        } else if created.is_empty() && execution["exitCode"].is_number() {
            unseen.push(id(execution).to_string());
        }
    }
    (found, unseen)
}

/// `HH:MM:SS.mmm` UTC of a time in nanoseconds since the epoch, to find it in the node log.
fn clock(nanos: i64) -> String {
    let millis = nanos / 1_000_000;
    let seconds = millis / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
        millis % 1000
    )
}

/// Which webhook lists an execution's terminal status owes (`starts` is not counted).
fn owed(execution: &Value) -> &'static [&'static str] {
    match status(execution) {
        "done" => &["succeeds", "finishes"],
        "failed" | "timedout" | "expired" => &["fails", "finishes"],
        _ => &["finishes"],
    }
}

/// Every owed webhook was delivered (answered 200) at least once, nothing was sent to a list not
/// owed, all deliveries of one execution carried one terminal status, and — once the node sends
/// `Fastlane-Delivery-Id` — every attempt of one delivery carried the same id and no two
/// deliveries shared one. Returns the violations and the number of extra successful deliveries
/// (duplicates a receiver must drop).
pub fn check_webhooks(
    jobs: &[(&JobSpec, Vec<Value>)],
    hits: &HashMap<String, Vec<Hit>>,
) -> (Vec<Violation>, usize) {
    let mut found = Vec::new();
    let mut duplicates = 0;
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let any_ids = hits.values().flatten().any(|hit| hit.delivery_id.is_some());
    for (spec, executions) in jobs.iter().filter(|(spec, _)| spec.hooks) {
        for execution in executions {
            let lists = owed(execution);
            for list in ["succeeds", "fails", "finishes"] {
                let path = format!("/hook/{}/{list}", spec.n);
                let mine: Vec<&Hit> = hits
                    .get(&path)
                    .map(|hits| {
                        hits.iter()
                            .filter(|hit| hit.body["executionId"] == id(execution))
                            .collect()
                    })
                    .unwrap_or_default();
                let what = format!(
                    "execution {} ({}) of job {}: {list}",
                    id(execution),
                    status(execution),
                    spec.n
                );
                if !lists.contains(&list) {
                    if !mine.is_empty() {
                        found.push(violation(
                            "webhook",
                            format!("{what} not owed but called {} times", mine.len()),
                        ));
                    }
                    continue;
                }
                let delivered = mine.iter().filter(|hit| hit.answered == 200).count();
                if delivered == 0 {
                    found.push(violation(
                        "webhook",
                        format!(
                            "{what} owed, never delivered ({} attempts answered 500)",
                            mine.len()
                        ),
                    ));
                }
                duplicates += delivered.saturating_sub(1);
                let statuses: BTreeSet<&str> = mine
                    .iter()
                    .filter_map(|hit| hit.body["status"].as_str())
                    .collect();
                if statuses.len() > 1 {
                    found.push(violation(
                        "ended",
                        format!("{what}: deliveries say {statuses:?}"),
                    ));
                }
                if any_ids {
                    let ids: BTreeSet<Option<&String>> =
                        mine.iter().map(|hit| hit.delivery_id.as_ref()).collect();
                    if ids.len() != 1 || ids.contains(&None) {
                        found.push(violation(
                            "delivery-id",
                            format!("{what}: attempts carried delivery ids {ids:?}"),
                        ));
                    }
                    for delivery_id in ids.into_iter().flatten() {
                        if let Some(other) = owners.insert(delivery_id.clone(), what.clone()) {
                            found.push(violation(
                                "delivery-id",
                                format!("{what}: delivery id {delivery_id} also used by {other}"),
                            ));
                        }
                    }
                }
            }
        }
    }
    (found, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(succeeds: bool, retries: u32, hooks: bool) -> JobSpec {
        JobSpec {
            n: 7,
            succeeds,
            retries,
            sleep_ms: 0,
            hooks,
        }
    }

    fn execution(id: &str, status: &str, exit: Value, log: &str, engine: &str) -> Value {
        let (host, port) = engine.split_once(':').unwrap();
        json!({"executionId": id, "status": status, "exitCode": exit, "log": log,
               "metadata": {"docker_host": host, "docker_port": port.parse::<u16>().unwrap()}})
    }

    fn classes(found: &[Violation]) -> Vec<&'static str> {
        found.iter().map(|violation| violation.class).collect()
    }

    /// Right outputs pass; a failure on a killed engine is excused once, anywhere else it is a
    /// violation; a failing job must use all its retries.
    #[test]
    fn jobs_are_judged_by_their_command() {
        let killed: BTreeSet<String> = ["127.0.0.1:2".to_string()].into();
        let done = execution("a", "done", json!(0), "chaos-7\n", "127.0.0.1:1");
        assert!(
            check_job(&spec(true, 1, false), std::slice::from_ref(&done), &killed)
                .0
                .is_empty()
        );

        let killed_run = execution("b", "failed", json!(137), "", "127.0.0.1:2");
        let (found, excused) =
            check_job(&spec(true, 1, false), &[killed_run, done.clone()], &killed);
        assert_eq!((classes(&found), excused), (vec![], 1));

        let dead = json!({"executionId": "c", "status": "failed", "exitCode": null, "log": null,
                          "metadata": {}});
        assert_eq!(
            classes(&check_job(&spec(true, 1, false), std::slice::from_ref(&dead), &killed).0),
            ["output"]
        );

        let failed = execution("d", "failed", json!(3), "chaos-7\n", "127.0.0.1:1");
        let found = check_job(&spec(false, 2, false), &[failed.clone(), failed], &killed).0;
        assert_eq!(classes(&found), ["retries"]);

        let running = execution("e", "running", json!(null), "", "127.0.0.1:1");
        assert_eq!(
            classes(&check_job(&spec(true, 1, false), &[running], &killed).0),
            ["ended"]
        );
    }

    /// Two containers created under one execution's name, on any engines, is a run twice.
    #[test]
    fn two_creations_of_one_name_are_reported() {
        let event = |engine: &str, id: &str, action: &str| ContainerEvent {
            engine: engine.into(),
            action: action.into(),
            container_id: id.into(),
            name: "fastlane-job-x".into(),
            time_nanos: 0,
        };
        let done = execution("x", "done", json!(0), "chaos-7\n", "127.0.0.1:1");
        let once = [event("e1", "c1", "create"), event("e1", "c1", "start")];
        assert!(check_creations(std::slice::from_ref(&done), &once)
            .0
            .is_empty());
        let twice = [event("e1", "c1", "create"), event("e2", "c2", "create")];
        let (found, _) = check_creations(std::slice::from_ref(&done), &twice);
        assert_eq!(classes(&found), ["twice"]);
        let (_, unseen) = check_creations(&[done], &[]);
        assert_eq!(unseen, ["x"]);
    }

    /// Owed hooks must arrive once answered 200; delivery ids are checked only once the node
    /// sends them, then one per delivery.
    #[test]
    fn webhooks_are_owed_by_the_outcome() {
        let spec = spec(true, 0, true);
        let done = execution("x", "done", json!(0), "chaos-7\n", "127.0.0.1:1");
        let hit = |list: &str, answered: u16, id: Option<&str>| {
            (
                format!("/hook/7/{list}"),
                Hit {
                    path: format!("/hook/7/{list}"),
                    body: json!({"executionId": "x", "status": "done"}),
                    delivery_id: id.map(str::to_string),
                    answered,
                },
            )
        };
        let group = |hits: Vec<(String, Hit)>| {
            let mut grouped: HashMap<String, Vec<Hit>> = HashMap::new();
            for (path, hit) in hits {
                grouped.entry(path).or_default().push(hit);
            }
            grouped
        };
        let jobs = [(&spec, vec![done])];
        let delivered = group(vec![
            hit("succeeds", 500, None),
            hit("succeeds", 200, None),
            hit("finishes", 200, None),
        ]);
        assert!(check_webhooks(&jobs, &delivered).0.is_empty());
        let missing = group(vec![hit("succeeds", 500, None), hit("finishes", 200, None)]);
        assert_eq!(classes(&check_webhooks(&jobs, &missing).0), ["webhook"]);
        let wrong = group(vec![
            hit("succeeds", 200, None),
            hit("finishes", 200, None),
            hit("fails", 200, None),
        ]);
        assert_eq!(classes(&check_webhooks(&jobs, &wrong).0), ["webhook"]);
        let ids = group(vec![
            hit("succeeds", 500, Some("d1")),
            hit("succeeds", 200, Some("d2")),
            hit("finishes", 200, Some("d1")),
        ]);
        assert_eq!(
            classes(&check_webhooks(&jobs, &ids).0),
            ["delivery-id", "delivery-id"]
        );
    }
}
