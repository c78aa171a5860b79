//! The handlers, one file per route family: `tasks` (listing, search, task details, enqueue),
//! `jobs` (a job and its executions: details, stop, retry, output, live output), `node`
//! (health, status, blacklist), `history` (execution history) and `metrics` (Prometheus). Each parses its path and body, makes
//! one ApiActor call and renders the answer with `render`.

pub(crate) mod history;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod tasks;
