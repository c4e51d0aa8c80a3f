//! Opening the repository a command names: the global flags become the
//! engine's [`RepositorySpec`], which the agent builds from its config too.

use crate::args::Global;
use anyhow::Result;
use seawall_agent::engine::repository::RepositorySpec;
use seawall_common::storage::Storage;
use seawall_common::Repository;
use std::sync::Arc;

/// The repository the global options name.
pub fn spec(g: &Global) -> RepositorySpec {
    RepositorySpec {
        repo: g.repo.clone(),
        password_file: g.password_file.clone(),
        s3_endpoint: g.s3_endpoint.clone(),
        s3_region: g.s3_region.clone(),
        s3_path_style: g.s3_path_style,
        s3_sse: g.s3_sse.clone(),
        s3_sse_kms_key_id: g.s3_sse_kms_key_id.clone(),
        s3_access_key_id: g.s3_access_key_id.clone(),
        s3_secret_access_key_file: g.s3_secret_access_key_file.clone(),
        s3_max_concurrency: g.s3_max_concurrency,
    }
}

/// The storage for the global options.
pub async fn storage(g: &Global) -> Result<Arc<dyn Storage>> {
    Ok(spec(g).storage().await?)
}

/// The repository password.
pub fn password(g: &Global) -> Result<Vec<u8>> {
    Ok(spec(g).password()?)
}

/// Opens the repository named by the global options.
pub async fn open(g: &Global) -> Result<Arc<Repository>> {
    Ok(spec(g).open().await?)
}
