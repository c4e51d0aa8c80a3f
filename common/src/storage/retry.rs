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
    fn writes_at_once(&self) -> usize {
        self.inner.writes_at_once()
    }

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

    async fn remove_stale_temporaries(&self, age: Duration) -> Result<(u64, u64)> {
        self.run(|| self.inner.remove_stale_temporaries(age)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A backend that fails its first `failures` calls with `kind`.
    struct Flaky {
        failures: u32,
        kind: ErrorKind,
        calls: AtomicU32,
    }

    impl Flaky {
        fn step(&self) -> Result<()> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(Error::new(self.kind, "injected"))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl ReadStorage for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        async fn read(&self, _: FileKind, _: &str) -> Result<Bytes> {
            self.step().map(|_| Bytes::from_static(b"ok"))
        }
        async fn read_range(&self, _: FileKind, _: &str, _: u64, _: u64) -> Result<Bytes> {
            self.step().map(|_| Bytes::new())
        }
        async fn list(&self, _: FileKind) -> Result<Vec<Listed>> {
            self.step().map(|_| vec![])
        }
        async fn size(&self, _: FileKind, _: &str) -> Result<Option<u64>> {
            self.step().map(|_| None)
        }
    }

    #[async_trait]
    impl Storage for Flaky {
        async fn create(&self) -> Result<()> {
            self.step()
        }
        async fn write(&self, _: FileKind, _: &str, _: Bytes) -> Result<()> {
            self.step()
        }
        async fn remove(&self, _: FileKind, _: &str) -> Result<()> {
            self.step()
        }
    }

    fn flaky(failures: u32, kind: ErrorKind) -> Flaky {
        Flaky {
            failures,
            kind,
            calls: AtomicU32::new(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_backoff() {
        let r = Retrying::new(
            flaky(3, ErrorKind::Unreachable),
            4,
            Duration::from_millis(200),
        );
        let started = tokio::time::Instant::now();
        assert_eq!(&r.read(FileKind::Config, "").await.unwrap()[..], b"ok");
        assert_eq!(r.inner.calls.load(Ordering::SeqCst), 4);
        // 200 + 400 + 800 ms, each with at most ±25% jitter.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1050) && waited <= Duration::from_millis(1750),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt() {
        let r = Retrying::new(
            flaky(10, ErrorKind::Unreachable),
            3,
            Duration::from_millis(10),
        );
        assert_eq!(
            r.write(FileKind::Index, "x", Bytes::new())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Unreachable
        );
        assert_eq!(r.inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_at_once() {
        for kind in [ErrorKind::Denied, ErrorKind::NotFound, ErrorKind::Corrupt] {
            let r = Retrying::new(flaky(1, kind), 5, Duration::from_millis(10));
            assert_eq!(r.list(FileKind::Pack).await.unwrap_err().kind(), kind);
            assert_eq!(r.inner.calls.load(Ordering::SeqCst), 1);
        }
    }
}
