//! Adapters: the ports of `fastlane-actors` implemented over real systems. Only this module
//! knows SQLite, Redis, MongoDB, Docker, SMTP, HTTP clients and Sentry.

pub mod backends;
pub mod docker;
pub mod embedded;
mod message;
pub mod mongo;
pub mod redis;
pub mod sentry;
pub mod smtp;
pub mod webhooks;
