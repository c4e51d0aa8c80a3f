//! Seawall's agent side, in four parts a reader can tell apart:
//! `engine/` is the backup engine (the sources it backs up, the pipeline
//! that turns data into packs, restore, verify and retention, and the typed
//! operations that the CLI and the daemon both call); `stores/` is failover
//! control of the live stores, one provider per kind (replication state,
//! canaries, fence, promote, rebuild); `cloud/` holds the managed
//! services' control-plane calls both of those make (RDS); and `daemon/` is
//! the regional daemon
//! that holds the stream to the coordinator, runs those operations as jobs
//! and answers probes and actions through the store providers.

pub mod cloud;
pub mod daemon;
pub mod engine;
pub mod stores;
