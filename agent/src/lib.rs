//! Seawall's agent side, in two parts a reader can tell apart:
//! `engine/` is the backup engine (the sources it backs up, the pipeline
//! that turns data into packs, restore, verify and retention, and the typed
//! operations that the CLI and the daemon both call), and `daemon/` is the
//! regional daemon that holds the stream to the coordinator and runs those
//! operations as jobs.

pub mod daemon;
pub mod engine;
