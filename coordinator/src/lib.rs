//! Seawall's coordinator: elected through etcd (or alone in `--dev` mode),
//! it keeps the fleet's state, schedules jobs and hands them to the agents
//! of each region, fencing every write and command with its epoch.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod drills;
pub mod failover;
pub mod history;
pub mod metrics;
pub mod records;
pub mod registry;
pub mod replication;
pub mod revocation;
pub mod scheduler;
pub mod server;
pub mod status;
pub mod store;
pub mod topology;
pub mod transport;
pub mod workers;
