//! `fastlane-node prune`: removing the job containers nodes left behind, on every configured
//! host.

use super::{DockerRuntime, TlsFiles};
use crate::config::Config;
use bollard::query_parameters::ListContainersOptions;
use fastlane_actors::ports::{ContainerRuntime, RuntimeError, DEPLOYMENT_LABEL};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// A container removed by `prune`.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct PrunedContainer {
    pub host: String,
    pub name: String,
    pub id: String,
    pub image: String,
}

impl DockerRuntime {
    /// Removes every fastlane job container on this host that is not running and was created
    /// more than `older_than` ago (left behind by a crash, or whose result was stored but whose
    /// removal failed). Younger ones may still be collected by a node. As the reaper, it never
    /// touches another deployment's containers: only those labelled `deployment_id`, and
    /// unlabelled ones made before deployments were labelled.
    pub(crate) async fn prune(
        &self,
        older_than: Duration,
        deployment_id: Option<&str>,
    ) -> Result<Vec<PrunedContainer>, RuntimeError> {
        let cutoff = fastlane_proto::Timestamp::now().unix_seconds() - older_than.as_secs() as i64;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([
                (
                    "label".to_string(),
                    vec!["fastlane.execution_id".to_string()],
                ),
                (
                    "status".to_string(),
                    vec![
                        "created".to_string(),
                        "exited".to_string(),
                        "dead".to_string(),
                    ],
                ),
            ])),
            ..Default::default()
        };
        let containers = self
            .bounded(
                self.call_timeout,
                self.docker.list_containers(Some(options)),
            )
            .await?;
        let mut pruned = Vec::new();
        for container in containers {
            if container.created.unwrap_or(i64::MAX) > cutoff {
                continue;
            }
            let deployment = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(DEPLOYMENT_LABEL));
            if deployment.is_some_and(|label| Some(label.as_str()) != deployment_id) {
                continue;
            }
            let Some(id) = container.id else { continue };
            self.remove(&id).await?;
            pruned.push(PrunedContainer {
                host: self.endpoint.to_string(),
                name: container
                    .names
                    .unwrap_or_default()
                    .first()
                    .cloned()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                id,
                image: container.image.unwrap_or_default(),
            });
        }
        Ok(pruned)
    }
}

/// `fastlane-node prune`: removes leftover job containers (not running, created more than
/// `older_than` ago) on every configured host, one host after another, going on past a host
/// that fails. Exit code 1 when any host failed.
pub async fn prune(config: &Config, older_than: Duration) -> std::process::ExitCode {
    let call_timeout = Duration::from_secs(config.uint("DOCKER_CALL_TIMEOUT_SECONDS").max(1));
    let endpoints: BTreeSet<_> = config
        .farms
        .iter()
        .flat_map(|farm| farm.hosts.iter().cloned())
        .collect();
    let deployment_id = match crate::deployment_id(config, &config.data_dir(), false) {
        Ok(id) => id,
        Err(error) => {
            eprintln!("fastlane-node: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for endpoint in endpoints {
        let result = match DockerRuntime::connect(
            &endpoint,
            TlsFiles::from_config(config).as_ref(),
            call_timeout,
            call_timeout,
        ) {
            Ok(runtime) => runtime
                .prune(older_than, deployment_id.as_deref())
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(pruned) => {
                for container in pruned {
                    println!("{}", serde_json::to_string(&container).unwrap_or_default());
                }
            }
            Err(error) => {
                failed = true;
                eprintln!("fastlane-node: prune of {endpoint} failed: {error}");
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
