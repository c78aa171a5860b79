//! Logging through tracing: human-readable by default, JSON lines with `LOG_FORMAT=json`;
//! verbosity from `LOG_LEVEL` (default `info`), overridden by `RUST_LOG`. Events of a JobActor
//! carry its task, job and execution ids through a span. (Error reporting to Sentry is an
//! adapter: `adapters::sentry`.)

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (once; later calls change nothing).
pub fn init(json: bool, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a collector gets plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let _ = result;
}
