//! Seawall's coordinator: elected through etcd (or alone in `--dev` mode),
//! it keeps the fleet's state, schedules jobs and hands them to the agents
//! of each region, fencing every write and command with its epoch.
//!
//! It reads bottom-up, in layers; no module imports from a layer above its
//! own (`tests/layers.rs` fails the build's tests when one does):
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | 0 | [`model`] | configuration as plain data, stored records, error enums |
//! | 1 | [`store`] | etcd and the embedded store, fenced writes, JSON records |
//! | 2 | [`fleet`] | connected agents, requests down their streams, certificates, the task tree |
//! | 3 | [`jobs`] | the replica and its lead, the job state machine, dispatch, schedules |
//! | 4 | [`replication`] | lag, canaries and repositories checked across regions; primaries |
//! | 5 | [`failover`] | the failover workflow, its typed steps, DNS, automatic failover |
//! | 6 | [`drills`], [`history`] | restore and failover drills; pruning settled records |
//! | 7 | [`api`], [`status`], [`transport`] | the gRPC services, the status page, listeners and TLS |
//! | 8 | [`server`] | wiring: the leadership loop and the servers |

pub mod model;

pub mod store;

pub mod fleet;

pub mod jobs;

pub mod replication;

pub mod failover;

pub mod drills;
pub mod history;

pub mod api;
pub mod status;
pub mod transport;

pub mod server;
