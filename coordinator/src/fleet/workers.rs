//! The replica's task tree. Everything a replica runs in the background
//! (each leader worker, each agent session's tasks) is spawned here, under
//! a cancellation token: the replica's root token for the process, a child
//! token per term of leadership. Losing the lead cancels that term's token,
//! which stops every worker and session task at its next await, and the
//! loop waits for them before it campaigns again. Each worker runs in steps;
//! a failed step is retried with backoff and its error kept for `status`.

use seawall_proto::v1::WorkerStatus;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// First and longest wait after a failed step.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a worker step asks next: wait this long, or stop for good.
pub enum Next {
    /// Run the next step after this long.
    After(Duration),
    /// The worker is done (its term ended).
    Stop,
}

pub use seawall_common::tasks::Tree;

/// The workers' health, for `seawall status`.
#[derive(Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<BTreeMap<&'static str, WorkerStatus>>>,
}

impl Board {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerStatus)) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(name).or_insert_with(|| WorkerStatus {
            name: name.to_string(),
            ..Default::default()
        });
        f(entry);
    }

    /// Every worker's status, by name.
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// Forgets every worker (a new term starts).
    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether any worker is still running.
    pub fn any_running(&self) -> bool {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.values().any(|w| w.running)
    }
}

/// Starts worker `name` in `tree`: `step` runs again and again, after the
/// wait it asks for, or after a growing backoff when it fails.
pub fn spawn_worker<F, Fut>(tree: &Tree, board: &Board, name: &'static str, mut step: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Next, String>> + Send,
{
    let board = board.clone();
    let token = tree.token.clone();
    board.update(name, |w| w.running = true);
    let span = tracing::info_span!("worker", name);
    tree.tracker.spawn(tracing::Instrument::instrument(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = tokio::select! {
                _ = token.cancelled() => break,
                r = step() => r,
            };
            let wait = match result {
                Ok(Next::Stop) => break,
                Ok(Next::After(wait)) => {
                    backoff = BACKOFF_MIN;
                    board.update(name, |w| {
                        w.failures_in_a_row = 0;
                        w.last_success_unix_ms = crate::model::clock::now_ms();
                    });
                    wait
                }
                Err(e) => {
                    tracing::warn!(worker = name, error = %e, retry_in = ?backoff, "worker step failed");
                    metrics::counter!(crate::fleet::metrics::WORKER_ERRORS_TOTAL, "worker" => name).increment(1);
                    board.update(name, |w| {
                        w.failures_in_a_row += 1;
                        w.last_error = e;
                        w.last_error_unix_ms = crate::model::clock::now_ms();
                    });
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        board.update(name, |w| w.running = false);
    }, span));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_step_backs_off_and_keeps_its_error() {
        let tree = Tree::default();
        let board = Board::default();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        spawn_worker(&tree, &board, "flaky", move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<Next, _>("store unreachable".to_string())
            }
        });
        // Backoff 1 s, 2 s, 4 s: by 6.5 s three steps ran, not hundreds.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let status = board.snapshot();
        assert_eq!(status[0].failures_in_a_row, 3);
        assert_eq!(status[0].last_error, "store unreachable");
        assert!(tree.stop(Duration::from_secs(1)).await);
        assert!(!board.any_running());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_tree_stops_a_step_in_the_middle() {
        let tree = Tree::default();
        let board = Board::default();
        spawn_worker(&tree, &board, "slow", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Next::After(Duration::ZERO))
        });
        let started = tokio::time::Instant::now();
        assert!(tree.stop(Duration::from_secs(1)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!board.any_running());
    }
}
