//! One container per execution, ever: the JobActor's decisions when its execution's container
//! may already exist (a start that failed on a host fault after the create, a redelivery with a
//! host recorded but no container id), on fake Docker hosts under tokio's paused clock.
//!
//! `cargo test -p fastlane-actors --test container_lookup`

mod fakes;

use fakes::runtime::{FakeRuntime, Script};
use fakes::{
    eventually, job, scenario, Harness, Notice, CONTAINER_LOOKUP_LIMIT, DEPLOYMENT_ID, TASK_ID,
};
use fastlane_actors::lifecycle::stop_execution;
use fastlane_actors::ports::{RuntimeError, DEPLOYMENT_LABEL, EXECUTION_LABEL};
use fastlane_proto::ExecutionStatus::{Done, Enqueued, Failed, Pulling, Running, Stopped};
use fastlane_proto::{Execution, Job, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

fn host_fault(host: &str) -> RuntimeError {
    RuntimeError::HostFault {
        endpoint: format!("{host}:2375"),
        message: "no answer within 30 seconds".into(),
    }
}

/// Two hosts: `host-a` behaving as `script_a` says, `host-b` as the default.
fn two_hosts(script_a: Script) -> Vec<FakeRuntime> {
    vec![
        FakeRuntime::new("host-a", script_a),
        FakeRuntime::new("host-b", Script::default()),
    ]
}

/// Containers created on every host of the harness.
fn creations(harness: &Harness) -> Vec<String> {
    harness
        .runtimes
        .iter()
        .flat_map(|runtime| runtime.calls().creations)
        .map(|(id, _)| id)
        .collect()
}

/// An execution of `job` stored as a JobActor leaves it when it dies between creating the
/// container on `host-a` and recording its id: `pulling`, host recorded, no container id;
/// last written `written_ago` before now.
fn pulling_on_host_a(harness: &Harness, job: &Job, written_ago: Duration) -> Execution {
    let mut execution = Execution::new(job, None, Timestamp::now());
    execution.status = Pulling;
    execution.metadata.docker_host = Some("host-a".into());
    execution.metadata.docker_port = Some(2375);
    execution.last_modified_at = Timestamp(Timestamp::now().0 - written_ago.as_micros() as i64);
    harness.store.seed(job, &[&execution]);
    execution
}

fn labels(deployment: &str, execution: &Execution) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEPLOYMENT_LABEL.to_string(), deployment.to_string()),
        (
            EXECUTION_LABEL.to_string(),
            execution.execution_id.to_string(),
        ),
        ("fastlane.task_id".to_string(), TASK_ID.to_string()),
    ])
}

fn name(execution: &Execution) -> String {
    format!("fastlane-job-{}", execution.execution_id)
}

fn stored_error(harness: &Harness, execution: &Execution) -> String {
    let stored = harness.store.execution(execution.execution_id).unwrap();
    String::from_utf8_lossy(&stored.error.unwrap_or_default()).into_owned()
}

/// A start that fails on a host fault after Docker created the container (the slow engine's
/// case): the JobActor looks the container up by name on that host, finds it with its labels
/// and takes it over there. One container was ever created, on `host-a`; `host-b` was never
/// asked; the execution ends `done` without going back to `enqueued`.
#[tokio::test(start_paused = true)]
async fn a_start_fault_after_the_create_takes_the_container_over() {
    let slow = Script {
        start_fault_after_create: Some(host_fault("host-a")),
        ..Script::default()
    };
    scenario(two_hosts(slow), |harness| async move {
        let job = job(60, 0, None);
        let execution = fakes::enqueue(&harness.store, &job);
        let id = execution.execution_id;
        let host_a = harness.runtimes[0].clone();
        // The take-over's start finds the container by name and answers at once.
        harness.deliver(&execution, 1).await.finished().await;

        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Done, "{:?}", stored.error);
        assert_eq!(stored.metadata.docker_host.as_deref(), Some("host-a"));
        assert_eq!(harness.store.status_history(id), [Pulling, Running, Done]);
        assert_eq!(creations(&harness).len(), 1, "one container, ever");
        assert_eq!(host_a.calls().finds, [name(&execution)]);
        assert_eq!(harness.runtimes[1].calls().starts, 0, "host-b never asked");
        assert_eq!(harness.queue.messages.log().acks, [id.to_string()]);
    })
    .await;
}

/// A redelivered execution recorded `pulling` on `host-a` without a container id, whose
/// container exists there with this deployment's labels: it is taken over where it is (no
/// container created anywhere) and collected to `done`.
#[tokio::test(start_paused = true)]
async fn a_redelivery_takes_over_the_container_on_the_recorded_host() {
    scenario(two_hosts(Script::default()), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(&harness, &job, Duration::ZERO);
        let host_a = harness.runtimes[0].clone();
        host_a.seed_labelled(
            "earlier",
            &name(&execution),
            labels(DEPLOYMENT_ID, &execution),
            Some(Duration::from_secs(5)),
        );

        harness.deliver(&execution, 2).await.finished().await;

        let stored = harness.store.execution(execution.execution_id).unwrap();
        assert_eq!(stored.status, Done, "{:?}", stored.error);
        assert_eq!(stored.metadata.container_id.as_deref(), Some("earlier"));
        assert!(creations(&harness).is_empty(), "{:?}", creations(&harness));
        assert_eq!(host_a.calls().finds, [name(&execution)]);
        assert_eq!(harness.runtimes[1].calls().starts, 0);
        eventually("the container is removed", || {
            host_a.calls().removals == ["earlier"]
        })
        .await;
    })
    .await;
}

/// A redelivered execution recorded on `host-a` whose container is not there (the crash came
/// before the create, or the create is still on its way): it is placed on `host-a` again,
/// where Docker would refuse a second container of the name, and runs once.
#[tokio::test(start_paused = true)]
async fn a_redelivery_finding_no_container_places_the_execution() {
    scenario(two_hosts(Script::default()), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(&harness, &job, Duration::ZERO);

        harness.deliver(&execution, 2).await.finished().await;

        let id = execution.execution_id;
        assert_eq!(harness.store.status(id), Some(Done));
        assert_eq!(creations(&harness).len(), 1);
        assert_eq!(harness.runtimes[0].calls().finds, [name(&execution)]);
        assert_eq!(
            harness.runtimes[1].calls().starts,
            0,
            "placed on the recorded host, not by load"
        );
        assert_eq!(
            harness.store.status_history(id),
            [Enqueued, Pulling, Running, Done]
        );
    })
    .await;
}

/// The recorded host does not answer the lookup: the message is released with the host-retry
/// delay and nothing is created anywhere (the container may run on the silent host); the
/// execution keeps its recorded host for the next delivery's lookup.
#[tokio::test(start_paused = true)]
async fn a_silent_recorded_host_is_waited_for() {
    let silent = Script {
        find_error: Some(host_fault("host-a")),
        ..Script::default()
    };
    scenario(two_hosts(silent), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(&harness, &job, Duration::from_secs(30));
        let id = execution.execution_id;

        harness.deliver(&execution, 1).await.finished().await;

        let messages = harness.queue.messages.log();
        assert_eq!(
            messages.releases,
            [(id.to_string(), Duration::from_secs(1))]
        );
        assert!(messages.acks.is_empty());
        assert!(creations(&harness).is_empty(), "{:?}", creations(&harness));
        let stored = harness.store.execution(id).unwrap();
        assert_eq!(stored.status, Pulling);
        assert_eq!(stored.metadata.docker_host.as_deref(), Some("host-a"));
    })
    .await;
}

/// The recorded host stayed silent past `CONTAINER_LOOKUP_TIMEOUT_SECONDS` since the
/// execution's last write: the execution fails with an error naming the host and the reason it
/// was not run elsewhere; nothing is created; the message is acknowledged.
#[tokio::test(start_paused = true)]
async fn past_the_lookup_limit_the_execution_fails() {
    let silent = Script {
        find_error: Some(host_fault("host-a")),
        ..Script::default()
    };
    scenario(two_hosts(silent), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(
            &harness,
            &job,
            CONTAINER_LOOKUP_LIMIT + Duration::from_secs(1),
        );
        let id = execution.execution_id;

        harness.deliver(&execution, 4).await.finished().await;

        assert_eq!(harness.store.status(id), Some(Failed));
        let error = stored_error(&harness, &execution);
        assert!(
            error.contains("host-a:2375 did not answer for 600 seconds"),
            "{error}"
        );
        assert!(error.contains("not started elsewhere"), "{error}");
        assert!(creations(&harness).is_empty());
        assert_eq!(harness.queue.messages.log().acks, [id.to_string()]);
        assert_eq!(harness.reporter.reports().len(), 1);
    })
    .await;
}

/// A stop while the lookup is under way: `stopped` is stored at once; the container the lookup
/// then finds (ours) is removed, nothing is created or started, the notifier hears of the end
/// and the message is acknowledged.
#[tokio::test(start_paused = true)]
async fn a_stop_during_the_lookup_removes_what_it_finds() {
    let slow = Script {
        find_delay: Duration::from_secs(10),
        ..Script::default()
    };
    scenario(two_hosts(slow), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(&harness, &job, Duration::ZERO);
        let id = execution.execution_id;
        let host_a = harness.runtimes[0].clone();
        host_a.seed_labelled(
            "earlier",
            &name(&execution),
            labels(DEPLOYMENT_ID, &execution),
            None,
        );
        let run = harness.deliver(&execution, 2).await;
        eventually("the lookup is under way", || {
            !harness.queue.slots.log().acquisitions.is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        stop_execution(&harness.services, id, "Stopped by the test.")
            .await
            .expect("stop");
        run.finished().await;

        assert_eq!(harness.store.status(id), Some(Stopped));
        assert!(creations(&harness).is_empty());
        assert_eq!(host_a.calls().starts, 0);
        eventually("the container is removed", || {
            host_a.calls().removals == ["earlier"]
        })
        .await;
        assert_eq!(harness.queue.messages.log().acks, [id.to_string()]);
        assert_eq!(harness.notices(), [Notice::Ended(id)]);
    })
    .await;
}

/// A container with the execution's name but another deployment's label, found by the lookup
/// on redelivery: the execution fails with an error naming the other deployment; the container
/// is neither stopped nor removed, and nothing is created.
#[tokio::test(start_paused = true)]
async fn a_found_container_of_another_deployment_is_left_alone() {
    scenario(two_hosts(Script::default()), |harness| async move {
        let job = job(60, 0, None);
        let execution = pulling_on_host_a(&harness, &job, Duration::ZERO);
        let host_a = harness.runtimes[0].clone();
        host_a.seed_labelled(
            "theirs",
            &name(&execution),
            labels("other-deployment", &execution),
            None,
        );

        harness.deliver(&execution, 2).await.finished().await;

        assert_eq!(harness.store.status(execution.execution_id), Some(Failed));
        let error = stored_error(&harness, &execution);
        assert!(
            error.contains(
                "belongs to another deployment (fastlane.deployment_id=other-deployment)"
            ),
            "{error}"
        );
        let calls = host_a.calls();
        assert!(
            calls.stops.is_empty() && calls.removals.is_empty(),
            "{calls:?}"
        );
        assert_eq!(host_a.running(), ["theirs"]);
        assert!(creations(&harness).is_empty());
    })
    .await;
}

/// A fresh start whose name is taken by another deployment's container (the create's name
/// conflict): the runtime refuses to take it over, the execution fails as the job's own
/// failure (no other host tried), and the container is left alone.
#[tokio::test(start_paused = true)]
async fn a_name_conflict_with_another_deployment_fails_the_execution() {
    scenario(
        vec![FakeRuntime::new("host-a", Script::default())],
        |harness| async move {
            let job = job(60, 0, None);
            let execution = fakes::enqueue(&harness.store, &job);
            let host_a = harness.runtimes[0].clone();
            host_a.seed_labelled(
                "theirs",
                &name(&execution),
                labels("other-deployment", &execution),
                None,
            );

            harness.deliver(&execution, 1).await.finished().await;

            assert_eq!(harness.store.status(execution.execution_id), Some(Failed));
            assert!(stored_error(&harness, &execution).contains("another deployment"));
            let calls = host_a.calls();
            assert!(
                calls.stops.is_empty() && calls.removals.is_empty(),
                "{calls:?}"
            );
            assert_eq!(host_a.running(), ["theirs"]);
        },
    )
    .await;
}
