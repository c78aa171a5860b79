//! Submits a job to a running fastlane-node, waits for it to finish, prints its output.
//!
//!     cargo run --release -- start &                    # a node on the local Docker engine
//!     cargo run --example submit_job -- http://localhost:10000 busybox:1 'echo hello'
//!
//! Arguments: node URL, image, command (all optional; defaults as above).

use serde_json::{json, Value};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://localhost:10000".into());
    let image = args.next().unwrap_or_else(|| "busybox:1".into());
    let command = args.next().unwrap_or_else(|| "echo hello".into());
    let client = reqwest::Client::new();
    let posted: Value = client
        .post(format!("{url}/tasks/example-task/"))
        .json(&json!({"image": image, "command": command}))
        .send()
        .await?
        .json()
        .await?;
    println!("posted: {posted}");
    let execution_url = posted["executionUrl"]
        .as_str()
        .ok_or("no executionUrl in answer")?;
    loop {
        let details: Value = client.get(execution_url).send().await?.json().await?;
        let execution = &details["execution"];
        match execution["status"].as_str() {
            Some("enqueued" | "pulling" | "running") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            _ => {
                println!(
                    "status: {}, exit code: {}",
                    execution["status"], execution["exitCode"]
                );
                println!("stdout:\n{}", execution["log"].as_str().unwrap_or(""));
                println!("stderr:\n{}", execution["error"].as_str().unwrap_or(""));
                return Ok(());
            }
        }
    }
}
