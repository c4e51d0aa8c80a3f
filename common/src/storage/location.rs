//! Turning a repository URL into a backend: a plain path or `file:///path`
//! is a local directory; `s3://bucket/prefix` is a bucket, with endpoint,
//! region and path style from options or the usual AWS environment.

use super::s3::S3Settings;
use super::{LocalStorage, Retrying, S3Storage, Storage};
use crate::error::{Error, ErrorKind, Result};
use aws_sdk_s3::types::ServerSideEncryption;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a repository lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and a key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, possibly empty.
        prefix: String,
    },
}

impl StorageLocation {
    /// Parses a repository URL.
    pub fn parse(url: &str) -> Result<StorageLocation> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("repository URL {url:?} names no bucket; write s3://BUCKET/PREFIX"),
                ));
            }
            return Ok(StorageLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(StorageLocation::Local(PathBuf::from(path)));
        }
        if url.contains("://") {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("repository URL {url:?} has an unknown scheme; use a path, file:///PATH or s3://BUCKET/PREFIX"),
            ));
        }
        if url.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no repository given: pass --repo or set SEAWALL_REPOSITORY",
            ));
        }
        Ok(StorageLocation::Local(PathBuf::from(url)))
    }
}

/// S3 connection options; unset ones fall back to the AWS environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server.
    pub endpoint: Option<String>,
    /// Region; AWS_REGION, then us-east-1, when unset.
    pub region: Option<String>,
    /// Address buckets as a path (`endpoint/bucket/key`), as most S3-compatible servers need.
    pub path_style: bool,
    /// Server-side encryption to request: "AES256" or "aws:kms".
    pub sse: Option<String>,
    /// KMS key id for "aws:kms".
    pub sse_kms_key_id: Option<String>,
    /// Requests in flight at most.
    pub max_concurrency: Option<usize>,
    /// Attempts per request for transient failures.
    pub attempts: Option<u32>,
    /// Access key id and secret, when not taken from the AWS environment or profile.
    pub credentials: Option<(String, String)>,
}

/// Opens the storage for a repository URL, wrapped in retries.
pub async fn open(url: &str, opts: &S3Options) -> Result<Arc<dyn Storage>> {
    let attempts = opts.attempts.unwrap_or(4);
    match StorageLocation::parse(url)? {
        StorageLocation::Local(path) => Ok(Arc::new(Retrying::new(
            LocalStorage::new(path),
            1,
            Duration::from_millis(100),
        ))),
        StorageLocation::S3 { bucket, prefix } => {
            let region = opts
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_string());
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(60))
                .build();
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region))
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .timeout_config(timeouts);
            if let Some(ep) = &opts.endpoint {
                loader = loader.endpoint_url(ep);
            }
            if let Some((id, secret)) = &opts.credentials {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    id.clone(),
                    secret.clone(),
                    None,
                    None,
                    "seawall-flags",
                ));
            }
            let shared = loader.load().await;
            let endpoint = opts
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                .unwrap_or_else(|| "AWS S3".to_string());
            let conf = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(opts.path_style)
                .build();
            let sse = match opts.sse.as_deref() {
                None | Some("") => None,
                Some("AES256") => Some(ServerSideEncryption::Aes256),
                Some("aws:kms") => Some(ServerSideEncryption::AwsKms),
                Some(other) => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("unknown server-side encryption {other:?}; use AES256 or aws:kms"),
                    ))
                }
            };
            let settings = S3Settings {
                sse,
                sse_kms_key_id: opts.sse_kms_key_id.clone(),
                max_concurrency: opts.max_concurrency.unwrap_or(8),
                ..S3Settings::default()
            };
            let s3 = S3Storage::new(
                aws_sdk_s3::Client::from_conf(conf),
                bucket,
                prefix,
                endpoint,
                settings,
            );
            Ok(Arc::new(Retrying::new(
                s3,
                attempts,
                Duration::from_millis(200),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_urls() {
        assert_eq!(
            StorageLocation::parse("s3://b/p/q/").unwrap(),
            StorageLocation::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            StorageLocation::parse("file:///srv/repo").unwrap(),
            StorageLocation::Local("/srv/repo".into())
        );
        assert_eq!(
            StorageLocation::parse("./repo").unwrap(),
            StorageLocation::Local("./repo".into())
        );
        assert!(StorageLocation::parse("gs://x").is_err());
        assert!(StorageLocation::parse("s3:///x").is_err());
    }
}
