//! A repository in an S3 bucket (AWS or any S3-compatible server), through
//! aws-sdk-s3. Large objects go up in multipart uploads; concurrency is
//! bounded by a semaphore; retries are left to the [`super::Retrying`] wrapper
//! so that every backend backs off the same way.

use super::{FileKind, Listed, ReadStorage, Storage};
use crate::error::{Error, ErrorKind, Result};
use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Settings of an S3 repository beyond bucket and prefix.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: usize,
    /// Size of each part of a multipart upload.
    pub part_size: usize,
    /// Server-side encryption to request ("AES256" or "aws:kms"), if any.
    pub sse: Option<ServerSideEncryption>,
    /// KMS key for "aws:kms".
    pub sse_kms_key_id: Option<String>,
    /// At most this many requests in flight.
    pub max_concurrency: usize,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            multipart_threshold: 32 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            sse: None,
            sse_kms_key_id: None,
            max_concurrency: 8,
        }
    }
}

/// Storage in an S3 bucket under a prefix.
#[derive(Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    settings: S3Settings,
    permits: Arc<Semaphore>,
}

impl S3Storage {
    /// Storage over `client` in `bucket` under `prefix` (without slashes at the ends).
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        endpoint: String,
        settings: S3Settings,
    ) -> S3Storage {
        let permits = Arc::new(Semaphore::new(settings.max_concurrency.max(1)));
        S3Storage {
            client,
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            settings,
            permits,
        }
    }

    fn key(&self, kind: FileKind, name: &str) -> String {
        if self.prefix.is_empty() {
            kind.path(name)
        } else {
            format!("{}/{}", self.prefix, kind.path(name))
        }
    }

    fn rel<'a>(&self, key: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(key)
        }
    }

    fn fail<E>(&self, what: &str, err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&self.endpoint, &self.bucket, what, err)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Unreachable, "S3 storage is shutting down"))
    }

    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.settings.sse.clone())
            .set_ssekms_key_id(self.settings.sse_kms_key_id.clone())
            .send()
            .await
            .map_err(|e| self.fail(&format!("starting multipart upload of {key}"), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::new(ErrorKind::Unreachable, "S3 returned no upload id"))?
            .to_string();
        let data_len = data.len();
        let result = self.upload_parts(key, &upload_id, data).await;
        match result {
            Ok(parts) => {
                let completed = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match completed {
                    Ok(_) => Ok(()),
                    // Some S3-compatible servers answer 200 with a body the SDK cannot
                    // parse; the object is complete if it is there with the right size.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) => {
                        let head = self
                            .client
                            .head_object()
                            .bucket(&self.bucket)
                            .key(key)
                            .send()
                            .await;
                        match head {
                            Ok(h) if h.content_length() == Some(data_len as i64) => Ok(()),
                            _ => {
                                Err(self.fail(&format!("completing multipart upload of {key}"), e))
                            }
                        }
                    }
                    Err(e) => Err(self.fail(&format!("completing multipart upload of {key}"), e)),
                }
            }
            Err(err) => {
                // Abandoned parts cost money until aborted.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(err)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<Vec<CompletedPart>> {
        let part_size = self.settings.part_size.max(5 * 1024 * 1024);
        let mut parts = Vec::new();
        let mut offset = 0usize;
        let mut number = 1i32;
        while offset < data.len() {
            let end = (offset + part_size).min(data.len());
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(data.slice(offset..end)))
                .send()
                .await
                .map_err(|e| self.fail(&format!("uploading part {number} of {key}"), e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            offset = end;
            number += 1;
        }
        Ok(parts)
    }
}

/// What to say when the standard credential chain found nothing.
const NO_CREDENTIALS: &str = "no S3 credentials were found: give --s3-access-key-id with --s3-secret-access-key-file (in agent.toml: s3_access_key_id and s3_secret_access_key_file), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials, or run on a host with an instance role";

/// Turns an SDK error into a Seawall error with a kind and a fix.
fn classify<E>(
    endpoint: &str,
    bucket: &str,
    what: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let detail = DisplayErrorContext(&err).to_string();
    // The SDK reports a credential chain that found nothing as a failure
    // to send; say what is missing instead of blaming the endpoint.
    if matches!(err, SdkError::DispatchFailure(_)) && detail.contains("credential") {
        return Error::new(ErrorKind::InvalidInput, format!("{what}: {NO_CREDENTIALS}"))
            .with_source(err);
    }
    let (kind, hint) = match (&err, status, code.as_deref()) {
        (SdkError::DispatchFailure(_), _, _) | (SdkError::TimeoutError(_), _, _) => (
            ErrorKind::Unreachable,
            format!("cannot reach S3 endpoint {endpoint}; check --s3-endpoint, AWS_ENDPOINT_URL and the network"),
        ),
        (SdkError::ConstructionFailure(_), _, _) => (
            ErrorKind::InvalidInput,
            "the S3 request could not be built; check credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and region".to_string(),
        ),
        (_, Some(404), _) | (_, _, Some("NoSuchKey")) => (ErrorKind::NotFound, "not found".to_string()),
        (_, _, Some("NoSuchBucket")) => (
            ErrorKind::NotFound,
            format!("bucket {bucket:?} does not exist; create it or fix the repository URL"),
        ),
        (_, Some(401 | 403), _) => (
            ErrorKind::Denied,
            format!("access to bucket {bucket:?} denied; check the credentials and the bucket policy"),
        ),
        (_, Some(429 | 500..=599), _) | (_, _, Some("SlowDown" | "Throttling" | "RequestTimeout")) => (
            ErrorKind::Unreachable,
            format!("S3 endpoint {endpoint} is throttling or failing"),
        ),
        (_, _, Some("EntityTooLarge" | "QuotaExceeded")) => (ErrorKind::NoSpace, "bucket quota exceeded".to_string()),
        _ => (ErrorKind::Io, "S3 request failed".to_string()),
    };
    Error::new(kind, format!("{what}: {hint} ({detail})")).with_source(err)
}

#[async_trait]
impl ReadStorage for S3Storage {
    fn location(&self) -> String {
        format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint)
    }

    async fn read(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        let key = self.key(kind, name);
        let _permit = self.permit().await?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.fail(&format!("reading {key}"), e))?;
        let max = kind.max_size();
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = declared.filter(|n| *n > max) {
            return Err(kind.oversized(name, size, &self.location()));
        }
        // Read in chunks up to the cap, whatever the length header said.
        let mut body = out.body;
        let mut data = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > max {
                        return Err(kind.oversized(name, data.len() as u64, &self.location()));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("reading {key}: body interrupted: {e}"),
                    ))
                }
            }
        }
        Ok(Bytes::from(data))
    }

    async fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let key = self.key(kind, name);
        let _permit = self.permit().await?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .range(format!("bytes={}-{}", offset, offset + len - 1))
            .send()
            .await
            .map_err(|e| self.fail(&format!("reading {key}"), e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unreachable,
                    format!("reading {key}: body interrupted: {e}"),
                )
            })?
            .into_bytes();
        if body.len() as u64 != len {
            return Err(Error::corrupt(format!(
                "{key}: wanted {len} bytes at offset {offset}, got {}: truncated",
                body.len()
            )));
        }
        Ok(body)
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        let prefix = if self.prefix.is_empty() {
            kind.dir().to_string()
        } else {
            format!("{}/{}", self.prefix, kind.dir())
        };
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let _permit = self.permit().await?;
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail(&format!("listing {prefix}"), e))?;
            for obj in out.contents() {
                let Some(key) = obj.key() else { continue };
                let rel = self.rel(key);
                let name = if kind.is_single() {
                    (rel == kind.dir()).then(String::new)
                } else {
                    kind.name_from_path(rel)
                };
                if let Some(name) = name {
                    found.push(Listed {
                        name,
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified: obj
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        let key = self.key(kind, name);
        let _permit = self.permit().await?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let err = self.fail(&format!("checking {key}"), e);
                if err.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn create(&self) -> Result<()> {
        // Prove the bucket is reachable and writable before anything else.
        let _permit = self.permit().await?;
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.fail(&format!("checking bucket {}", self.bucket), e))?;
        Ok(())
    }

    async fn write(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        let key = self.key(kind, name);
        let _permit = self.permit().await?;
        if data.len() >= self.settings.multipart_threshold {
            return self.put_multipart(&key, data).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(data))
            .set_server_side_encryption(self.settings.sse.clone())
            .set_ssekms_key_id(self.settings.sse_kms_key_id.clone())
            .send()
            .await
            .map_err(|e| self.fail(&format!("writing {key}"), e))?;
        Ok(())
    }

    async fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        let _permit = self.permit().await?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.fail(&format!("deleting {key}"), e);
                if err.kind() == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}
