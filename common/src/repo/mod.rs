//! The repository: config, keys, blobs in packs, the index that finds them,
//! trees, snapshots and locks, and [`Repository`], which ties them together.

pub mod blob;
pub mod config;
pub mod head;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
mod repository;
pub mod sealed;
pub mod snapshot;
pub mod tree;

pub use blob::BlobType;
pub use repository::Repository;

/// This machine's host name, as recorded in snapshots, keys and locks.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}
