//! Where a repository is and how to open it: the one description the CLI
//! builds from its flags and the agent from `agent.toml`, so both open a
//! repository the same way (storage, password, secrets checked alike).

pub use seawall_common::secret::read_secret_file;
use seawall_common::storage::{self, S3Options, Storage};
use seawall_common::{Error, ErrorKind, Repository, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// A repository and the means to open it. Secrets are named by file, never
/// carried inline, so the description can be logged and passed to a child.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepositorySpec {
    /// Path, `file://` or `s3://` URL.
    pub repo: String,
    /// File holding the password; `None` reads `SEAWALL_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// S3-compatible endpoint.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// Path-style addressing.
    pub s3_path_style: bool,
    /// Server-side encryption (AES256 or aws:kms).
    pub s3_sse: Option<String>,
    /// KMS key for aws:kms.
    pub s3_sse_kms_key_id: Option<String>,
    /// Access key id (with `s3_secret_access_key_file`).
    pub s3_access_key_id: Option<String>,
    /// File holding the secret access key.
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Requests in flight at most.
    pub s3_max_concurrency: Option<usize>,
}

impl RepositorySpec {
    /// The storage it names.
    pub async fn storage(&self) -> Result<Arc<dyn Storage>> {
        let credentials = match (&self.s3_access_key_id, &self.s3_secret_access_key_file) {
            (Some(id), Some(file)) => {
                let secret =
                    String::from_utf8(read_secret_file(file, "S3 secret key")?).map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidInput,
                            format!("the S3 secret key file {} is not UTF-8", file.display()),
                        )
                    })?;
                Some((id.clone(), secret))
            }
            _ => None,
        };
        let opts = S3Options {
            credentials,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            sse: self.s3_sse.clone(),
            sse_kms_key_id: self.s3_sse_kms_key_id.clone(),
            max_concurrency: self.s3_max_concurrency,
            attempts: None,
        };
        storage::open(&self.repo, &opts).await
    }

    /// The password.
    pub fn password(&self) -> Result<Vec<u8>> {
        if let Some(path) = &self.password_file {
            return read_secret_file(path, "password");
        }
        match std::env::var_os("SEAWALL_PASSWORD") {
            Some(p) if !p.is_empty() => Ok(p.into_encoded_bytes()),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "no repository password: set SEAWALL_PASSWORD or pass --password-file FILE",
            )),
        }
    }

    /// Opens the repository.
    pub async fn open(&self) -> Result<Arc<Repository>> {
        let password = self.password()?;
        let storage = self.storage().await?;
        Ok(Arc::new(Repository::open(storage, &password).await?))
    }
}
