//! Adapters: the ports of `fastlane-actors` implemented over real backends. Only this module
//! knows SQLite, Redis, MongoDB and Docker.

pub mod backends;
pub mod docker;
pub mod embedded;
pub mod mongo;
pub mod redis;
pub mod smtp;
pub mod webhooks;
