//! Seawall's agent side: the sources it backs up (files today), the pipeline
//! that turns data into packs, and restore, verify and retention. The CLI
//! calls these directly for one-shot commands; the regional daemon will call
//! them for jobs.

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
