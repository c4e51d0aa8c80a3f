//! Canary markers: the primary's agent writes a sequence number and the
//! leader's clock into the store, the other region's agent reads the newest
//! one replication has brought it. How old the newest visible marker is
//! measures what would be lost if the primary vanished now, across the
//! whole path (WAL shipping, replay, Redis's stream), not one hop of it.
//! Each kind keeps them its own way (`postgres::canary`, `redis::canary`).

/// One marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Increases with every write.
    pub seq: u64,
    /// The leader's clock when it asked for the write.
    pub written_unix_ms: i64,
}
