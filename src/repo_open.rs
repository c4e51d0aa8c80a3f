//! Opening the repository a command names: storage from the URL and flags,
//! the password from SEAWALL_PASSWORD or a password file.

use crate::args::Global;
use anyhow::{bail, Context, Result};
use seawall_common::storage::{self, S3Options, Storage};
use seawall_common::Repository;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// Reads a secret from a file that only its owner may read.
fn read_secret_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{what} file {}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "{what} file {} is readable by everyone; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read(path).with_context(|| format!("reading {what} file {}", path.display()))?;
    Ok(text.strip_suffix(b"\n").unwrap_or(&text).to_vec())
}

/// The storage for the global options.
pub async fn storage(g: &Global) -> Result<Arc<dyn Storage>> {
    let credentials = match (&g.s3_access_key_id, &g.s3_secret_access_key_file) {
        (Some(id), Some(file)) => {
            let secret = String::from_utf8(read_secret_file(file, "S3 secret key")?)
                .context("the S3 secret key file is not UTF-8")?;
            Some((id.clone(), secret))
        }
        _ => None,
    };
    let opts = S3Options {
        credentials,
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
        return read_secret_file(path, "password");
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
