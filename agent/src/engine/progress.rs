//! Counters that long operations update and that a progress bar or a log
//! line reads; shared lock-free so the hot path pays one atomic add.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters of a backup or restore.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read from the source (backup) or written to the target (restore).
    pub bytes_done: AtomicU64,
    /// Files finished.
    pub files_done: AtomicU64,
    /// Bytes expected in all, once the scan knows.
    pub bytes_total: AtomicU64,
    /// Files expected in all, once the scan knows.
    pub files_total: AtomicU64,
    /// Whether the totals are final.
    pub totals_final: AtomicBool,
    /// Bytes added to the repository.
    pub bytes_added: AtomicU64,
}

impl Progress {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
