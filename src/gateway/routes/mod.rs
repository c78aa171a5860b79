//! The handlers, one file per route family: `tasks` (listing, search, task details, enqueue),
//! `jobs` (a job and its executions: details, stop, retry, output, live output) and `node`
//! (health, status, blacklist). Each parses its path and body, makes one ApiActor call and
//! renders the answer with `render`.

pub(crate) mod jobs;
pub(crate) mod node;
pub(crate) mod tasks;
