//! The `config` file: the only plaintext file, holding what a reader needs
//! before it has a key: format version, repository id, chunker parameters.

use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::Id;
use serde::{Deserialize, Serialize};

/// The repository format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The repository's `config` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// Random id naming this repository.
    pub id: Id,
    /// When `init` ran.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Chunk bounds for files.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
}

impl RepoConfig {
    /// The config of a new repository with default parameters.
    pub fn fresh() -> RepoConfig {
        RepoConfig {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: chrono::Utc::now(),
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
        }
    }

    /// Parses and checks a stored config.
    pub fn parse(data: &[u8]) -> Result<RepoConfig> {
        let cfg: RepoConfig = serde_json::from_slice(data).map_err(|e| {
            Error::corrupt(format!(
                "repository config does not parse ({e}); restore it from a replica"
            ))
        })?;
        if cfg.version != FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "repository format version {} is not supported by this seawall (knows {FORMAT_VERSION}); upgrade seawall",
                cfg.version
            )));
        }
        Ok(cfg)
    }
}
