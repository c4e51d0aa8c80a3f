//! Aurora PostgreSQL in a Global Database: the cluster a source names
//! (`config`) and what RDS says of it (`api`): the cluster's status, its
//! place in the global cluster (writer or secondary), and the
//! `AuroraGlobalDBReplicationLag` metric.

pub mod api;
pub mod config;
