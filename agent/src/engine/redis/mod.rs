//! The Redis source: a consistent RDB taken over the replication protocol
//! and restored into a data directory for a fresh server, and application
//! state (selected keys) captured and restored into a live server.

pub mod cluster;
pub mod connect;
pub mod keys;
pub mod rdb;
pub mod sync;
pub mod tls;
pub mod url;

pub use rdb::{backup_redis, restore_redis_datadir, RedisOptions, RedisRestoreOptions, Transfer};
pub use tls::RedisTls;
