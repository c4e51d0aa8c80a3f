//! Application state: only the keys that match the operator's patterns,
//! captured with their absolute expiries and restored into a live server.

pub mod capture;
pub mod format;
pub mod pattern;
pub mod restore;
pub mod selection;

pub use capture::{backup_redis_keys, KeysOptions};
pub use restore::{restore_redis_keys, Conflict, KeysRestoreOptions, KeysRestoreReport};
pub use selection::{KeyRule, KeySelection};
