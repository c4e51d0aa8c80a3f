//! A daemon's task tree: every background task is spawned in a tree whose
//! cancellation token stops it at its next await, and whose tracker lets
//! the daemon wait for all of them, within a deadline, when it stops. The
//! coordinator hangs one tree per term of leadership on its root; the
//! agent has one for its life.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of tasks that stop together.
#[derive(Clone, Default)]
pub struct Tree {
    /// Cancelled when the tasks must stop.
    pub token: CancellationToken,
    /// The tasks, to wait for.
    pub tracker: TaskTracker,
}

impl Tree {
    /// A tree under `parent`: cancelled with it, or alone.
    pub fn child_of(parent: &CancellationToken) -> Tree {
        Tree {
            token: parent.child_token(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs `task` until it ends or the tree is cancelled.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Runs `task` to its end even when the tree is cancelled (work that
    /// must not stop half-way, such as rebuilding a database); [`Tree::stop`]
    /// still waits for it within its grace.
    pub fn spawn_to_end<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Cancels every task and waits for them, at most `grace`; returns
    /// whether they all ended in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn stop_cancels_what_waits_and_waits_for_what_must_end() {
        let tree = Tree::default();
        tree.spawn(std::future::pending());
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        tree.spawn_to_end(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(tree.stop(Duration::from_secs(10)).await);
        assert!(finished.load(Ordering::SeqCst), "a to-the-end task ran out");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_gives_up_after_its_grace() {
        let tree = Tree::default();
        tree.spawn_to_end(std::future::pending::<()>());
        assert!(!tree.stop(Duration::from_secs(1)).await);
    }
}
