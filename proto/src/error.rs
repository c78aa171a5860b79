//! The small set of error kinds every layer maps its errors to; the gateway maps them to HTTP
//! statuses in one place.

/// What went wrong, as far as a caller is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (400).
    Invalid,
    /// The thing asked for does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// A dependency (store, queue, actor) is not available now (503).
    Unavailable,
    /// A dependency did not answer in time (504).
    Timeout,
    /// A bug or an unexpected failure (500).
    Internal,
}
