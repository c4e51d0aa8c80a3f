//! The files source: walk directory trees, reuse unchanged files from the
//! parent snapshot, chunk the rest, and record trees and a snapshot.

mod backup;
mod excludes;
mod meta;
mod reader;
mod scan;
pub(crate) mod walker;

pub use backup::{backup_files, BackupOptions, BackupOutcome, ParentChoice};
pub use excludes::Excludes;
pub use meta::{apply_metadata, node_from_metadata, restored_times, set_xattrs};
