//! fastlane-node: the node. Wires configuration, adapters, actors and the gateway together in
//! one entry point, [`run`].

#![warn(unreachable_pub)]

pub mod adapters;
pub mod config;
pub mod data_dir;
pub mod gateway;
mod root_watch;
pub mod telemetry;

pub use adapters::docker::prune;

use adapters::docker::DockerRuntime;
use anyhow::Context;
use config::Config;
use fastlane_actors::ports::ContainerRuntime;
use fastlane_actors::root::{RootActor, RootArgs};
pub use fastlane_actors::Role;
use fastlane_actors::{Services, Settings};
use fastlane_proto::redact::Redactor;
use gateway::GatewaySettings;
use ractor::Actor;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpSocket;

/// Executions a node may hold leased beyond the farms' `maxRunning` (besides those parked at
/// the gate, which the gate bounds and the poller does not count): those being read, placed,
/// or given back because their pool is full.
const PARKED_ALLOWANCE: usize = 256;

/// The shortest queue lease (`QUEUE_LEASE_SECONDS`): renewals every quarter of it must not
/// become a busy loop, and a short pause must not cost a node its work.
const MIN_LEASE_SECONDS: u64 = 5;

/// How long in-flight HTTP requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the kernel holds for the gateway to accept (tokio's own default).
const LISTEN_BACKLOG: u32 = 1024;

/// Runs the node until `shutdown` completes, then stops taking requests, lets the ones in
/// flight finish (bounded), stops the actors and returns. Containers keep running; the next
/// start re-attaches to them.
///
/// `role` says what the node does (see [`Role`]): `Api` and `Worker` need the shared backends
/// (Redis and MongoDB), or `run` refuses to start.
pub async fn run(
    config: Config,
    bind: SocketAddr,
    role: Role,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Decided before anything is opened: a node that must not start touches nothing.
    check_role(&config, role)?;
    let access = gateway::access::Access::from_config(&config, bind).map_err(anyhow::Error::msg)?;
    let _sentry = adapters::sentry::init(config.optional("SENTRY_DSN"))?;
    let data_dir = config.data_dir();
    data_dir::prepare(&data_dir)?;
    // Held until `run` returns (the process ends): one node per data directory.
    let _lock = data_dir::lock(&data_dir)?;
    let backends = adapters::backends::Backends::open(&config).await?;
    let (node_id, previous_consumers) = consumer_id(&data_dir)?;
    let deployment_id = shared_deployment_id(&config, &data_dir, &backends).await?;
    // Whatever the backends made in DATA_DIR (SQLite's -wal and -shm) is private too.
    data_dir::tighten_files(&data_dir)?;
    // Bound before the settings, so that with `-p 0` the links in notifications name the
    // port given; it listens only once the node serves: until then a client is refused, not
    // left waiting while the queue is reconciled.
    let socket = match bind {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(bind)
        .with_context(|| format!("could not listen on {bind}"))?;
    let address = socket.local_addr()?;
    // How a browser on this machine reaches the node (`[::1]:8080` for an IPv6 address).
    let authority = if address.ip().is_unspecified() {
        format!("localhost:{}", address.port())
    } else {
        address.to_string()
    };

    let hard_timeout = config.uint("HARD_EXECUTION_TIMEOUT_SECONDS");
    let call_timeout = Duration::from_secs(config.uint("DOCKER_CALL_TIMEOUT_SECONDS").max(1));
    let wait_limit = Duration::from_secs(hard_timeout) + Duration::from_secs(120);
    let endpoints: BTreeSet<_> = config
        .farms
        .iter()
        .flat_map(|farm| farm.hosts.iter().cloned())
        .collect();
    let tls = adapters::docker::TlsFiles::from_config(&config);
    let output_max_bytes = config.uint("EXECUTION_OUTPUT_MAX_BYTES");
    let live_bytes_per_second = config.uint("LIVE_OUTPUT_MAX_BYTES_PER_SECOND");
    // Checked when the configuration was loaded.
    let registry_auth = Arc::new(
        adapters::docker::registry::RegistryAuth::parse(config.json("DOCKER_REGISTRY_AUTH"))
            .map_err(anyhow::Error::msg)?,
    );
    let runtimes = endpoints
        .iter()
        .map(|endpoint| {
            DockerRuntime::connect(endpoint, tls.as_ref(), call_timeout, wait_limit)
                .map(|runtime| {
                    runtime
                        .with_output_limit(output_max_bytes)
                        .with_live_output_pace(live_bytes_per_second)
                        .with_registry_auth(registry_auth.clone())
                })
                .map(|runtime| Arc::new(runtime) as Arc<dyn ContainerRuntime>)
                .with_context(|| match endpoint {
                    fastlane_proto::farm::DockerEndpoint::Local => "cannot use Docker".to_string(),
                    tcp => format!("invalid docker host {tcp}"),
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for endpoint in &endpoints {
        tracing::debug!(host = %describe_endpoint(endpoint), "docker host configured");
    }
    // In the background: a slow engine must not hold up the start.
    tokio::spawn(warn_unreachable_engines(
        endpoints.clone(),
        runtimes.clone(),
    ));
    if let Some(index) = config.farms.iter().position(|farm| farm.is_catch_all()) {
        if index + 1 != config.farms.len() {
            tracing::warn!(
                index,
                "a catch-all farm is not the last one: the farms after it never run anything"
            );
        }
    }

    fastlane_actors::metrics::set_max_tasks(config.uint("METRICS_MAX_TASKS") as usize);
    let redactor = Redactor::new(&config.string("ENV_BLACKLISTED_WORDS"));
    let lease_duration =
        Duration::from_secs(config.uint("QUEUE_LEASE_SECONDS").max(MIN_LEASE_SECONDS));
    let settings = Settings {
        role,
        node_id: node_id.clone(),
        previous_consumers,
        lease_duration,
        farms: config.farms.clone(),
        hard_timeout_seconds: hard_timeout,
        job_details_output_max_bytes: config.uint("JOB_DETAILS_OUTPUT_MAX_BYTES"),
        redactor: redactor.clone(),
        max_in_flight: config
            .farms
            .iter()
            .map(|farm| farm.max_running as usize)
            .sum::<usize>()
            + PARKED_ALLOWANCE,
        default_backoff: fastlane_proto::model::Backoff {
            min_ms: config.uint("EXPONENTIAL_BACKOFF_MIN_MS"),
            factor: config.float("EXPONENTIAL_BACKOFF_FACTOR").max(1.0),
            max_ms: 3_600_000,
        },
        webhook_backoff_min_ms: config.uint("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS"),
        queue_sweep_interval: match config.uint("QUEUE_SWEEP_INTERVAL_SECONDS") {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        },
        push_unfinished_periodically: backends.redis.is_some(),
        webhook_backoff_factor: config.float("WEBHOOKS_EXPONENTIAL_BACKOFF_FACTOR").max(1.0),
        deployment_id,
        container_lookup_limit: Duration::from_secs(
            config.uint("CONTAINER_LOOKUP_TIMEOUT_SECONDS"),
        ),
        reaper_interval: match config.uint("CONTAINER_REAPER_INTERVAL_SECONDS") {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        },
        reaper_grace: Duration::from_secs(config.uint("CONTAINER_REAPER_GRACE_SECONDS")),
        max_stop_grace: Duration::from_secs(config.uint("STOP_GRACE_PERIOD_MAX_SECONDS")),
        retention: fastlane_actors::retention::Retention {
            interval: match config.uint("RETENTION_INTERVAL_SECONDS") {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            kept_per_job: match config.uint("EXECUTIONS_KEPT_PER_JOB") {
                0 => None,
                kept => Some(kept),
            },
            max_age: match config.uint("EXECUTION_RETENTION_SECONDS") {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            settle: Duration::from_secs(config.uint("STOP_GRACE_PERIOD_MAX_SECONDS"))
                + lease_duration,
        },
        public_url: format!(
            "http://{}",
            config
                .optional("SERVER_NAME")
                .unwrap_or_else(|| authority.clone())
        ),
    };
    // Resolved once: the addresses webhooks may not reach (the farm's Docker hosts, Redis,
    // MongoDB, SMTP) besides the classes refused by default.
    let webhook_policy = adapters::webhooks::policy_from_config(&config).await?;
    let services = Services {
        store: backends.store.clone(),
        queue: backends.queue.clone(),
        slots: backends.slots.clone(),
        blacklist: backends.blacklist.clone(),
        webhooks: Arc::new(adapters::webhooks::HttpWebhooks::new(webhook_policy)),
        mailer: Arc::new(adapters::smtp::SmtpMailer::new(
            config.optional("SMTP_HOST"),
            u16::try_from(config.uint("SMTP_PORT")).context("invalid value for SMTP_PORT")?,
            config.bool("SMTP_USE_SSL"),
            config.optional("SMTP_USER"),
            config.optional("SMTP_PASSWORD"),
            config.optional("SMTP_FROM"),
            config.optional("SMTP_TLS_CA_FILE").map(Into::into),
        )?),
        reporter: Arc::new(adapters::sentry::SentryReporter),
        settings: Arc::new(settings),
    };
    let root_args = RootArgs {
        services,
        runtimes,
        breaker_max_fails: config.uint("DOCKER_CIRCUIT_BREAKER_MAX_FAILS").max(1) as u32,
        breaker_reset_timeout: Duration::from_secs(
            config.uint("DOCKER_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS"),
        ),
    };
    // The root runs under a watch that tells why it ended: a node whose actor system has ended
    // must not stay up answering 503 (see `root_watch.rs`).
    let (root_ended, mut root_end) = tokio::sync::oneshot::channel();
    let (watch, _) = Actor::spawn(None, root_watch::RootWatch, root_ended)
        .await
        .context("could not start the actors")?;
    let spawned = Actor::spawn_linked(
        Some("fastlane-root".to_string()),
        RootActor,
        root_args,
        watch.get_cell(),
    )
    .await;
    let (root, root_handle) = match spawned {
        Ok(spawned) => spawned,
        Err(error) => {
            watch.stop(None);
            return Err(anyhow::Error::msg(error.to_string()).context("could not start the actors"));
        }
    };

    let gateway_settings = Arc::new(GatewaySettings {
        debug: config.bool("DEBUG"),
        per_page: config.uint("PAGINATION_PER_PAGE"),
        task_jobs_per_page: config.uint("TASK_JOBS_PER_PAGE"),
        server_name: config.optional("SERVER_NAME"),
        redactor,
        enable_cors: config.bool("ENABLE_CORS"),
        cors_origins: config.string("CORS_ORIGINS"),
        access,
        call_timeout: Duration::from_millis(fastlane_actors::CALL_TIMEOUT_MS),
        farms: config.farms.clone(),
        backends: backends.names.clone(),
        limits: gateway::limits::Limits::from_config(&config),
        idempotency_ttl: Duration::from_secs(config.uint("IDEMPOTENCY_KEY_TTL_SECONDS")),
        role,
    });
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("could not listen on {bind}"))?;
    let open = format!("http://{authority}/");
    let (queue_backend, store_backend) = &backends.names;
    tracing::info!(
        %address,
        url = %open,
        data_dir = %data_dir.display(),
        queue = %queue_backend,
        store = %store_backend,
        role = role.as_str(),
        "fastlane-node listening: open {open}; data in {} (queue: {queue_backend}, store: {store_backend})",
        data_dir.display()
    );

    let mut root_failure = None;
    let until_stopped = async {
        tokio::select! {
            () = shutdown => {}
            reason = &mut root_end => {
                let reason = reason.unwrap_or_else(|_| "the root actor stopped".to_string());
                tracing::error!(%reason, "the actor system ended: stopping the node");
                root_failure = Some(reason);
            }
        }
    };
    gateway::server::serve(listener, gateway_settings, until_stopped, DRAIN_TIMEOUT).await;
    if let Some(reason) = root_failure {
        watch.stop(None);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, root_handle).await;
        release_leases(&backends, &node_id).await;
        anyhow::bail!("the actor system ended: {reason}");
    }
    let _ = ractor::call_t!(
        root,
        fastlane_actors::messages::RootMessage::PrepareShutdown,
        2_000
    );
    root.stop_children_and_wait(None, Some(DRAIN_TIMEOUT)).await;
    root.stop(None);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, root_handle).await;
    watch.stop(None);
    release_leases(&backends, &node_id).await;
    tracing::info!("stopped");
    Ok(())
}

/// An `api` or `worker` node shares its work with other processes, which only Redis (queue) and
/// MongoDB (store) allow: the embedded database is locked by one process (`DATA_DIR/lock`).
fn check_role(config: &Config, role: Role) -> anyhow::Result<()> {
    if role == Role::All {
        return Ok(());
    }
    let shared_queue = config.optional("REDIS_URL").is_some();
    let shared_store = adapters::mongo::MongoSettings::from_options(
        config.json("MONGODB_CONFIG"),
        config.optional("MONGODB_URL").as_deref(),
    )
    .is_ok_and(|settings| settings.is_some());
    anyhow::ensure!(
        shared_queue && shared_store,
        "--role {} needs the shared backends: set REDIS_URL and MONGODB_URL (or MONGODB_CONFIG); \
         with the embedded store one process does everything (--role all)",
        role.as_str()
    );
    Ok(())
}

/// A Docker host as a person reads it: `host:port`, or where the local engine is looked for.
fn describe_endpoint(endpoint: &fastlane_proto::farm::DockerEndpoint) -> String {
    match endpoint {
        fastlane_proto::farm::DockerEndpoint::Local => adapters::docker::local_docker_address(),
        tcp => tcp.to_string(),
    }
}

/// Says at start, in words a newcomer understands, which Docker engines do not answer (the
/// node still starts: a host may come back, and its circuit breaker keeps jobs away meanwhile).
async fn warn_unreachable_engines(
    endpoints: BTreeSet<fastlane_proto::farm::DockerEndpoint>,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
) {
    let pings = runtimes.iter().map(|runtime| runtime.ping());
    let answers = futures_util::future::join_all(pings).await;
    for (endpoint, answer) in endpoints.iter().zip(answers) {
        let Err(error) = answer else { continue };
        let address = describe_endpoint(endpoint);
        tracing::warn!(
            host = %address,
            %error,
            "the Docker engine at {address} does not answer; jobs wait until it does. {}",
            adapters::docker::DOCKER_ADVICE
        );
    }
}

/// Gives up this node's leases so another node re-attaches to its running containers now, not
/// when the leases expire; the next start of this node takes back what is left.
async fn release_leases(backends: &adapters::backends::Backends, node_id: &str) {
    match tokio::time::timeout(DRAIN_TIMEOUT, backends.queue.release_all(node_id, false)).await {
        Ok(Ok(released)) => tracing::info!(released, "leases given back"),
        Ok(Err(error)) => tracing::warn!(%error, "could not give back leases"),
        Err(_) => tracing::warn!("giving back leases timed out"),
    }
}

/// This process's queue consumer id, and the consumer ids of the previous lives of this data
/// directory, whose leases the reconciliation at start gives back.
///
/// The node id (`DATA_DIR/node-id`) is stable; the consumer id adds a random suffix per start
/// (`{node id}.{random}`), so a process never renews or releases leases it did not take. The
/// running process's consumer id is kept in `DATA_DIR/consumer-id` for the next start: the lock
/// on `DATA_DIR` guarantees that the process which wrote it has ended. The bare node id was the
/// consumer id of older versions and is released too.
fn consumer_id(data_dir: &std::path::Path) -> anyhow::Result<(String, Vec<String>)> {
    let node_id = node_id(data_dir)?;
    let path = data_dir.join("consumer-id");
    let mut previous = vec![node_id.clone()];
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id != node_id {
            previous.push(id.to_string());
        }
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let consumer = format!("{node_id}.{}", &suffix[..12]);
    data_dir::write_private_file(&path, consumer.as_bytes())?;
    Ok((consumer, previous))
}

/// The deployment's id (`DEPLOYMENT_ID`, else `DATA_DIR/deployment-id`, generated there once
/// when `create`): the label value that makes a container this deployment's. `None` when
/// neither is set and `create` is false.
pub fn deployment_id(
    config: &Config,
    data_dir: &std::path::Path,
    create: bool,
) -> anyhow::Result<Option<String>> {
    if let Some(id) = config.optional("DEPLOYMENT_ID") {
        anyhow::ensure!(
            valid_deployment_id(&id),
            "DEPLOYMENT_ID {id:?} is not 1 to 64 letters, digits, '.', '_' or '-'"
        );
        return Ok(Some(id));
    }
    let path = data_dir.join("deployment-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        anyhow::ensure!(
            valid_deployment_id(id),
            "{} holds {id:?}, not a deployment id",
            path.display()
        );
        return Ok(Some(id.to_string()));
    }
    if !create {
        return Ok(None);
    }
    let id = format!("deployment-{}", uuid::Uuid::new_v4());
    data_dir::write_private_file(&path, id.as_bytes())?;
    tracing::info!(deployment_id = %id, "generated this deployment's id");
    Ok(Some(id))
}

/// 1 to 64 letters, digits, '.', '_' or '-': safe as a Docker label value and a file's content.
fn valid_deployment_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

/// The deployment id this node labels its containers with. Configured (`DEPLOYMENT_ID`), it is
/// that; otherwise nodes sharing a Redis queue agree on the first id stored there (the one in
/// `DATA_DIR/deployment-id`, generated once, is this node's candidate and is overwritten with
/// the shared one, so `fastlane-node prune` on this machine knows it too); an embedded node
/// keeps its own.
async fn shared_deployment_id(
    config: &Config,
    data_dir: &std::path::Path,
    backends: &adapters::backends::Backends,
) -> anyhow::Result<String> {
    let local = deployment_id(config, data_dir, true)?.unwrap_or_default();
    let Some(redis) = backends.redis.as_ref() else {
        return Ok(local);
    };
    if config.optional("DEPLOYMENT_ID").is_some() {
        return Ok(local);
    }
    let shared = tokio::time::timeout(Duration::from_secs(10), redis.shared_deployment_id(&local))
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer for the shared deployment id"))?
        .map_err(|error| anyhow::anyhow!("could not read the shared deployment id: {error}"))?;
    anyhow::ensure!(
        valid_deployment_id(&shared),
        "Redis holds {shared:?} as the deployment id, not 1 to 64 letters, digits, '.', '_' or '-'"
    );
    if shared != local {
        data_dir::write_private_file(&data_dir.join("deployment-id"), shared.as_bytes())?;
        tracing::info!(deployment_id = %shared, "using the deployment id shared by the nodes of this queue");
    }
    Ok(shared)
}

/// This node's stable id, kept in the data directory: the prefix of its consumer ids.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = format!("node-{}", uuid::Uuid::new_v4());
    data_dir::write_private_file(&path, id.as_bytes())?;
    Ok(id)
}
