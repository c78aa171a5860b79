//! `GET /openapi.json`: the description covers every route of the router, is OpenAPI 3.1 in
//! structure, every schema in it compiles and every reference resolves, and the node serves the
//! same document the tests validate answers against (`common::openapi`).

mod common;

use common::{openapi, Node};
use serde_json::{json, Value};

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.push(target);
            }
            object.values().for_each(|value| refs(value, found));
        }
        Value::Array(items) => items.iter().for_each(|value| refs(value, found)),
        _ => {}
    }
}

#[test]
fn the_description_is_openapi_3_1_and_covers_every_route() {
    let document = openapi::document();
    let version = document["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());
    let paths = document["paths"].as_object().expect("paths");
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let routes = fastlane_node::gateway::openapi::routes();
    assert!(routes.len() >= 27, "the router has {} rows", routes.len());
    for (method, path) in &routes {
        let operation = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not described"))[method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert!(operation["operationId"].is_string(), "{method} {path}");
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('2') || status == "101"),
            "{method} {path} documents no success"
        );
        for (status, response) in responses {
            assert!(
                response["description"].is_string(),
                "{method} {path} {status}"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/json"]["schema"].is_object(),
                    "{method} {path} {status} has no error JSON"
                );
            }
        }
        // Every declared path parameter is in the template, and every capture declared.
        for name in path.split('/').filter_map(|part| part.strip_prefix('{')) {
            let name = name.trim_end_matches('}');
            let declared = operation["parameters"].as_array().is_some_and(|params| {
                params
                    .iter()
                    .any(|param| param["name"] == name && param["in"] == "path")
            });
            assert!(declared, "{method} {path} does not declare {{{name}}}");
        }
    }
    let described: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        routes.len(),
        "the description has routes the router lacks"
    );
    let mut found = Vec::new();
    refs(document, &mut found);
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(schemas.contains_key(name), "{target} does not resolve");
    }
    // The headers the gateway sets are described.
    let stdout = &paths["/tasks/{task}/jobs/{job}/stdout"]["get"]["responses"]["200"];
    assert!(stdout["headers"]["Fastlane-Exit-Code"].is_object());
    let enqueue = &paths["/tasks/{task}"]["post"];
    assert!(enqueue["requestBody"]["content"]["application/json"]["schema"].is_object());
    assert!(enqueue["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    // Every schema compiles as JSON Schema 2020-12 with the document's components.
    for name in schemas.keys() {
        let root = json!({
            "components": document["components"],
            "$ref": format!("#/components/schemas/{name}"),
        });
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("schema {name} does not compile: {error}"));
    }
}

#[tokio::test]
async fn the_node_serves_the_description_and_its_answers_match_it() {
    let node = Node::start(&[]).await;
    let served = node.get_json("/openapi.json").await;
    assert_eq!(&served, openapi::document());
    // Errors of routes, methods, bodies and ids, all checked against the description.
    assert_eq!(node.get("/nowhere/").await.status(), 404);
    let (status, body) = node.post_empty("/status/").await;
    assert_eq!((status, body["operation"].as_str()), (405, Some("route")));
    let (status, _) = node.post_empty("/tasks/t/").await;
    assert_eq!(status, 400);
    assert_eq!(node.get("/tasks/t/jobs/not-a-uuid/").await.status(), 404);
    assert_eq!(node.get("/tasks/?page=0").await.status(), 400);
    assert_eq!(node.get("/search/").await.status(), 400);
    let (status, _) = node
        .post_empty(&format!("/tasks/t/jobs/{}/retry", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    // A job's whole life: enqueue, details, execution, output, status.
    let enqueued = node
        .post_job(
            "openapi-task",
            json!({"image": common::image(), "command": "echo hi", "envs": {"SECRET_TOKEN": "x"},
                   "metadata": {"who": "openapi"}, "retries": 1}),
        )
        .await;
    let execution = node
        .wait_finished(enqueued["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    let job = node
        .get_json(common::path_of(enqueued["jobUrl"].as_str().unwrap()))
        .await;
    assert_eq!(job["job"]["executions"].as_array().unwrap().len(), 1);
    let stdout = node
        .get(&format!(
            "{}stdout",
            common::path_of(enqueued["jobUrl"].as_str().unwrap())
        ))
        .await;
    assert_eq!(stdout.headers()["fastlane-exit-code"], "0");
    node.get_json("/tasks/").await;
    node.get_json("/search/?query=openapi").await;
    node.get_json("/tasks/openapi-task/").await;
    node.get_json("/status/").await;
    node.get_json("/healthcheck").await;
    let cron = node
        .post_job(
            "openapi-task",
            json!({"image": common::image(), "command": "true", "cron": "0 0 1 1 *",
                   "overlap": "allow", "backoff": {"minMs": 10}}),
        )
        .await;
    assert!(cron["executionId"].is_null(), "{cron}");
    let cron_job = node
        .get_json(common::path_of(cron["jobUrl"].as_str().unwrap()))
        .await;
    assert_eq!(cron_job["job"]["schedule"]["overlap"], "allow");
    let (status, _) = node
        .post_empty(&format!(
            "{}stop/",
            common::path_of(cron["jobUrl"].as_str().unwrap())
        ))
        .await;
    assert_eq!(status, 200);
}
