//! End-to-end: idempotent submits (issue 15, point 7). A POST with an `Idempotency-Key` creates
//! its job once: a repeat with the same body (sequential, concurrent, or on another node of a
//! shared deployment) answers the first answer and creates nothing; another body gets 409; the
//! key holds for `IDEMPOTENCY_KEY_TTL_SECONDS`.

mod common;

use common::{docker_hosts, image, Node};
use serde_json::{json, Value};
use uuid::Uuid;

async fn post(node: &Node, task: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/tasks/{task}/")))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let response = common::openapi::checked("POST", response).await;
    let status = response.status().as_u16();
    if status != 200 {
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
    }
    (status, response.json().await.unwrap())
}

async fn jobs_of(node: &Node, task: &str) -> Vec<Value> {
    node.get_json(&format!("/tasks/{task}/")).await["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_repeated_post_creates_one_job() {
    let node = Node::start(&[]).await;
    let task = "idempotent";
    let body = json!({"image": image(), "command": "echo once"});
    let (status, first) = post(&node, task, "order-42", &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post(&node, task, "order-42", &body).await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "the first answer, again");
    node.wait_finished(first["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(jobs_of(&node, task).await.len(), 1);
    let job = node
        .get_json(common::path_of(first["jobUrl"].as_str().unwrap()))
        .await;
    assert_eq!(job["job"]["executionCount"], 1, "{job}");

    // Another body under the same key.
    let (status, refused) = post(
        &node,
        task,
        "order-42",
        &json!({"image": image(), "command": "echo twice"}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("different request body"));
    // The same key on another task is another key.
    let (status, other) = post(&node, "idempotent-other", "order-42", &body).await;
    assert_eq!(status, 200);
    assert_ne!(other["jobId"], first["jobId"]);
    // Keys that are not 1 to 255 visible ASCII characters.
    for key in ["has space", &"k".repeat(256)] {
        let (status, answer) = post(&node, task, key, &body).await;
        assert_eq!(status, 400, "{key}: {answer}");
        assert!(answer["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    // A refused body does not use the key up.
    let (status, _) = post(&node, task, "bad-then-good", &json!({"image": image()})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&node, task, "bad-then-good", &body).await;
    assert_eq!(status, 200);
    assert_eq!(jobs_of(&node, task).await.len(), 2);
}

#[tokio::test]
async fn concurrent_repeats_create_one_job() {
    let node = Node::start(&[]).await;
    let body = json!({"image": image(), "command": "echo once"});
    let mut posts = tokio::task::JoinSet::new();
    let url = node.url("/tasks/idempotent-burst/");
    for _ in 0..20 {
        let (url, body) = (url.clone(), body.clone());
        posts.spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Idempotency-Key", "burst")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        });
    }
    let answers: Vec<Value> = posts.join_all().await;
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    assert_eq!(jobs_of(&node, "idempotent-burst").await.len(), 1);
}

#[tokio::test]
async fn a_key_holds_for_its_ttl_only() {
    let node = Node::start(&[("IDEMPOTENCY_KEY_TTL_SECONDS", "1")]).await;
    let body = json!({"image": image(), "command": "echo once"});
    let (_, first) = post(&node, "idempotent-ttl", "k", &body).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, second) = post(&node, "idempotent-ttl", "k", &body).await;
    assert_eq!(status, 200);
    assert_ne!(second["jobId"], first["jobId"], "the key expired");
    assert_eq!(jobs_of(&node, "idempotent-ttl").await.len(), 2);
}

/// Two nodes of one deployment (Redis + a MongoDB-compatible store): a repeat on the other node,
/// and a burst over both, create one job.
#[tokio::test]
async fn the_key_holds_across_nodes() {
    let name = format!("idem{}", Uuid::new_v4().simple());
    let mongo = std::env::var("FASTLANE_TEST_SECANTUS_URL").expect("FASTLANE_TEST_SECANTUS_URL");
    let base = mongo
        .rsplit_once('/')
        .map_or(mongo.as_str(), |(base, _)| base);
    let farms = json!([{"match": "", "hosts": [docker_hosts()[0]], "maxRunning": 4}]).to_string();
    let redis = std::env::var("FASTLANE_TEST_REDIS_URL").expect("FASTLANE_TEST_REDIS_URL");
    let mongo_url = format!("{base}/{name}");
    let vars = [
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", name.as_str()),
        ("MONGODB_URL", mongo_url.as_str()),
        ("DOCKER_HOSTS", farms.as_str()),
    ];
    let (a, b) = (Node::start(&vars).await, Node::start(&vars).await);
    let body = json!({"image": image(), "command": "echo once"});
    let (status, first) = post(&a, "idempotent-shared", "k1", &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post(&b, "idempotent-shared", "k1", &body).await;
    assert_eq!(status, 200);
    assert_eq!(again["jobId"], first["jobId"]);
    assert_eq!(again["executionId"], first["executionId"]);
    let mut posts = tokio::task::JoinSet::new();
    for index in 0..12 {
        let url = if index % 2 == 0 {
            a.url("/tasks/idempotent-shared/")
        } else {
            b.url("/tasks/idempotent-shared/")
        };
        let body = body.clone();
        posts.spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Idempotency-Key", "k2")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["jobId"].clone()
        });
    }
    let job_ids: Vec<Value> = posts.join_all().await;
    assert!(job_ids.iter().all(|id| *id == job_ids[0]), "{job_ids:?}");
    assert_eq!(jobs_of(&a, "idempotent-shared").await.len(), 2);
}
