//! Logging through tracing: human-readable by default, JSON lines with `LOG_FORMAT=json`;
//! verbosity from `LOG_LEVEL` (default `info`) or `-v`/`-vv`/`-vvv` ([`verbosity_filter`]),
//! both overridden by `RUST_LOG`. Events of a JobActor
//! carry its task, job and execution ids through a span. (Error reporting to Sentry is an
//! adapter: `adapters::sentry`.)

use tracing_subscriber::EnvFilter;

/// The filter `-v` (1), `-vv` (2) or `-vvv` (3 or more) ask for, used instead of `LOG_LEVEL`:
/// info; debug for fastlane-node's own crates; debug for every crate (Docker, Redis, MongoDB
/// and HTTP clients included). `None` without `-v`. The original counted from ERROR (`-v`
/// WARN, `-vv` INFO, `-vvv` DEBUG); this node already logs at info by default.
pub fn verbosity_filter(count: u8) -> Option<&'static str> {
    match count {
        0 => None,
        1 => Some("info"),
        2 => Some("info,fastlane_node=debug,fastlane_actors=debug,fastlane_proto=debug"),
        _ => Some("debug"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v_adds_detail() {
        assert_eq!(verbosity_filter(0), None);
        assert_eq!(verbosity_filter(1), Some("info"));
        assert!(verbosity_filter(2).unwrap().contains("fastlane_node=debug"));
        assert_eq!(verbosity_filter(3), Some("debug"));
        assert_eq!(verbosity_filter(9), Some("debug"));
        for count in 1..4 {
            assert!(EnvFilter::try_new(verbosity_filter(count).unwrap()).is_ok());
        }
    }
}
