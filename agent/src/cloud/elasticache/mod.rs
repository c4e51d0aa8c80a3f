//! ElastiCache for Redis OSS / Valkey: the replication group a source
//! names (`config`) and what its control plane says of it (`api`): the
//! group's status, its place in a Global Datastore, and the Global
//! Datastore's replication lag metric.

pub mod api;
pub mod config;
