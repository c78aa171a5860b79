//! `fastlane-node`: `start` runs a node, `config` prints every option, `version` the version.

use clap::{Parser, Subcommand};
use fastlane_node::config::{self, Config};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fastlane-node",
    version,
    about = "Runs jobs as Docker containers on a farm of hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the HTTP API and the workers.
    Start {
        /// A TOML configuration file (environment variables override it).
        #[arg(short = 'c', long = "config-file")]
        config: Option<PathBuf>,
        /// Address to listen on. Loopback by default: any other address needs credentials
        /// (BASIC_AUTH_*, API_TOKENS) or ALLOW_ANONYMOUS=true.
        #[arg(short = 'b', long = "bind", default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Port to listen on.
        #[arg(short = 'p', long = "port", default_value_t = 10000)]
        port: u16,
        /// What the node does: `api` (HTTP API and scheduler, runs no containers), `worker`
        /// (runs containers; serves only /healthcheck, /status/ and /metrics) or `all`. `api`
        /// and `worker` need REDIS_URL and MONGODB_URL.
        #[arg(long = "role", default_value = "all", value_parser = ["all", "api", "worker"])]
        role: String,
        /// More log output: -v info, -vv debug for fastlane-node, -vvv debug for everything
        /// (instead of LOG_LEVEL; RUST_LOG, when set, still decides).
        #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Remove leftover job containers (not running) on every host of every farm; keeps going
    /// past a failing host. Prints one JSON object per removed container.
    Prune {
        /// A TOML configuration file (environment variables override it).
        #[arg(short = 'c', long = "config-file")]
        config: Option<PathBuf>,
        /// Only containers created at least this many seconds ago (younger ones may still be
        /// collected by a running node).
        #[arg(long = "older-than", default_value_t = 3600)]
        older_than: u64,
    },
    /// Print every configuration option with its default and meaning.
    Config,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{}", config::describe());
            ExitCode::SUCCESS
        }
        Command::Prune { config, older_than } => {
            let config = match Config::load(config.as_deref()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("fastlane-node: configuration error: {error}");
                    return ExitCode::from(2);
                }
            };
            match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime.block_on(fastlane_node::prune(
                    &config,
                    std::time::Duration::from_secs(older_than),
                )),
                Err(error) => {
                    eprintln!("fastlane-node: could not start the runtime: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Version => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Start {
            config,
            bind,
            port,
            role,
            verbose,
        } => {
            let role = fastlane_node::Role::parse(&role).unwrap_or_default();
            let config = match Config::load(config.as_deref()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("fastlane-node: configuration error: {error}");
                    return ExitCode::from(2);
                }
            };
            let level = fastlane_node::telemetry::verbosity_filter(verbose)
                .map_or_else(|| config.string("LOG_LEVEL"), str::to_string);
            fastlane_node::telemetry::init(config.string("LOG_FORMAT") == "json", &level);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("fastlane-node: could not start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(fastlane_node::run(
                config,
                SocketAddr::new(bind, port),
                role,
                shutdown_signal(),
            ));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fastlane-node: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
