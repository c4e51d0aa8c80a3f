//! The backup engine: sources, pipeline, restore, verify, retention, and
//! the typed operations the CLI and the agent daemon run through it.

pub mod files;
pub mod forget;
pub mod operation;
pub mod percent;
pub mod pipeline;
pub mod postgres;
pub mod progress;
pub mod prune;
pub mod redis;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod stream;
pub mod verify;
