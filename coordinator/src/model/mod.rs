//! Layer 0: what the coordinator knows, as plain data. Its configuration
//! and the services' topology, the scenarios of the objectives table, the
//! records it stores, and the error enums of the layers above. Nothing here
//! talks to a store, an agent or the network.

pub mod clock;
pub mod config;
pub mod cron;
pub mod error;
pub mod failover;
pub mod lsn;
pub mod records;
pub mod scenarios;
pub mod self_fence;
pub mod topology;
