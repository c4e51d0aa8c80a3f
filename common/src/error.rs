//! The error type that crosses crate boundaries: a kind a caller can act on,
//! whether a retry can help, and a sentence that names the problem and the fix.

use std::fmt;

/// What went wrong, in terms a caller (scheduler, CLI exit code) can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A file, snapshot or object that was asked for does not exist.
    NotFound,
    /// The storage server could not be reached or kept failing.
    Unreachable,
    /// The storage refused the credentials or the operation.
    Denied,
    /// Stored data failed an integrity check (hash, MAC, structure).
    Corrupt,
    /// The password or key does not open this repository.
    WrongKey,
    /// Another process holds a conflicting repository lock.
    Locked,
    /// The caller's input is malformed (flags, config, paths).
    InvalidInput,
    /// The local disk or the bucket is full.
    NoSpace,
    /// A local file system operation failed.
    Io,
    /// The repository exists already, or is in a state that forbids the operation.
    Conflict,
}

impl ErrorKind {
    /// Whether trying again later can succeed without a change by the operator.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Locked)
    }
}

/// An error with its kind, a human sentence and, where there is one, its cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Results whose error is a Seawall [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human sentence, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with where it happened, keeping kind and cause.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// An I/O error on a local path, classified so a full disk reads as one.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Error {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
            std::io::ErrorKind::StorageFull => ErrorKind::NoSpace,
            _ if err.raw_os_error() == Some(libc::ENOSPC) => ErrorKind::NoSpace,
            _ => ErrorKind::Io,
        };
        let hint = if kind == ErrorKind::NoSpace {
            " (the disk is full: free space or point the repository elsewhere)"
        } else {
            ""
        };
        Error::new(kind, format!("{what}: {err}{hint}")).with_source(err)
    }

    /// Stored data that failed a check.
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
