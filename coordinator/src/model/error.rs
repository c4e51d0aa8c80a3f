//! The coordinator's error enums below the API: a store call that failed,
//! and a leader's action that did not happen. The API maps them to gRPC
//! statuses in one place (`api::error`).

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The fence no longer holds: another replica leads, or the lease expired.
    #[error("fenced: this replica's leadership (epoch {epoch}) is gone; it must stop acting")]
    Fenced {
        /// The epoch the write carried.
        epoch: i64,
    },
    /// A compare-and-set found another revision.
    #[error("conflict: {key} changed (expected revision {expected}, found {found})")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the writer expected (0: absent).
        expected: i64,
        /// The revision found (0: absent).
        found: i64,
    },
    /// The store cannot be reached or failed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether another attempt, without an operator's change, can succeed
    /// (a fenced writer must stop instead).
    pub fn retryable(&self) -> bool {
        !matches!(self, StoreError::Fenced { .. })
    }
}

/// Why a leader-only action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// This replica does not lead (any more).
    #[error("this replica is not the leader")]
    NotLeader,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// A record could not be encoded: nothing was written.
    #[error("a record could not be encoded, so nothing was written: {0}")]
    Encode(#[from] serde_json::Error),
}

impl ActError {
    /// Whether another attempt, without an operator's change, can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ActError::Store(e) => e.retryable(),
            ActError::NotLeader | ActError::Invalid(_) | ActError::Encode(_) => false,
        }
    }
}
