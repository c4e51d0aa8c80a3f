//! Seawall's agent side: the sources it backs up (files, PostgreSQL,
//! Redis), the pipeline that turns data into packs, restore, verify and
//! retention, and the regional daemon (`daemon/`) that runs them as jobs
//! for the coordinator.

pub mod daemon;
pub mod files;
pub mod forget;
pub mod pipeline;
pub mod postgres;
pub mod progress;
pub mod prune;
pub mod redis;
pub mod repair;
pub mod restore;
pub mod stream;
pub mod verify;
