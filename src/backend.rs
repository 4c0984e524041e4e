//! Errors of a shared backend (a server the component's state lives in, such
//! as the Redis of the `redis` feature).
//!
//! A call to a backend crosses a network: it can fail before anything was
//! sent (the operation certainly did not happen), or after the request left
//! (a timeout, a dropped connection: the operation may or may not have taken
//! effect). [`BackendError`] says which, and whether repeating the same call
//! is safe. This module does not depend on any backend's client crate.

use std::fmt;

/// What went wrong talking to a backend.
///
/// ```
/// use raceless::backend::BackendErrorKind;
/// assert!(BackendErrorKind::Timeout.outcome_unknown());
/// assert!(!BackendErrorKind::Unavailable.outcome_unknown());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// No reply within the response timeout. The request may have been
    /// executed: **the outcome is unknown**.
    Timeout,
    /// The connection broke after the request was sent. **The outcome is
    /// unknown.**
    ConnectionLost,
    /// The backend could not be reached (connection refused, reconnecting
    /// failed): the request was not executed.
    Unavailable,
    /// The backend executed the request and answered with an error (a
    /// script error, out of memory, a read-only replica): nothing changed.
    Server,
    /// The backend's reply did not have the expected shape (a key written by
    /// something else, or by an incompatible version): nothing changed by
    /// this call beyond what the reply reports.
    Protocol,
}

impl BackendErrorKind {
    /// Whether the operation may have taken effect although it failed.
    ///
    /// ```
    /// use raceless::backend::BackendErrorKind;
    /// assert!(BackendErrorKind::ConnectionLost.outcome_unknown());
    /// assert!(!BackendErrorKind::Server.outcome_unknown());
    /// ```
    pub fn outcome_unknown(self) -> bool {
        matches!(self, Self::Timeout | Self::ConnectionLost)
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Timeout => "no reply within the response timeout (outcome unknown)",
            Self::ConnectionLost => "connection lost after the request was sent (outcome unknown)",
            Self::Unavailable => "backend unavailable (not executed)",
            Self::Server => "backend answered with an error (not executed)",
            Self::Protocol => "unexpected reply from the backend",
        }
    }
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A failed call to a shared backend: what went wrong, in which operation,
/// whether the outcome is unknown, and whether the same call may simply be
/// repeated.
///
/// **Retry safety** is a property of the operation: an operation is safe to
/// retry when running it twice has the effect of running it once — reads,
/// and writes made idempotent by a token (an arc's token, a stream id, a
/// trial permit's token). `record_failure` of a breaker is not: a retry
/// after an unknown outcome may count one failure twice. Each operation's
/// documentation says which it is; [`BackendError::is_retry_safe`] carries
/// it.
///
/// ```
/// use raceless::backend::{BackendError, BackendErrorKind};
/// let e = BackendError::new(BackendErrorKind::Timeout, "arcs.start", true, "after 3s");
/// assert!(e.outcome_unknown());
/// assert!(e.is_retry_safe());
/// assert_eq!(e.operation(), "arcs.start");
/// assert!(e.to_string().contains("outcome unknown"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    kind: BackendErrorKind,
    operation: &'static str,
    retry_safe: bool,
    message: String,
}

impl BackendError {
    /// An error of `kind` in `operation`; `retry_safe` says whether the same
    /// call may be repeated (see the type's docs).
    ///
    /// ```
    /// use raceless::backend::{BackendError, BackendErrorKind};
    /// let e = BackendError::new(BackendErrorKind::Unavailable, "ping", true, "refused");
    /// assert_eq!(e.kind(), BackendErrorKind::Unavailable);
    /// ```
    pub fn new(
        kind: BackendErrorKind,
        operation: &'static str,
        retry_safe: bool,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            operation,
            retry_safe,
            message: message.into(),
        }
    }

    /// What went wrong.
    ///
    /// ```
    /// # use raceless::backend::{BackendError, BackendErrorKind};
    /// let e = BackendError::new(BackendErrorKind::Server, "x", true, "");
    /// assert_eq!(e.kind(), BackendErrorKind::Server);
    /// ```
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The operation that failed (e.g. `"arcs.start"`).
    ///
    /// ```
    /// # use raceless::backend::{BackendError, BackendErrorKind};
    /// assert_eq!(BackendError::new(BackendErrorKind::Server, "x", true, "").operation(), "x");
    /// ```
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// Whether the operation may have taken effect although it failed (a
    /// timeout, or a connection lost after the request was sent).
    ///
    /// ```
    /// # use raceless::backend::{BackendError, BackendErrorKind};
    /// assert!(!BackendError::new(BackendErrorKind::Unavailable, "x", true, "").outcome_unknown());
    /// ```
    pub fn outcome_unknown(&self) -> bool {
        self.kind.outcome_unknown()
    }

    /// Whether repeating the same call (same arguments, same token) is safe:
    /// it cannot apply the operation twice.
    ///
    /// ```
    /// # use raceless::backend::{BackendError, BackendErrorKind};
    /// let e = BackendError::new(BackendErrorKind::Timeout, "breaker.record_failure", false, "");
    /// assert!(!e.is_retry_safe());
    /// ```
    pub fn is_retry_safe(&self) -> bool {
        self.retry_safe
    }

    /// The underlying error's text.
    ///
    /// ```
    /// # use raceless::backend::{BackendError, BackendErrorKind};
    /// assert_eq!(BackendError::new(BackendErrorKind::Server, "x", true, "OOM").message(), "OOM");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.kind)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for BackendError {}
