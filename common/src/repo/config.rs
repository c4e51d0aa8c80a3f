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

/// Chunk size bounds the chunker accepts (FastCDC's own limits).
const CHUNK_MIN: (u32, u32) = (64, 1024 * 1024);
const CHUNK_AVG: (u32, u32) = (256, 4 * 1024 * 1024);
const CHUNK_MAX: (u32, u32) = (1024, 16 * 1024 * 1024);
/// Pack size bounds: 1 MiB to 128 MiB.
const PACK_SIZE: (u32, u32) = (1024 * 1024, 128 * 1024 * 1024);

impl RepoConfig {
    /// Refuses parameters outside what this build can work with, naming
    /// them: a tampered `config` must be an error, not a panic in the
    /// chunker or a pack of gigabytes.
    fn check_bounds(&self) -> Result<()> {
        let c = &self.chunker;
        let bounds = [
            ("chunker.min", c.min, CHUNK_MIN),
            ("chunker.avg", c.avg, CHUNK_AVG),
            ("chunker.max", c.max, CHUNK_MAX),
            ("pack_size", self.pack_size, PACK_SIZE),
        ];
        for (what, value, (min, max)) in bounds {
            if value < min || value > max {
                return Err(Error::corrupt(format!(
                    "repository config has {what} = {value}, outside {min}..={max}: the config was altered; restore it from a replica"
                )));
            }
        }
        if c.min > c.avg || c.avg > c.max || c.normalization > 3 {
            return Err(Error::corrupt(format!(
                "repository config has chunker min {} / avg {} / max {} / normalization {}: they must rise (min <= avg <= max) with normalization 0 to 3; restore the config from a replica",
                c.min, c.avg, c.max, c.normalization
            )));
        }
        Ok(())
    }

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
        cfg.check_bounds()?;
        if cfg.version != FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "repository format version {} is not supported by this seawall (knows {FORMAT_VERSION}); upgrade seawall",
                cfg.version
            )));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_config_is_refused_naming_the_parameter() {
        let good = RepoConfig::fresh();
        let text = serde_json::to_vec(&good).unwrap();
        assert_eq!(RepoConfig::parse(&text).unwrap(), good);
        let mut bad = good.clone();
        bad.chunker.min = 2_000_000;
        let err = RepoConfig::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(err.to_string().contains("chunker.min = 2000000"), "{err}");
        let mut bad = good.clone();
        bad.pack_size = u32::MAX;
        let err = RepoConfig::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(err.to_string().contains("pack_size"), "{err}");
        let mut bad = good;
        bad.chunker.min = bad.chunker.max;
        bad.chunker.avg = 64 * 1024;
        assert!(RepoConfig::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
    }
}
