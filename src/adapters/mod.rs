//! Adapters: the ports of `fastlane-actors` implemented over real systems. Only this module
//! knows SQLite, Redis, MongoDB, Docker, SMTP, HTTP clients and Sentry.
//!
//! The backends the conformance suites (`tests/conformance.rs`) open are public; the rest is
//! for `run` and `prune` only.

pub(crate) mod backends;
pub(crate) mod docker;
pub mod embedded;
mod message;
pub mod mongo;
pub mod redis;
pub(crate) mod sentry;
pub(crate) mod smtp;
pub(crate) mod webhooks;
