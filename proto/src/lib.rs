//! Pure data of fastlane-node: ids, tasks, jobs and executions, statuses and their transitions,
//! request payload parsing and validation, redaction, image references and farms.
//!
//! Invariant: this crate does no I/O and knows no async runtime, HTTP, database or Docker crate.
//! Everything here is plain values and plain functions, tested with plain unit tests.

#![warn(missing_docs, unreachable_pub)]

pub mod backoff;
pub mod build;
pub mod command;
pub mod container;
pub mod error;
pub mod farm;
pub mod idempotency;
pub mod image;
pub mod limits;
pub mod model;
pub mod outbox;
pub mod payload;
pub mod redact;
pub mod schedule;
pub mod search;
pub mod status;
pub mod timestamp;
pub mod views;
pub mod webhook;

pub use error::ErrorKind;
pub use model::{Execution, ExecutionMetadata, Job, JobMetadata, PendingRun, Task, TaskSummary};
pub use status::ExecutionStatus;
pub use timestamp::Timestamp;
