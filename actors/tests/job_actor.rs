//! The JobActor's state machine, run for real (with a GateActor and HostActors) against
//! in-memory ports and scriptable fake Docker hosts, under tokio's paused clock: a 30-second
//! timeout or pull costs no real time, and no Docker is needed.
//!
//! `cargo test -p fastlane-actors --test job_actor`

mod fakes;

use fakes::runtime::{FakeRuntime, Script, KILLED_EXIT_CODE, STOPPED_EXIT_CODE};
use fakes::{enqueue, eventually, job, scenario, Harness, Notice};
use fastlane_actors::lifecycle::stop_execution;
use fastlane_actors::ports::RuntimeError;
use fastlane_proto::model::Backoff;
use fastlane_proto::schedule::retry_execution_id;
use fastlane_proto::ExecutionStatus::{
    Done, Enqueued, Failed, Pulling, Running, Stopped, Timedout,
};
use fastlane_proto::{Execution, Timestamp};
use std::time::Duration;
use uuid::Uuid;

/// The grace a stopped container gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The grace a timed-out container gets.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);
const STOP_REASON: &str = "Stopped by the test.";

fn host_fault(host: &str) -> RuntimeError {
    RuntimeError::HostFault {
        endpoint: format!("{host}:2375"),
        message: "connection refused".into(),
    }
}

/// The one fake host `host-a`, behaving as `script` says.
fn host_a(script: Script) -> Vec<FakeRuntime> {
    vec![FakeRuntime::new("host-a", script)]
}

/// Enqueues an execution of `job`, delivers it once and waits until its JobActor is done.
async fn run_job(harness: &Harness, job: &fastlane_proto::Job) -> Uuid {
    let execution = enqueue(&harness.store, job);
    harness.deliver(&execution, 1).await.finished().await;
    execution.execution_id
}

/// A container that runs until it is stopped, writing `partial` first.
fn never_exits() -> Script {
    Script {
        run_for: None,
        stdout: b"partial\n".to_vec(),
        ..Script::default()
    }
}

/// The ids of the containers `runtime` created.
fn created(runtime: &FakeRuntime) -> Vec<String> {
    runtime
        .calls()
        .creations
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn stored_error(harness: &Harness, id: Uuid) -> String {
    let execution = harness.store.execution(id).expect("execution stored");
    String::from_utf8_lossy(&execution.error.unwrap_or_default()).into_owned()
}

/// The execution's container was removed, nothing runs on any host any more, and its message
/// was acknowledged exactly once.
async fn assert_cleaned_up(harness: &Harness, id: Uuid, container_id: &str) {
    let runtime = harness
        .runtimes
        .iter()
        .find(|runtime| {
            created(runtime)
                .iter()
                .any(|created| created == container_id)
        })
        .expect("a host created the container");
    eventually("the container is removed", || {
        runtime
            .calls()
            .removals
            .iter()
            .any(|removed| removed == container_id)
    })
    .await;
    eventually("the message is acknowledged", || {
        !harness.queue.messages.log().acks.is_empty()
    })
    .await;
    for runtime in &harness.runtimes {
        assert!(runtime.running().is_empty(), "nothing is left running");
    }
    let messages = harness.queue.messages.log();
    assert_eq!(messages.acks, [id.to_string()]);
    assert!(messages.releases.is_empty(), "{:?}", messages.releases);
    assert!(messages.fails.is_empty(), "{:?}", messages.fails);
}

/// Waits until the notifier has heard exactly `expected` (JobActors tell it by casts).
async fn assert_notices(harness: &Harness, expected: &[Notice]) {
    eventually(&format!("the notifier heard {expected:?}"), || {
        harness.notices().len() >= expected.len()
    })
    .await;
    assert_eq!(harness.notices(), expected);
}

/// Baseline: a container that exits 0 ends `done` with its exit code and stdout stored, after
/// `pulling` and `running` were stored on the way; the gate granted the farm's slot before the
/// container was created; the notifier heard of the start and of the end; the container is
/// removed and the message acknowledged.
#[tokio::test(start_paused = true)]
async fn success_stores_the_output_and_acknowledges() {
    scenario(host_a(Script::default()), |harness| async move {
        let job = job(60, 0, None);
        let id = run_job(&harness, &job).await;

        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Done);
        assert_eq!(stored.exit_code, Some(0));
        assert_eq!(stored.log.as_deref(), Some(&b"hello\n"[..]));
        assert_eq!(harness.store.status_history(id), [Pulling, Running, Done]);
        assert_eq!(
            harness.queue.slots.log().acquisitions,
            [(id.to_string(), vec![("farm:0".to_string(), 10)])]
        );
        let containers = created(&harness.runtimes[0]);
        assert_eq!(containers.len(), 1);
        assert_eq!(stored.metadata.container_id.as_ref(), Some(&containers[0]));
        assert_eq!(stored.metadata.docker_host.as_deref(), Some("host-a"));
        assert_cleaned_up(&harness, id, &containers[0]).await;
        assert!(harness.queue.messages.log().pushes.is_empty(), "no retry");
        assert_notices(&harness, &[Notice::Started(id), Notice::Ended(id)]).await;
    })
    .await;
}

/// Timeout: a container that never exits is stopped about `timeout` seconds after it started,
/// with the 1 s timeout grace; the execution ends `timedout` with the original's message
/// ("Job execution timed out after N seconds.") followed by what the container wrote, the
/// notifier hears of the end, the container is removed and the message acknowledged.
#[tokio::test(start_paused = true)]
async fn a_container_that_never_exits_times_out() {
    scenario(host_a(never_exits()), |harness| async move {
        let job = job(30, 0, None);
        let id = run_job(&harness, &job).await;

        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Timedout);
        assert!(
            stored_error(&harness, id).starts_with("Job execution timed out after 30 seconds."),
            "{:?}",
            stored_error(&harness, id)
        );
        assert_eq!(stored.exit_code, Some(STOPPED_EXIT_CODE));
        assert_eq!(stored.log.as_deref(), Some(&b"partial\n"[..]));
        let calls = harness.runtimes[0].calls();
        let (container_id, created_at) = calls.creations[0].clone();
        assert_eq!(calls.stops.len(), 1);
        let stop = &calls.stops[0];
        assert_eq!(stop.container_id, container_id);
        assert_eq!(stop.grace, TIMEOUT_GRACE);
        // Counted from the container's start, less the wall-clock time the JobActor saw pass
        // since (microseconds here, as the paused clock does not stop the wall clock).
        let ran = stop.at - created_at;
        assert!(
            ran >= Duration::from_secs(29) && ran <= Duration::from_secs(31),
            "stopped after {ran:?}"
        );
        assert_cleaned_up(&harness, id, &container_id).await;
        assert_notices(&harness, &[Notice::Started(id), Notice::Ended(id)]).await;
    })
    .await;
}

/// Stops the execution once `reached` holds, then checks it ended `stopped` with the reason, its
/// one container stopped with the 5 s grace and removed, nothing left running, the message
/// acknowledged. Returns the execution's id.
async fn stop_when(
    harness: &Harness,
    what: &str,
    reached: impl Fn(&Harness, Uuid) -> bool,
) -> Uuid {
    let job = job(600, 0, None);
    let execution = enqueue(&harness.store, &job);
    let id = execution.execution_id;
    let run = harness.deliver(&execution, 1).await;
    eventually(what, || reached(harness, id)).await;

    stop_execution(&harness.services, id, STOP_REASON)
        .await
        .expect("stop");
    run.finished().await;

    assert_eq!(harness.store.status(id), Some(Stopped));
    assert!(
        stored_error(harness, id).starts_with(STOP_REASON),
        "{:?}",
        stored_error(harness, id)
    );
    let calls = harness.runtimes[0].calls();
    assert_eq!(calls.creations.len(), 1, "one container, created once");
    let container_id = calls.creations[0].0.clone();
    let stops: Vec<(String, Duration)> = calls
        .stops
        .iter()
        .map(|stop| (stop.container_id.clone(), stop.grace))
        .collect();
    assert_eq!(stops, [(container_id.clone(), STOP_GRACE)]);
    assert_cleaned_up(harness, id, &container_id).await;
    id
}

/// Stop while the image is being pulled: `stopped` is stored at once; the container the run goes
/// on to create is stopped as soon as it exists, then removed; the message is acknowledged.
#[tokio::test(start_paused = true)]
async fn stop_while_pulling() {
    let script = Script {
        pull_delay: Duration::from_secs(30),
        ..never_exits()
    };
    scenario(host_a(script), |harness| async move {
        stop_when(&harness, "the image is being pulled", |harness, id| {
            harness.runtimes[0].calls().pulls_in_progress == 1
                && harness.store.status(id) == Some(Pulling)
        })
        .await;
    })
    .await;
}

/// A stop before the container exists should tell the notifier the execution ended, as a stop
/// of a running one does (`finishes` lists apply to `stopped`).
#[tokio::test(start_paused = true)]
async fn a_stop_while_pulling_tells_the_notifier() {
    let script = Script {
        pull_delay: Duration::from_secs(30),
        ..never_exits()
    };
    scenario(host_a(script), |harness| async move {
        let id = stop_when(&harness, "the image is being pulled", |harness, _| {
            harness.runtimes[0].calls().pulls_in_progress == 1
        })
        .await;
        assert_notices(&harness, &[Notice::Ended(id)]).await;
    })
    .await;
}

/// Stop while the container is being created and started: as for a pull, the container is
/// stopped once Docker has it, then removed; `stopped` stays; the message is acknowledged.
#[tokio::test(start_paused = true)]
async fn stop_while_starting() {
    let script = Script {
        start_delay: Duration::from_secs(30),
        ..never_exits()
    };
    scenario(host_a(script), |harness| async move {
        stop_when(&harness, "the container is being created", |harness, _| {
            harness.runtimes[0].calls().starts_in_progress == 1
        })
        .await;
    })
    .await;
}

/// Stop while running: the container is stopped with the 5 s grace; `stopped` is stored with the
/// reason, then with the container's output once it has exited; the notifier hears of the end
/// (`finishes` lists apply to `stopped`); the container is removed and the message acknowledged.
#[tokio::test(start_paused = true)]
async fn stop_while_running() {
    scenario(host_a(never_exits()), |harness| async move {
        let id = stop_when(&harness, "the container runs", |harness, id| {
            harness.store.status(id) == Some(Running)
        })
        .await;
        let execution = harness.store.execution(id).unwrap();
        assert_eq!(execution.exit_code, Some(STOPPED_EXIT_CODE));
        assert_eq!(execution.log.as_deref(), Some(&b"partial\n"[..]));
        assert_eq!(
            harness.store.status_history(id),
            [Pulling, Running, Stopped, Stopped]
        );
        assert_notices(&harness, &[Notice::Started(id), Notice::Ended(id)]).await;
    })
    .await;
}

/// A host fault before the container existed (`start` fails with `HostFault`): the execution
/// goes back to `enqueued`, is placed on the farm's other host and runs there to `done`; the
/// job's retries are untouched (no retry execution, `retry_count` 0) and the message is
/// acknowledged, not released.
#[tokio::test(start_paused = true)]
async fn host_fault_before_start_moves_to_another_host() {
    let faulty = Script {
        start_error: Some(host_fault("host-a")),
        ..Script::default()
    };
    let hosts = vec![
        FakeRuntime::new("host-a", faulty),
        FakeRuntime::new("host-b", Script::default()),
    ];
    scenario(hosts, |harness| async move {
        let job = job(60, 2, None);
        let id = run_job(&harness, &job).await;

        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Done);
        assert_eq!(stored.metadata.docker_host.as_deref(), Some("host-b"));
        assert_eq!(
            harness.store.status_history(id),
            [Pulling, Enqueued, Pulling, Running, Done]
        );
        let (host_a, host_b) = (&harness.runtimes[0], &harness.runtimes[1]);
        assert_eq!(
            host_a.calls().starts,
            1,
            "the first placement went to host-a"
        );
        assert!(created(host_a).is_empty());
        assert_eq!(created(host_b).len(), 1);
        assert_eq!(
            harness.store.job(job.job_id).unwrap().metadata.retry_count,
            0
        );
        assert_eq!(harness.store.executions_of(job.job_id).len(), 1);
        assert!(harness.queue.messages.log().pushes.is_empty(), "no retry");
        assert!(
            harness.reporter.reports().is_empty(),
            "not the job's failure"
        );
        assert_cleaned_up(&harness, id, &created(host_b)[0]).await;
    })
    .await;
}

/// A host fault after the container started (`wait` fails with `HostFault`): the message is
/// released for a later delivery (1 s on the first), neither acknowledged nor failed; the
/// execution stays `running` with its container recorded and the container is left alone. Once
/// the host answers again, the next delivery re-attaches to that container (no second one) and
/// finishes it `done` without consuming a retry.
#[tokio::test(start_paused = true)]
async fn host_fault_after_start_releases_the_message() {
    let faulty = Script {
        wait_error: Some(host_fault("host-a")),
        run_for: Some(Duration::from_secs(60)),
        ..Script::default()
    };
    scenario(host_a(faulty), |harness| async move {
        let job = job(600, 2, None);
        let execution = enqueue(&harness.store, &job);
        let id = execution.execution_id;
        let host = &harness.runtimes[0];

        harness.deliver(&execution, 1).await.finished().await;

        let messages = harness.queue.messages.log();
        assert_eq!(
            messages.releases,
            [(id.to_string(), Duration::from_secs(1))]
        );
        assert!(messages.acks.is_empty(), "{:?}", messages.acks);
        assert!(messages.fails.is_empty(), "{:?}", messages.fails);
        assert!(messages.pushes.is_empty(), "no retry");
        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Running);
        let containers = created(host);
        assert_eq!(stored.metadata.container_id.as_ref(), Some(&containers[0]));
        assert!(
            host.calls().removals.is_empty(),
            "the container is left to re-attach to"
        );
        assert!(host.calls().stops.is_empty());
        assert_notices(&harness, &[Notice::Started(id)]).await;

        host.rescript(|script| script.wait_error = None);
        harness.deliver(&execution, 2).await.finished().await;

        assert_eq!(harness.store.status(id), Some(Done));
        assert_eq!(created(host), containers, "no second container");
        assert_eq!(
            harness.store.job(job.job_id).unwrap().metadata.retry_count,
            0
        );
        eventually("the container is removed", || {
            host.calls().removals == containers
        })
        .await;
        assert!(host.running().is_empty());
        assert_eq!(harness.queue.messages.log().acks, [id.to_string()]);
        assert_notices(&harness, &[Notice::Started(id), Notice::Ended(id)]).await;
    })
    .await;
}

/// Re-attach after a redelivery: an execution stored `running` with its host and container id
/// (a node died while it ran) is waited for and collected where it runs; no image is pulled and
/// no container created; its slots are taken again directly (it runs whatever the limits say);
/// it ends `done` with the container's output, which is then removed, and the message is
/// acknowledged.
#[tokio::test(start_paused = true)]
async fn a_redelivered_running_execution_is_reattached() {
    scenario(host_a(Script::default()), |harness| async move {
        let job = job(600, 0, None);
        let mut execution = Execution::new(&job, None, Timestamp::now());
        let id = execution.execution_id;
        execution.status = Running;
        execution.started_at = Some(Timestamp::now());
        execution.metadata.docker_host = Some("host-a".into());
        execution.metadata.docker_port = Some(2375);
        execution.metadata.container_id = Some("earlier-container".into());
        harness.store.seed(&job, &[&execution]);
        let host = &harness.runtimes[0];
        host.seed_running(
            "earlier-container",
            &format!("fastlane-job-{id}"),
            Some(Duration::from_secs(5)),
        );

        harness.deliver(&execution, 2).await.finished().await;

        let calls = host.calls();
        assert!(calls.creations.is_empty(), "{:?}", calls.creations);
        assert_eq!((calls.pulls, calls.starts), (0, 0));
        assert_eq!(calls.waits, ["earlier-container"]);
        assert_eq!(calls.collects, ["earlier-container"]);
        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Done);
        assert_eq!(stored.exit_code, Some(0));
        assert_eq!(stored.log.as_deref(), Some(&b"hello\n"[..]));
        assert_eq!(
            harness.queue.slots.log().acquisitions,
            [(id.to_string(), vec![("farm:0".to_string(), 10)])]
        );
        eventually("the container is removed", || {
            host.calls().removals == ["earlier-container"]
        })
        .await;
        assert!(host.running().is_empty());
        assert_eq!(harness.queue.messages.log().acks, [id.to_string()]);
        assert_notices(&harness, &[Notice::Ended(id)]).await;
    })
    .await;
}

/// Asserts the last push was the retry of `failed`, due `delay` after the failure (`before` and
/// `after` bracket the JobActor's run on the wall clock, which is what due times are in).
fn assert_retry_pushed(
    harness: &Harness,
    failed: Uuid,
    delay: Duration,
    (before, after): (Timestamp, Timestamp),
) -> Execution {
    let retry_id = retry_execution_id(failed);
    let (message, due) = harness
        .queue
        .messages
        .log()
        .pushes
        .last()
        .cloned()
        .expect("a retry was pushed");
    assert_eq!(message.execution_id, retry_id);
    assert_eq!(message.id, retry_id.to_string());
    let delay = delay.as_micros() as i64;
    assert!(
        before.0 + delay <= due.0 && due.0 <= after.0 + delay,
        "due {due:?} is not {delay} µs after [{before:?}, {after:?}]"
    );
    let retry = harness.store.execution(retry_id).expect("retry stored");
    assert_eq!(retry.status, Enqueued);
    assert_eq!(retry.metadata.retry_of, Some(failed));
    retry
}

/// Runs `execution`'s first delivery to its end; returns the wall-clock bracket of the run.
async fn run_to_end(harness: &Harness, execution: &Execution) -> (Timestamp, Timestamp) {
    let before = Timestamp::now();
    harness.deliver(execution, 1).await.finished().await;
    (before, Timestamp::now())
}

fn failing() -> Script {
    Script {
        exit_code: 1,
        stderr: b"boom\n".to_vec(),
        ..Script::default()
    }
}

/// A container killed for memory fails saying so, in the engine's words when it reported
/// `OOMKilled` and as the likely cause when it only saw a SIGKILL under the memory limit.
#[tokio::test(start_paused = true)]
async fn a_container_killed_for_memory_fails_saying_so() {
    for reported in [true, false] {
        let script = Script {
            exit_code: KILLED_EXIT_CODE,
            out_of_memory: Some(reported),
            ..Script::default()
        };
        scenario(host_a(script), |harness| async move {
            let execution = enqueue(&harness.store, &job(60, 0, None));
            run_to_end(&harness, &execution).await;
            let stored = harness.store.execution(execution.execution_id).unwrap();
            assert_eq!(stored.status, Failed);
            let error = stored_error(&harness, execution.execution_id);
            assert!(error.contains("OOMKilled"), "{error}");
            assert!(error.contains("resources.memoryMB"), "{error}");
            assert_eq!(error.contains("most likely"), !reported, "{error}");
        })
        .await;
    }
}

/// Automatic retries with the job's back-off: a job with `retries: 2` whose container exits 1
/// gets a retry execution with the id derived from the failed one, pushed due `now +
/// backoff.delay(n)` (3 s, then 9 s with min 1 s and factor 3), and `retry_count` counts them;
/// the second retry failing creates no third.
#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff_until_retries_run_out() {
    scenario(host_a(failing()), |harness| async move {
        let backoff = Backoff {
            min_ms: 1_000,
            factor: 3.0,
            max_ms: 60_000,
        };
        let job = job(60, 2, Some(backoff));
        let first = enqueue(&harness.store, &job);
        let retry_count = || harness.store.job(job.job_id).unwrap().metadata.retry_count;

        let bracket = run_to_end(&harness, &first).await;
        let stored = harness.store.execution(first.execution_id).unwrap();
        assert_eq!((stored.status, stored.exit_code), (Failed, Some(1)));
        assert_eq!(stored_error(&harness, first.execution_id), "boom\n");
        let second = assert_retry_pushed(&harness, first.execution_id, backoff.delay(1), bracket);
        assert_eq!(retry_count(), 1);
        assert_eq!(
            harness.store.job(job.job_id).unwrap().metadata.enqueued_id,
            Some(second.execution_id.to_string())
        );

        let bracket = run_to_end(&harness, &second).await;
        assert_eq!(harness.store.status(second.execution_id), Some(Failed));
        let third = assert_retry_pushed(&harness, second.execution_id, backoff.delay(2), bracket);
        assert_eq!(backoff.delay(2), Duration::from_secs(9));
        assert_eq!(retry_count(), 2);

        run_to_end(&harness, &third).await;
        assert_eq!(harness.store.status(third.execution_id), Some(Failed));
        assert_eq!(
            harness.queue.messages.log().pushes.len(),
            2,
            "no third retry"
        );
        assert_eq!(harness.store.executions_of(job.job_id).len(), 3);
        assert_eq!(retry_count(), 2);
        let acks = harness.queue.messages.log().acks;
        let ids: Vec<String> = [&first, &second, &third]
            .iter()
            .map(|execution| execution.execution_id.to_string())
            .collect();
        assert_eq!(acks, ids);
    })
    .await;
}

/// A failed execution delivered again (its JobActor stored the failure and created the retry,
/// then the node died before the ack) is acknowledged without running, and its retry is not
/// created or counted a second time: the retry id is derived, the create is insert-if-absent.
#[tokio::test(start_paused = true)]
async fn a_redelivered_failure_is_not_retried_twice() {
    scenario(host_a(failing()), |harness| async move {
        let job = job(60, 2, None);
        let first = enqueue(&harness.store, &job);
        run_to_end(&harness, &first).await;
        assert_eq!(harness.queue.messages.log().pushes.len(), 1);

        harness.deliver(&first, 2).await.finished().await;

        assert_eq!(harness.queue.messages.log().pushes.len(), 1, "one retry");
        assert_eq!(
            harness.store.job(job.job_id).unwrap().metadata.retry_count,
            1
        );
        assert_eq!(harness.store.executions_of(job.job_id).len(), 2);
        assert_eq!(created(&harness.runtimes[0]).len(), 1, "not run again");
        assert_eq!(harness.store.status(first.execution_id), Some(Failed));
        let id = first.execution_id.to_string();
        assert_eq!(harness.queue.messages.log().acks, [id.clone(), id]);
    })
    .await;
}

/// Fencing: another runner claimed the execution while this one ran (its node was paused past
/// the lease and another node took the message). This runner's result write is refused by the
/// store, and it leaves without stopping or removing the container (the new runner owns it)
/// and without acknowledging the message; the stored record stays the new runner's.
#[tokio::test(start_paused = true)]
async fn a_runner_whose_claim_was_taken_leaves_everything_to_the_new_one() {
    let script = Script {
        run_for: Some(Duration::from_secs(60)),
        ..Script::default()
    };
    scenario(host_a(script), |harness| async move {
        let job = job(600, 0, None);
        let execution = enqueue(&harness.store, &job);
        let id = execution.execution_id;
        let run = harness.deliver(&execution, 1).await;
        eventually("the container runs", || {
            harness.store.status(id) == Some(Running)
        })
        .await;
        harness.store.claim(id);
        run.finished().await;

        assert_eq!(
            harness.store.status(id),
            Some(Running),
            "the result was refused"
        );
        assert_eq!(harness.store.fenced(), 1);
        let calls = harness.runtimes[0].calls();
        assert_eq!(calls.creations.len(), 1);
        assert!(calls.stops.is_empty(), "the container was not stopped");
        assert!(calls.removals.is_empty(), "the container was not removed");
        let log = harness.queue.messages.log();
        assert!(log.acks.is_empty(), "the message is the new runner's");
        assert!(log.releases.is_empty());
    })
    .await;
}

/// A stop written while a failure decides its retry (after the JobActor read the job, before
/// its write) wins: the retry's write is refused, the job read again has no retries left, and
/// no retry is created or queued; the stop's `retry_count` and cleared schedule stand.
#[tokio::test(start_paused = true)]
async fn a_stop_racing_the_retry_decision_wins() {
    scenario(host_a(failing()), |harness| async move {
        let job = job(60, 2, None);
        let first = enqueue(&harness.store, &job);
        harness.store.before_next_job_write(|job| {
            job.metadata.retry_count = job.metadata.retries + 1;
            job.schedule = None;
        });
        run_to_end(&harness, &first).await;
        assert_eq!(harness.store.status(first.execution_id), Some(Failed));
        assert!(
            harness.queue.messages.log().pushes.is_empty(),
            "no retry queued"
        );
        assert_eq!(harness.store.executions_of(job.job_id).len(), 1);
        let stored = harness.store.job(job.job_id).unwrap();
        assert_eq!(stored.metadata.retry_count, 3, "the stop stands");
        assert!(stored.pending.is_empty());
        assert_eq!(stored.version, 1, "only the stop was written");
    })
    .await;
}

/// `LeaseLost` (the poller's renewal found the lease gone): the JobActor leaves at once,
/// leaving the running container, the stored record and the message alone.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_leaves_the_container_running() {
    scenario(host_a(never_exits()), |harness| async move {
        let job = job(600, 0, None);
        let execution = enqueue(&harness.store, &job);
        let id = execution.execution_id;
        let run = harness.deliver(&execution, 1).await;
        eventually("the container runs", || {
            harness.store.status(id) == Some(Running)
        })
        .await;
        run.actor
            .cast(fastlane_actors::messages::JobMessage::LeaseLost)
            .expect("the job actor runs");
        run.finished().await;

        assert_eq!(harness.store.status(id), Some(Running));
        let calls = harness.runtimes[0].calls();
        assert!(calls.stops.is_empty() && calls.removals.is_empty());
        assert_eq!(harness.runtimes[0].running().len(), 1, "still running");
        let log = harness.queue.messages.log();
        assert!(log.acks.is_empty() && log.releases.is_empty());
    })
    .await;
}

/// Without a race the retry is decided by one write that records it pending, then created,
/// then taken off the job: nothing stays pending, and the job's version counts both writes.
#[tokio::test(start_paused = true)]
async fn a_retry_is_recorded_pending_then_created() {
    scenario(host_a(failing()), |harness| async move {
        let job = job(60, 2, None);
        let first = enqueue(&harness.store, &job);
        run_to_end(&harness, &first).await;
        let retry_id = retry_execution_id(first.execution_id);
        assert_eq!(harness.store.status(retry_id), Some(Enqueued));
        let stored = harness.store.job(job.job_id).unwrap();
        assert!(stored.pending.is_empty(), "{:?}", stored.pending);
        assert_eq!((stored.metadata.retry_count, stored.version), (1, 2));
    })
    .await;
}

/// The lists of `job`'s notifications the outbox of `id` owes, in the order they were owed.
fn owed_lists(harness: &Harness, id: Uuid) -> Vec<(String, String)> {
    let stored = harness.store.execution(id).expect("stored");
    stored
        .outbox
        .iter()
        .map(|entry| (entry.list.clone(), entry.target.to_string()))
        .collect()
}

fn notifying_job() -> fastlane_proto::Job {
    let mut job = job(60, 0, None);
    job.metadata.webhooks = serde_json::json!({
        "starts": [{"url": "http://hooks/start"}],
        "succeeds": [{"url": "http://hooks/ok"}],
        "fails": [{"url": "http://hooks/failed"}],
        "finishes": [{"url": "http://hooks/end"}],
    });
    job.metadata.emails = serde_json::json!({"finishes": ["ops@example.com"]});
    job
}

/// The notifications are owed in the writes that record the statuses: `starts` with `running`,
/// `succeeds` and `finishes` (hooks and e-mails) with `done`, each once, none for `fails`.
#[tokio::test(start_paused = true)]
async fn the_outbox_is_written_with_the_status() {
    scenario(host_a(Script::default()), |harness| async move {
        let job = notifying_job();
        let id = run_job(&harness, &job).await;
        assert_eq!(harness.store.status(id), Some(Done));
        assert_eq!(
            owed_lists(&harness, id),
            [
                ("starts".into(), r#"{"url":"http://hooks/start"}"#.into()),
                ("succeeds".into(), r#"{"url":"http://hooks/ok"}"#.into()),
                ("finishes".into(), r#"{"url":"http://hooks/end"}"#.into()),
                ("finishes".into(), r#""ops@example.com""#.into()),
            ]
        );
    })
    .await;
}

/// Stopping an execution no JobActor owns owes its `finishes` notifications, in the write that
/// stops it.
#[tokio::test(start_paused = true)]
async fn a_stop_of_an_unowned_execution_owes_finishes() {
    scenario(host_a(Script::default()), |harness| async move {
        let job = notifying_job();
        let execution = enqueue(&harness.store, &job);
        let id = execution.execution_id;
        stop_execution(&harness.services, id, STOP_REASON)
            .await
            .expect("stop");
        assert_eq!(harness.store.status(id), Some(Stopped));
        assert_eq!(
            owed_lists(&harness, id),
            [
                ("finishes".into(), r#"{"url":"http://hooks/end"}"#.into()),
                ("finishes".into(), r#""ops@example.com""#.into()),
            ]
        );
    })
    .await;
}

/// A stop always wins: sent to a runner whose claim was taken meanwhile, it is still stored
/// (`stopped` is written unfenced) and the container is stopped; the new runner's result would
/// then be refused by the terminal rule.
#[tokio::test(start_paused = true)]
async fn a_stop_wins_even_through_a_runner_that_lost_its_claim() {
    scenario(host_a(never_exits()), |harness| async move {
        let job = job(600, 0, None);
        let execution = enqueue(&harness.store, &job);
        let id = execution.execution_id;
        let run = harness.deliver(&execution, 1).await;
        eventually("the container runs", || {
            harness.store.status(id) == Some(Running)
        })
        .await;
        harness.store.claim(id);
        stop_execution(&harness.services, id, STOP_REASON)
            .await
            .expect("stop");
        run.finished().await;

        assert_eq!(harness.store.status(id), Some(Stopped));
        assert!(stored_error(&harness, id).starts_with(STOP_REASON));
        let calls = harness.runtimes[0].calls();
        assert_eq!(calls.stops.len(), 1, "the container was stopped");
    })
    .await;
}
