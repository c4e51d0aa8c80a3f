//! A checker that tries a write on each region's PostgreSQL every 10 ms,
//! through its Unix socket (a client on the database host, which a cut
//! network does not stop), and keeps when each acknowledged write began and
//! ended: two regions writable at once shows as an acknowledged write in
//! one that ended after one in the other began.

use super::load::now_ms;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An acknowledged write: when it was sent and when it was acknowledged.
pub(super) type Write = (i64, i64);

/// The running checker.
pub(super) struct Writable {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Write>>>,
    /// Writes acknowledged so far, per server.
    counts: Vec<Arc<AtomicU64>>,
}

impl Writable {
    /// Starts polling each of `dsns` (the table `writable_probe` must exist).
    pub(super) fn start(dsns: &[String]) -> Writable {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<Arc<AtomicU64>> = dsns.iter().map(|_| Arc::default()).collect();
        let threads = dsns
            .iter()
            .zip(&counts)
            .map(|(dsn, count)| {
                let (dsn, stop, count) = (dsn.clone(), stop.clone(), count.clone());
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(poll(dsn, stop, count))
                })
            })
            .collect();
        Writable {
            stop,
            threads,
            counts,
        }
    }

    /// Writes the `i`th server has acknowledged so far.
    pub(super) fn acked(&self, i: usize) -> u64 {
        self.counts[i].load(Ordering::SeqCst)
    }

    /// Stops it; the acknowledged writes of each server, in `dsns` order.
    pub(super) fn finish(self) -> Vec<Vec<Write>> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    }
}

async fn poll(dsn: String, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> Vec<Write> {
    // Room for a busy machine: a backend's start or an insert can take
    // hundreds of ms under a CPU hog; a frozen server never answers.
    let limit = Duration::from_secs(1);
    let mut client: Option<tokio_postgres::Client> = None;
    let mut acked = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let tick = tokio::time::sleep(Duration::from_millis(10));
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match tokio::time::timeout(
                limit,
                tokio_postgres::connect(&dsn, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((c, conn))) => {
                    tokio::spawn(conn);
                    Some(c)
                }
                _ => None,
            };
        }
        if let Some(c) = &client {
            let sent = now_ms();
            match tokio::time::timeout(
                limit,
                c.execute("INSERT INTO writable_probe VALUES ($1)", &[&sent]),
            )
            .await
            {
                Ok(Ok(_)) => {
                    acked.push((sent, now_ms()));
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Err(_)) => {}
                // A write hanging on a frozen or stopping server.
                Err(_) => client = None,
            }
        }
        tick.await;
    }
    acked
}

/// Asserts that no acknowledged write of `old` ended after the first one
/// of `new` began, and returns when `old` last acknowledged one.
pub(super) fn one_writable_at_a_time(old: &[Write], new: &[Write]) -> Option<i64> {
    let old_last = old.iter().map(|w| w.1).max();
    let new_first = new.iter().map(|w| w.0).min();
    if let (Some(o), Some(n)) = (old_last, new_first) {
        assert!(
            o < n,
            "two writable primaries: the old one acknowledged a write at {o} ms, after the new one began one at {n} ms"
        );
    }
    old_last
}
