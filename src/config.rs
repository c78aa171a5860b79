//! Configuration: built-in defaults < TOML file (`-c FILE`) < environment variables named exactly
//! as the original's options. Every value is parsed by its option's type; a bad value stops
//! start-up with a message naming the option.
//!
//! One table, [`OPTIONS`], defines each option's name, type, default and meaning; `fastlane-node
//! config` prints it as a commented TOML file.

use fastlane_proto::farm::{parse_farms, Farm};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod bounds;
mod secrets;

use bounds::{check_bound, upper_bound};
use secrets::{is_secret_option, scrub, secret_texts};

/// The type of an option, which decides how its text is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// A non-negative integer.
    UInt,
    /// A non-negative number.
    Float,
    Str,
    /// A string; empty means unset.
    OptStr,
    /// JSON (in the environment: JSON text; in the file: a TOML value or a JSON string).
    Json,
}

/// One configuration option.
pub struct OptionSpec {
    pub name: &'static str,
    pub group: &'static str,
    pub kind: Kind,
    /// The default, as JSON text.
    pub default: &'static str,
    pub help: &'static str,
}

/// Every option the node reads.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "DEBUG", group: "General", kind: Kind::Bool, default: "false", help: "Pretty-print JSON responses." },
    OptionSpec { name: "ENV", group: "General", kind: Kind::Str, default: "\"production\"", help: "Environment name (informational)." },
    OptionSpec { name: "SECRET_KEY", group: "General", kind: Kind::Str, default: "\"\"", help: "Kept for compatibility; unused." },
    OptionSpec { name: "ENABLE_CORS", group: "General", kind: Kind::Bool, default: "true", help: "Add CORS headers to every response." },
    OptionSpec { name: "CORS_ORIGINS", group: "General", kind: Kind::Str, default: "\"*\"", help: "Allowed origins: '*' or a comma-separated list." },
    OptionSpec { name: "SERVER_NAME", group: "General", kind: Kind::OptStr, default: "\"\"", help: "host[:port] used in absolute URLs; empty = the request's Host header." },
    OptionSpec { name: "SQLITE_SYNCHRONOUS", group: "General", kind: Kind::Str, default: "\"full\"", help: "How the embedded database commits: full = each commit is on disk before it is acknowledged (nothing acknowledged is lost to a power failure; concurrent calls share one flush); normal = faster lone commits, but a power failure may lose the last acknowledged ones." },
    OptionSpec { name: "DATA_DIR", group: "General", kind: Kind::Str, default: "\"./fastlane-data\"", help: "Where the embedded store and queue keep their files." },
    OptionSpec { name: "DEPLOYMENT_ID", group: "General", kind: Kind::OptStr, default: "\"\"", help: "Label value of this deployment's containers (fastlane.deployment_id): a node takes over or reaps only containers that carry it, never another deployment's on a shared Docker host. Letters, digits, '.', '_', '-', at most 64. Empty = generated once and kept in DATA_DIR/deployment-id; nodes sharing a Redis queue (REDIS_URL) agree on the first one stored there, so they need no value here." },
    OptionSpec { name: "LOG_FORMAT", group: "General", kind: Kind::Str, default: "\"text\"", help: "'text' (human-readable) or 'json' (one JSON object per line). Verbosity: RUST_LOG." },
    OptionSpec { name: "LOG_LEVEL", group: "General", kind: Kind::Str, default: "\"info\"", help: "Log verbosity (error, warn, info, debug, trace, or a tracing filter); RUST_LOG wins when set." },
    OptionSpec { name: "REDIS_URL", group: "Redis", kind: Kind::OptStr, default: "\"\"", help: "Queue backend shared by several nodes: redis://, rediss://, redis+sentinel://host:port[,host:port]/service[/db], redis+cluster://host:port[,host:port]; empty = the embedded queue under DATA_DIR." },
    OptionSpec { name: "REDIS_KEY_PREFIX", group: "Redis", kind: Kind::Str, default: "\"fastlane\"", help: "Hash tag of every Redis key: deployments sharing one Redis use different prefixes." },
    OptionSpec { name: "WORKER_SLEEP_TIME_MS", group: "Worker", kind: Kind::UInt, default: "1000", help: "Kept for compatibility; the poller is woken on every enqueue." },
    OptionSpec { name: "QUEUE_SWEEP_INTERVAL_SECONDS", group: "Worker", kind: Kind::UInt, default: "120", help: "How often a node with a shared Redis queue pushes every unfinished execution to it again (a no-op for those still queued), recovering messages Redis lost (the embedded queue loses none: it is pushed at start only), and how often dead-lettered executions are ended as failed; 0 = only at start." },
    OptionSpec { name: "QUEUE_LEASE_SECONDS", group: "Worker", kind: Kind::UInt, default: "60", help: "How long a leased message stays with its node without being renewed (renewed every quarter of it): a node paused or gone this long loses its work to another node. At least 5." },
    OptionSpec { name: "HARD_EXECUTION_TIMEOUT_SECONDS", group: "Worker", kind: Kind::UInt, default: "1800", help: "Default and maximum execution timeout." },
    OptionSpec { name: "EXPONENTIAL_BACKOFF_MIN_MS", group: "Worker", kind: Kind::UInt, default: "1000", help: "Job retry base delay." },
    OptionSpec { name: "EXPONENTIAL_BACKOFF_FACTOR", group: "Worker", kind: Kind::Float, default: "2", help: "Job retry delay factor." },
    OptionSpec { name: "WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", group: "Worker", kind: Kind::UInt, default: "5000", help: "Webhook retry base delay." },
    OptionSpec { name: "WEBHOOKS_EXPONENTIAL_BACKOFF_FACTOR", group: "Worker", kind: Kind::Float, default: "2", help: "Webhook retry delay factor." },
    OptionSpec { name: "WEBHOOKS_ALLOW_NETWORKS", group: "Worker", kind: Kind::Str, default: "\"\"", help: "Comma-separated CIDRs webhooks may reach although refused by default (loopback, link-local, unspecified, multicast, broadcast, and the machines of the Docker hosts, Redis, MongoDB and SMTP server), e.g. 127.0.0.0/8,10.0.0.0/8. The exact address and port of those services stay refused." },
    OptionSpec { name: "EXECUTOR", group: "Worker", kind: Kind::Str, default: "\"docker\"", help: "Container executor (only 'docker')." },
    OptionSpec { name: "DOCKER_HOSTS", group: "Docker Executor", kind: Kind::Json, default: "null", help: "Farms: [{\"match\": regex, \"hosts\": [\"host:port\"], \"maxRunning\": n}]; null = the local engine (DOCKER_HOST or the default socket)." },
    OptionSpec { name: "DOCKER_TLS_CA", group: "Docker Executor", kind: Kind::OptStr, default: "\"\"", help: "CA certificate (PEM) that signed the https:// hosts' certificates." },
    OptionSpec { name: "DOCKER_TLS_CERT", group: "Docker Executor", kind: Kind::OptStr, default: "\"\"", help: "Client certificate (PEM) for https:// hosts." },
    OptionSpec { name: "DOCKER_TLS_KEY", group: "Docker Executor", kind: Kind::OptStr, default: "\"\"", help: "Client key (PEM) for https:// hosts." },
    OptionSpec { name: "DOCKER_CIRCUIT_BREAKER_MAX_FAILS", group: "Docker Executor", kind: Kind::UInt, default: "5", help: "Consecutive host faults that open a host's circuit." },
    OptionSpec { name: "DOCKER_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "60", help: "Open -> half-open delay." },
    OptionSpec { name: "DOCKER_CALL_TIMEOUT_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "30", help: "Timeout of one Docker API call (pulls get 20 times this)." },
    OptionSpec { name: "CONTAINER_LOOKUP_TIMEOUT_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "600", help: "How long an execution whose container may exist on a host that does not answer (its start timed out, or its node died between creating and recording the container) waits for that host, from the execution's last write; past it the execution fails rather than run elsewhere (it could run twice), and the job's retries decide what comes next." },
    OptionSpec { name: "CONTAINER_REAPER_INTERVAL_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "60", help: "How often each node removes this deployment's containers that no unfinished execution owns (its execution is missing, ended, or runs elsewhere), on every host; 0 = never." },
    OptionSpec { name: "CONTAINER_REAPER_GRACE_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "60", help: "Age a container (and an ended execution) must reach before the reaper may remove it: younger ones may be between their creation and the write that records them, or being collected." },
    OptionSpec { name: "EXECUTION_OUTPUT_MAX_BYTES", group: "Docker Executor", kind: Kind::UInt, default: "67108864", help: "Most bytes of stdout and of stderr stored per execution: beyond it the first and last halves are kept around one line saying how many bytes were left out; 0 = unlimited." },
    OptionSpec { name: "STOP_GRACE_PERIOD_MAX_SECONDS", group: "Docker Executor", kind: Kind::UInt, default: "300", help: "The longest SIGTERM → SIGKILL delay a job's stopGracePeriodSeconds may ask for (longer asks are cut to it). Jobs that do not ask get 5 s on a stop and 1 s on a timeout." },
    OptionSpec { name: "DOCKER_REGISTRY_AUTH", group: "Docker Executor", kind: Kind::Json, default: "{}", help: "Logins for private registries, sent with pulls of their images: {\"registry.example.com\": {\"username\": \"…\", \"password\": \"…\"}, \"127.0.0.1:5000\": {\"identitytoken\": \"…\"}} (Docker Hub as docker.io). Never logged or shown. A pull the registry refuses fails the execution with the registry's message; it is not the host's fault." },
    OptionSpec { name: "LIVE_OUTPUT_MAX_BYTES_PER_SECOND", group: "Docker Executor", kind: Kind::UInt, default: "1048576", help: "Most bytes a second a node reads of a watched container's live output (one stream per container, shared by its watchers); a container that writes faster for 5 s in a row is skipped ahead to its last lines, with a marker line. Reading a chatty container back as fast as it writes doubles its Docker engine's work and slows every other container there. The stored output is not affected. 0 = unlimited." },
    OptionSpec { name: "MONGODB_CONFIG", group: "Models", kind: Kind::Json, default: "null", help: "Store backend shared by several nodes: {\"host\": \"mongodb://…\", \"db\": \"fastlane\", \"serverSelectionTimeoutMS\": n}; null = MONGODB_URL, or the embedded store under DATA_DIR." },
    OptionSpec { name: "MONGODB_URL", group: "Models", kind: Kind::OptStr, default: "\"\"", help: "Store backend as a plain mongodb:// URI (database from its path, else 'fastlane'); used when MONGODB_CONFIG is null." },
    OptionSpec { name: "ERROR_HANDLERS", group: "Errors", kind: Kind::Json, default: "[\"sentry\"]", help: "Error reporters." },
    OptionSpec { name: "SENTRY_DSN", group: "Errors", kind: Kind::OptStr, default: "\"\"", help: "Sentry DSN; empty disables reporting." },
    OptionSpec { name: "ENV_BLACKLISTED_WORDS", group: "API", kind: Kind::Str, default: "\"password,key,secret,client_id,token,pass,pwd,auth,credential,dsn,private,cookie,session\"", help: "Env names containing one of these words are shown as *** (webhook header values and URL query values always are)." },
    OptionSpec { name: "JOB_DETAILS_OUTPUT_MAX_BYTES", group: "API", kind: Kind::UInt, default: "65536", help: "Most bytes of each execution's log and error shown in a job's details (the end; `logTruncated`/`errorTruncated` say when cut); the output routes serve all of it. 0 = unlimited." },
    OptionSpec { name: "EXECUTIONS_KEPT_PER_JOB", group: "API", kind: Kind::UInt, default: "100", help: "Executions kept per job (the newest; their outputs with them): older finished ones are removed in the background once finished for STOP_GRACE_PERIOD_MAX_SECONDS + QUEUE_LEASE_SECONDS; the job's executionCount still counts them. 0 = all." },
    OptionSpec { name: "EXECUTION_RETENTION_SECONDS", group: "API", kind: Kind::UInt, default: "2592000", help: "Age past which finished executions (with their outputs) and dead letters are removed in the background (30 days); a job's newest execution and executions owing a notification stay. 0 = forever." },
    OptionSpec { name: "RETENTION_INTERVAL_SECONDS", group: "API", kind: Kind::UInt, default: "60", help: "How often a node removes what EXECUTIONS_KEPT_PER_JOB and EXECUTION_RETENTION_SECONDS no longer keep, in batches of 100 with pauses between them; 0 = never." },
    OptionSpec { name: "IDEMPOTENCY_KEY_TTL_SECONDS", group: "API", kind: Kind::UInt, default: "86400", help: "How long an Idempotency-Key of a POST /tasks/{task}/ holds: a repeat with the same body answers the first answer and creates nothing, one with another body gets 409; afterwards the key may be used again." },
    OptionSpec { name: "METRICS_MAX_TASKS", group: "API", kind: Kind::UInt, default: "500", help: "Distinct tasks that get a task label of their own in /metrics; executions of further tasks are counted under task=\"_other\" (bounds the number of series)." },
    OptionSpec { name: "PAGINATION_PER_PAGE", group: "API", kind: Kind::UInt, default: "10", help: "Page size of /tasks/ and /search/." },
    OptionSpec { name: "TASK_JOBS_PER_PAGE", group: "API", kind: Kind::UInt, default: "100", help: "Page size of a task's jobs in GET /tasks/{task}/?page=N (1 to 10000): a task of any size is answered one bounded page at a time." },
    OptionSpec { name: "SMTP_USE_SSL", group: "Email", kind: Kind::Bool, default: "false", help: "STARTTLS after connecting." },
    OptionSpec { name: "SMTP_HOST", group: "Email", kind: Kind::OptStr, default: "\"\"", help: "SMTP host." },
    OptionSpec { name: "SMTP_PORT", group: "Email", kind: Kind::UInt, default: "25", help: "SMTP port." },
    OptionSpec { name: "SMTP_USER", group: "Email", kind: Kind::OptStr, default: "\"\"", help: "SMTP login user." },
    OptionSpec { name: "SMTP_PASSWORD", group: "Email", kind: Kind::OptStr, default: "\"\"", help: "SMTP login password (never logged)." },
    OptionSpec { name: "SMTP_FROM", group: "Email", kind: Kind::OptStr, default: "\"\"", help: "From address." },
    OptionSpec { name: "SMTP_TLS_CA_FILE", group: "Email", kind: Kind::OptStr, default: "\"\"", help: "PEM file of CA certificates (or a self-signed server certificate) trusted for STARTTLS besides the public roots, for a private mail relay; empty = the public roots only." },
    OptionSpec { name: "SMTP_ALLOW_PLAINTEXT_AUTH", group: "Email", kind: Kind::Bool, default: "false", help: "Allow sending SMTP_USER/SMTP_PASSWORD without SMTP_USE_SSL (in clear text); otherwise that combination is a start-up error." },
    OptionSpec { name: "BASIC_AUTH_USERNAME", group: "Auth", kind: Kind::OptStr, default: "\"\"", help: "With BASIC_AUTH_PASSWORD, requires HTTP basic auth." },
    OptionSpec { name: "BASIC_AUTH_PASSWORD", group: "Auth", kind: Kind::OptStr, default: "\"\"", help: "See BASIC_AUTH_USERNAME." },
    OptionSpec { name: "BASIC_AUTH_REALM", group: "Auth", kind: Kind::Str, default: "\"\"", help: "Realm of the WWW-Authenticate header." },
    OptionSpec { name: "API_TOKENS", group: "Auth", kind: Kind::Json, default: "[]", help: "API tokens, sent as 'Authorization: Bearer <token>': [{\"name\": \"ci\", \"sha256\": \"<the token's SHA-256 in hex, never the token>\", \"scopes\": [\"read\", \"submit\", \"admin\"]}]. Scopes are independent: read = GETs, WebSockets, stream pages; submit = create/replace jobs, stop, retry; admin = the host blacklist and deleting jobs and tasks. Basic auth has every scope." },
    OptionSpec { name: "ALLOW_ANONYMOUS", group: "Auth", kind: Kind::Bool, default: "false", help: "Start without credentials on a non-loopback address (-b): anyone who can reach the node can run containers on its hosts. Warned at start and in /status/." },
    OptionSpec { name: "ALLOWED_HOSTS", group: "Auth", kind: Kind::Str, default: "\"\"", help: "Without credentials, the Host header must be loopback, an IP literal of the bind address, SERVER_NAME or one of these comma-separated host[:port] names ('*' = any); anything else is 403 (DNS rebinding)." },
    OptionSpec { name: "MAX_CONNECTIONS", group: "Limits", kind: Kind::UInt, default: "1024", help: "Open HTTP and WebSocket connections; beyond it the node accepts no more until one closes; 0 = unlimited." },
    OptionSpec { name: "MAX_IN_FLIGHT_REQUESTS", group: "Limits", kind: Kind::UInt, default: "512", help: "Requests served at once (open WebSockets not counted); beyond it 503 with Retry-After: 1; 0 = unlimited." },
    OptionSpec { name: "REQUEST_BODY_TIMEOUT_SECONDS", group: "Limits", kind: Kind::UInt, default: "30", help: "Time a request body may take to arrive; beyond it 408 and the connection is closed; 0 = no limit." },
    OptionSpec { name: "WEBSOCKET_PING_INTERVAL_SECONDS", group: "Limits", kind: Kind::UInt, default: "20", help: "How often the node pings a WebSocket client; 0 = never." },
    OptionSpec { name: "WEBSOCKET_IDLE_TIMEOUT_SECONDS", group: "Limits", kind: Kind::UInt, default: "60", help: "A WebSocket from which nothing (not even a pong) arrived for this long, or that does not take a frame for this long, is closed (1001, reason 'idle'); 0 = never." },
];

/// A configuration error; the message names the option.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The parsed configuration.
#[derive(Clone, Debug)]
pub struct Config {
    values: BTreeMap<&'static str, Value>,
    /// The options the environment sets, even to an empty value (an unset variable in a
    /// deployment template gives one).
    set: BTreeSet<&'static str>,
    pub farms: Vec<Farm>,
}

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    ///
    /// An error never quotes the value of a secret-bearing option (passwords, URLs, DSNs,
    /// tokens): whatever a parser's message says, those values are replaced by `***`.
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut secrets = Vec::new();
        Self::load_checked(file, &env, &mut secrets).map_err(|error| scrub(error, &secrets))
    }

    fn load_checked(
        file: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
        secrets: &mut Vec<String>,
    ) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        let mut set = BTreeSet::new();
        for option in OPTIONS {
            let default = serde_json::from_str(option.default).expect("defaults are valid JSON");
            values.insert(option.name, default);
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigError(format!(
                    "Configuration file not found at path {}: {error}",
                    path.display()
                ))
            })?;
            // toml's own message quotes the offending line, which may hold a password: only
            // its short message and the line number are shown.
            let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
                let line = error.span().map_or(0, |span| {
                    text[..span.start.min(text.len())].matches('\n').count() + 1
                });
                ConfigError(format!(
                    "{}: invalid TOML at line {line}: {}",
                    path.display(),
                    error.message()
                ))
            })?;
            for (key, value) in table {
                if is_secret_option(&key) {
                    secrets.extend(secret_texts(&value.to_string()));
                    if let Some(text) = value.as_str() {
                        secrets.extend(secret_texts(text));
                    }
                }
                let option = OPTIONS
                    .iter()
                    .find(|option| option.name == key)
                    .ok_or_else(|| {
                        ConfigError(format!("{}: unknown option {key}", path.display()))
                    })?;
                let json = serde_json::to_value(&value)
                    .map_err(|error| ConfigError(format!("{key}: {error}")))?;
                values.insert(option.name, check(option, json)?);
            }
        }
        for option in OPTIONS {
            if let Some(text) = env(option.name) {
                if is_secret_option(option.name) {
                    secrets.extend(secret_texts(&text));
                }
                values.insert(option.name, parse_env(option, &text)?);
                set.insert(option.name);
            }
        }
        let farms = match &values["DOCKER_HOSTS"] {
            Value::Null => vec![Farm::local()],
            value => parse_farms(value)
                .map_err(|error| ConfigError(format!("invalid value for DOCKER_HOSTS: {error}")))?,
        };
        let config = Config { values, set, farms };
        let uses_tls = config
            .farms
            .iter()
            .flat_map(|farm| &farm.hosts)
            .any(|host| host.is_tls());
        if uses_tls {
            for name in ["DOCKER_TLS_CA", "DOCKER_TLS_CERT", "DOCKER_TLS_KEY"] {
                let path = config.optional(name).ok_or_else(|| {
                    ConfigError(format!(
                        "{name} must be set: DOCKER_HOSTS has https:// hosts"
                    ))
                })?;
                if !Path::new(&path).is_file() {
                    return Err(ConfigError(format!(
                        "invalid value for {name}: no file at {path}"
                    )));
                }
            }
        }
        for option in OPTIONS {
            check_bound(option, &config.values[option.name])?;
        }
        let smtp_credentials =
            config.optional("SMTP_USER").is_some() && config.optional("SMTP_PASSWORD").is_some();
        if config.optional("SMTP_HOST").is_some()
            && smtp_credentials
            && !config.bool("SMTP_USE_SSL")
            && !config.bool("SMTP_ALLOW_PLAINTEXT_AUTH")
        {
            return Err(ConfigError(
                "SMTP_USER and SMTP_PASSWORD would be sent unencrypted: set SMTP_USE_SSL=true \
                 (STARTTLS), or SMTP_ALLOW_PLAINTEXT_AUTH=true to accept that"
                    .into(),
            ));
        }
        if config.uint("PAGINATION_PER_PAGE") == 0 {
            return Err(ConfigError(
                "invalid value for PAGINATION_PER_PAGE: must be at least 1".into(),
            ));
        }
        if !(1..=10_000).contains(&config.uint("TASK_JOBS_PER_PAGE")) {
            return Err(ConfigError(
                "invalid value for TASK_JOBS_PER_PAGE: must be 1 to 10000".into(),
            ));
        }
        if config.uint("HARD_EXECUTION_TIMEOUT_SECONDS") == 0 {
            return Err(ConfigError(
                "invalid value for HARD_EXECUTION_TIMEOUT_SECONDS: must be at least 1".into(),
            ));
        }
        if !matches!(config.string("LOG_FORMAT").as_str(), "text" | "json") {
            return Err(ConfigError(
                "invalid value for LOG_FORMAT: expected 'text' or 'json'".into(),
            ));
        }
        if config.string("EXECUTOR") != "docker"
            && config.string("EXECUTOR") != "fastlane.worker.docker"
        {
            return Err(ConfigError(
                "invalid value for EXECUTOR: only 'docker' is supported".into(),
            ));
        }
        crate::adapters::webhooks::parse_networks(&config.string("WEBHOOKS_ALLOW_NETWORKS"))
            .map_err(ConfigError)?;
        if let Some(url) = config.optional("REDIS_URL") {
            crate::adapters::redis::parse_url(&url).map_err(ConfigError)?;
        }
        crate::adapters::mongo::MongoSettings::from_options(
            config.json("MONGODB_CONFIG"),
            config.optional("MONGODB_URL").as_deref(),
        )
        .map_err(ConfigError)?;
        crate::adapters::docker::registry::RegistryAuth::parse(config.json("DOCKER_REGISTRY_AUTH"))
            .map_err(|error| {
                ConfigError(format!("invalid value for DOCKER_REGISTRY_AUTH: {error}"))
            })?;
        config.check_auth()?;
        let prefix = config.string("REDIS_KEY_PREFIX");
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(ConfigError(
                "invalid value for REDIS_KEY_PREFIX: expected a non-empty name without braces"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// Basic auth is both names or neither, never an empty one in the environment (an empty
    /// value set by mistake must not leave the node open; in the file `""` is the documented
    /// "off"); `API_TOKENS` is well formed.
    fn check_auth(&self) -> Result<(), ConfigError> {
        let (user, password) = ("BASIC_AUTH_USERNAME", "BASIC_AUTH_PASSWORD");
        for name in [user, password] {
            if self.set.contains(name) && self.string(name).trim().is_empty() {
                return Err(ConfigError(format!(
                    "invalid value for {name}: it is set but empty; set both {user} and \
                     {password}, or neither"
                )));
            }
        }
        if self.optional(user).is_some() != self.optional(password).is_some() {
            return Err(ConfigError(format!(
                "invalid value for {user}/{password}: set both, or neither"
            )));
        }
        crate::gateway::access::check_tokens(self.json("API_TOKENS"))
            .map_err(|error| ConfigError(format!("invalid value for API_TOKENS: {error}")))
    }

    fn value(&self, name: &str) -> &Value {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("option {name} is not defined"))
    }

    pub fn bool(&self, name: &str) -> bool {
        self.value(name).as_bool().unwrap_or(false)
    }

    pub fn uint(&self, name: &str) -> u64 {
        self.value(name).as_u64().unwrap_or(0)
    }

    pub fn float(&self, name: &str) -> f64 {
        self.value(name).as_f64().unwrap_or(0.0)
    }

    pub fn string(&self, name: &str) -> String {
        self.value(name).as_str().unwrap_or_default().to_string()
    }

    /// A string option, `None` when empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.string(name)).filter(|value| !value.is_empty())
    }

    pub fn json(&self, name: &str) -> &Value {
        self.value(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.string("DATA_DIR"))
    }
}

fn invalid(option: &OptionSpec, expected: &str, got: &str) -> ConfigError {
    if is_secret_option(option.name) {
        return ConfigError(format!(
            "invalid value for {}: expected {expected} (value not shown: it may hold a secret)",
            option.name
        ));
    }
    ConfigError(format!(
        "invalid value for {}: expected {expected}, got {got:?}",
        option.name
    ))
}

fn parse_env(option: &OptionSpec, text: &str) -> Result<Value, ConfigError> {
    let trimmed = text.trim();
    let value = match option.kind {
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" | "" => Value::Bool(false),
            _ => return Err(invalid(option, "a boolean (true/false)", text)),
        },
        Kind::UInt => match trimmed.parse::<u64>() {
            Ok(number) => Value::from(number),
            // All digits but no u64: too large, said as such rather than "not a number".
            Err(_) if !trimmed.is_empty() && trimmed.bytes().all(|byte| byte.is_ascii_digit()) => {
                return Err(ConfigError(format!(
                    "invalid value for {}: at most {} allowed",
                    option.name,
                    upper_bound(option.name)
                )))
            }
            Err(_) => return Err(invalid(option, "a non-negative integer", text)),
        },
        Kind::Float => trimmed
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite() && *number >= 0.0)
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| invalid(option, "a non-negative number", text))?,
        Kind::Str | Kind::OptStr => Value::String(text.to_string()),
        Kind::Json if trimmed.is_empty() => Value::Null,
        Kind::Json => serde_json::from_str(trimmed).map_err(|_| invalid(option, "JSON", text))?,
    };
    Ok(value)
}

/// Checks a value from the file against the option's type.
fn check(option: &OptionSpec, value: Value) -> Result<Value, ConfigError> {
    let shown = value.to_string();
    let ok = match option.kind {
        Kind::Bool => value.is_boolean(),
        Kind::UInt => value.is_u64(),
        Kind::Float => value.as_f64().is_some_and(|number| number >= 0.0),
        Kind::Str | Kind::OptStr => value.is_string(),
        Kind::Json => {
            if let Value::String(text) = &value {
                return parse_env(option, text);
            }
            true
        }
    };
    if ok {
        Ok(value)
    } else {
        let expected = match option.kind {
            Kind::Bool => "a boolean",
            Kind::UInt => "a non-negative integer",
            Kind::Float => "a non-negative number",
            _ => "a string",
        };
        Err(invalid(option, expected, &shown))
    }
}

/// The commented default configuration, as `fastlane-node config` prints it.
pub fn describe() -> String {
    let mut text = String::from(
        "# fastlane-node configuration. Every option can also be set by an environment variable\n\
         # of the same name, which wins over this file. Values are parsed by type.\n",
    );
    let mut group = "";
    for option in OPTIONS {
        if option.group != group {
            group = option.group;
            text.push_str(&format!("\n################ {group} ################\n"));
        }
        let default = match option.kind {
            Kind::Json => serde_json::to_string(option.default).expect("string"),
            _ => option.default.to_string(),
        };
        text.push_str(&format!(
            "\n# {}\n# {} = {}\n",
            option.help, option.name, default
        ));
    }
    text
}

/// The configuration of `env` alone (no file), for the tests of this module and its children.
#[cfg(test)]
fn load_env(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(None, |name| env.get(name).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_env(env)
    }

    #[test]
    fn env_values_are_parsed_by_type() {
        let config = load(&[
            ("HARD_EXECUTION_TIMEOUT_SECONDS", "60"),
            ("DEBUG", "True"),
            ("EXPONENTIAL_BACKOFF_FACTOR", "1.5"),
            (
                "DOCKER_HOSTS",
                r#"[{"match": "", "hosts": ["localhost:2375"], "maxRunning": 2}]"#,
            ),
        ])
        .unwrap();
        assert_eq!(config.uint("HARD_EXECUTION_TIMEOUT_SECONDS"), 60);
        assert!(config.bool("DEBUG"));
        assert_eq!(config.float("EXPONENTIAL_BACKOFF_FACTOR"), 1.5);
        assert_eq!(config.farms[0].max_running, 2);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (name, value) in [
            ("HARD_EXECUTION_TIMEOUT_SECONDS", "abc"),
            ("HARD_EXECUTION_TIMEOUT_SECONDS", "-1"),
            ("DEBUG", "maybe"),
            ("DOCKER_HOSTS", "[{"),
            ("DOCKER_HOSTS", r#"[{"hosts": ["nohost"]}]"#),
            ("PAGINATION_PER_PAGE", "0"),
            ("TASK_JOBS_PER_PAGE", "0"),
            ("TASK_JOBS_PER_PAGE", "10001"),
            ("EXPONENTIAL_BACKOFF_FACTOR", "NaN"),
            ("BASIC_AUTH_USERNAME", ""),
            ("BASIC_AUTH_PASSWORD", " "),
            ("API_TOKENS", r#"[{"name": "a"}]"#),
        ] {
            let error = load(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    /// SMTP credentials over a plain connection need an explicit opt-in.
    #[test]
    fn smtp_plaintext_credentials_are_refused() {
        let base = [
            ("SMTP_HOST", "mail.example"),
            ("SMTP_USER", "me"),
            ("SMTP_PASSWORD", "hunter22"),
        ];
        let error = load(&base).unwrap_err().to_string();
        assert!(error.contains("SMTP_ALLOW_PLAINTEXT_AUTH"), "{error}");
        assert!(!error.contains("hunter22"), "{error}");
        load(&[base[0], base[1], base[2], ("SMTP_USE_SSL", "true")]).unwrap();
        load(&[
            base[0],
            base[1],
            base[2],
            ("SMTP_ALLOW_PLAINTEXT_AUTH", "true"),
        ])
        .unwrap();
        load(&[base[0]]).unwrap();
    }

    #[test]
    fn file_values_sit_between_defaults_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fastlane.toml");
        std::fs::write(&path, "PAGINATION_PER_PAGE = 3\nDEBUG = true\n").unwrap();
        let env = |name: &str| (name == "DEBUG").then(|| "false".to_string());
        let config = Config::load_from(Some(&path), env).unwrap();
        assert_eq!(config.uint("PAGINATION_PER_PAGE"), 3);
        assert!(!config.bool("DEBUG"));
        std::fs::write(&path, "PAGINATION_PER_PAGE = \"x\"\n").unwrap();
        let error = Config::load_from(Some(&path), |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("PAGINATION_PER_PAGE"), "{error}");
    }

    /// The shipped `config/fastlane.toml` parses, and so does every line of it uncommented.
    #[test]
    fn shipped_config_file_is_valid_when_uncommented() {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/fastlane.toml");
        Config::load_from(Some(Path::new(shipped)), |_| None).unwrap();
        let text = std::fs::read_to_string(shipped).unwrap();
        assert_eq!(
            text,
            describe(),
            "config/fastlane.toml is stale: regenerate it with `fastlane-node config`"
        );
        let uncommented: String = text
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|rest| {
                rest.split_once(" = ")
                    .is_some_and(|(name, _)| OPTIONS.iter().any(|option| option.name == name))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.toml");
        std::fs::write(&path, uncommented).unwrap();
        Config::load_from(Some(&path), |_| None).unwrap();
    }

    #[test]
    fn describe_lists_every_option() {
        let text = describe();
        for option in OPTIONS {
            assert!(text.contains(option.name));
        }
    }
}
