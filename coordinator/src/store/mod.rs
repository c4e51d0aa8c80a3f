//! Where the coordinator keeps its state, behind one interface with two
//! implementations: etcd (replicated; the production store) and an embedded
//! redb file (`--dev`: one replica, no etcd). Every write carries a
//! [`Fence`]: it lands only while the writer still holds the leadership the
//! fence was issued for, so a replica that lost its lease writes nothing.
//! One conformance suite (`tests/e2e/store.rs`) runs against both.

pub mod embedded;
pub mod etcd;
pub mod json;

use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::model::error::StoreError;

/// Store result.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// A stored value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Value bytes (JSON by convention).
    pub value: Vec<u8>,
    /// Revision of the last write; strictly increasing across the store.
    pub revision: i64,
}

/// Proof of leadership that every write carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key (etcd) or the epoch record (embedded).
    pub key: Vec<u8>,
    /// The fencing epoch: the leader key's create revision.
    pub epoch: i64,
    /// The lease leadership hangs on (0 in the embedded store).
    pub lease: i64,
}

/// Who leads, as stored in the election.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderInfo {
    /// Replica id.
    pub id: String,
    /// Address agents and operators reach it at.
    pub address: String,
    /// Its epoch.
    #[serde(default)]
    pub epoch: i64,
}

/// Held leadership. `lost` turns true the moment it can no longer be
/// trusted (keep-alive failed, lease expired, or the deadline passed).
pub struct Leadership {
    /// The fence for writes.
    pub fence: Fence,
    lost: watch::Receiver<bool>,
    deadline: watch::Receiver<tokio::time::Instant>,
}

impl Leadership {
    /// Builds a leadership from its fence and the signals the keeper updates.
    pub fn new(
        fence: Fence,
        lost: watch::Receiver<bool>,
        deadline: watch::Receiver<tokio::time::Instant>,
    ) -> Leadership {
        Leadership {
            fence,
            lost,
            deadline,
        }
    }

    /// Whether this replica may still act: not lost, and the lease is known
    /// to be alive until after now. A process stopped past its TTL finds
    /// the deadline passed the moment it resumes, before etcd says so.
    pub fn is_valid(&self) -> bool {
        !*self.lost.borrow() && tokio::time::Instant::now() < *self.deadline.borrow()
    }

    /// Resolves when leadership is lost or its deadline passes.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        loop {
            if !self.is_valid() {
                return;
            }
            let until = *self.deadline.borrow();
            tokio::select! {
                r = lost.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// The replicated state and the election.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// "etcd" or "embedded".
    fn kind(&self) -> &'static str;

    /// One key.
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>>;

    /// Every key under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<Entry>>;

    /// At most `limit` keys under `prefix`, newest key first, each sorting
    /// before `before` when given: one page of a log whose keys sort by
    /// time (the audit log), read without loading the rest.
    async fn list_newest(
        &self,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>>;

    /// Writes `value` if `fence` holds and, when `expected` is given, the
    /// key is at that revision (0: absent). Returns the new revision.
    async fn put(
        &self,
        fence: &Fence,
        key: &str,
        value: &[u8],
        expected: Option<i64>,
    ) -> StoreResult<i64> {
        self.put_with(fence, key, value, expected, &[]).await
    }

    /// [`put`](StateStore::put), writing `extra` keys in the same
    /// transaction: all land or none (an audit line beside the change it
    /// records, in one round trip instead of two).
    async fn put_with(
        &self,
        fence: &Fence,
        key: &str,
        value: &[u8],
        expected: Option<i64>,
        extra: &[(String, Vec<u8>)],
    ) -> StoreResult<i64>;

    /// Writes `value` bound to the leadership's lease: it disappears when
    /// the leader does (agent registrations). The embedded store, which
    /// outlives no leader, clears such keys at each election instead.
    async fn put_bound(&self, fence: &Fence, key: &str, value: &[u8]) -> StoreResult<i64>;

    /// Deletes `key` if `fence` holds.
    async fn delete(&self, fence: &Fence, key: &str) -> StoreResult<()>;

    /// Waits until this replica leads, keeping its lease alive meanwhile.
    async fn campaign(&self, me: &LeaderInfo) -> StoreResult<Leadership>;

    /// Gives leadership up (best effort; the lease ends it anyway).
    async fn resign(&self, leadership: &Leadership) -> StoreResult<()>;

    /// The current leader, if any.
    async fn leader(&self) -> StoreResult<Option<LeaderInfo>>;

    /// The lease TTL leadership hangs on.
    fn lease_ttl(&self) -> Duration;
}
