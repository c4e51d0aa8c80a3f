//! Opening the repository a command names: storage from the URL and flags,
//! the password from SEAWALL_PASSWORD or a password file.

use crate::args::Global;
use anyhow::{bail, Context, Result};
use seawall_common::storage::{self, S3Options, Storage};
use seawall_common::Repository;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// The storage for the global options.
pub async fn storage(g: &Global) -> Result<Arc<dyn Storage>> {
    let opts = S3Options {
        endpoint: g.s3_endpoint.clone(),
        region: g.s3_region.clone(),
        path_style: g.s3_path_style,
        sse: g.s3_sse.clone(),
        sse_kms_key_id: g.s3_sse_kms_key_id.clone(),
        max_concurrency: g.s3_max_concurrency,
        attempts: None,
    };
    Ok(storage::open(&g.repo, &opts).await?)
}

/// The repository password.
pub fn password(g: &Global) -> Result<Vec<u8>> {
    if let Some(path) = &g.password_file {
        let meta =
            std::fs::metadata(path).with_context(|| format!("password file {}", path.display()))?;
        if meta.permissions().mode() & 0o004 != 0 {
            bail!(
                "password file {} is readable by everyone; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read(path)
            .with_context(|| format!("reading password file {}", path.display()))?;
        let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
        return Ok(trimmed.to_vec());
    }
    match std::env::var_os("SEAWALL_PASSWORD") {
        Some(p) if !p.is_empty() => Ok(p.into_encoded_bytes()),
        _ => bail!("no repository password: set SEAWALL_PASSWORD or pass --password-file FILE"),
    }
}

/// Opens the repository named by the global options.
pub async fn open(g: &Global) -> Result<Arc<Repository>> {
    let password = password(g)?;
    let storage = storage(g).await?;
    Ok(Arc::new(Repository::open(storage, &password).await?))
}
