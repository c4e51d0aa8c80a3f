//! The write path shared by every source: deduplicate blobs against the
//! index, compress and encrypt them on worker threads, gather them into packs,
//! upload packs concurrently and record them in index files as they land.

mod saver;

pub use saver::{Saver, SaverStats};
