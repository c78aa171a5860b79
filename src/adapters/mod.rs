//! Adapters: the ports of `fastlane-actors` implemented over real backends. Only this module
//! knows SQLite and Docker.

pub mod docker;
pub mod embedded;
pub mod smtp;
pub mod webhooks;
