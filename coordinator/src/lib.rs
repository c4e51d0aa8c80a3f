//! Seawall's coordinator: elected through etcd (or alone in `--dev` mode),
//! it keeps the fleet's state, schedules jobs and hands them to the agents
//! of each region, fencing every write and command with its epoch.

pub mod store;
