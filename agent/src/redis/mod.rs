//! The Redis source: a consistent RDB taken over the replication protocol,
//! and its restore into a data directory for a fresh server.

pub mod rdb;
pub mod sync;
pub mod url;

pub use rdb::{backup_redis, restore_redis_datadir, RedisOptions, RedisRestoreOptions};
