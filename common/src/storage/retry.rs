//! Retries with exponential backoff and jitter for any backend: throttling,
//! 5xx answers, timeouts and dropped connections are tried again; everything
//! else fails at once.

use super::{FileKind, Listed, ReadStorage, Storage};
use crate::error::{ErrorKind, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::time::Duration;

/// Wraps a backend so that transient failures are retried.
pub struct Retrying<S> {
    inner: S,
    attempts: u32,
    first_delay: Duration,
}

impl<S> Retrying<S> {
    /// Retries each operation up to `attempts` times in all, doubling the wait from `first_delay`.
    pub fn new(inner: S, attempts: u32, first_delay: Duration) -> Retrying<S> {
        Retrying {
            inner,
            attempts: attempts.max(1),
            first_delay,
        }
    }

    async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.kind() == ErrorKind::Unreachable && attempt < self.attempts => {
                    tracing::debug!(attempt, error = %e, "transient storage error, retrying");
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = delay.saturating_mul(2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<S: Storage> ReadStorage for Retrying<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn read(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        self.run(|| self.inner.read(kind, name)).await
    }

    async fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.run(|| self.inner.read_range(kind, name, offset, len))
            .await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        self.run(|| self.inner.list(kind)).await
    }

    async fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        self.run(|| self.inner.size(kind, name)).await
    }
}

#[async_trait]
impl<S: Storage> Storage for Retrying<S> {
    async fn create(&self) -> Result<()> {
        self.run(|| self.inner.create()).await
    }

    async fn write(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        self.run(|| self.inner.write(kind, name, data.clone()))
            .await
    }

    async fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.run(|| self.inner.remove(kind, name)).await
    }
}
