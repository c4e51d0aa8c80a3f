//! The agent's lease on its primaries. Each heartbeat is numbered and its
//! send time kept; the leader's `Lease` names the newest heartbeat it got,
//! and the lease runs from when that heartbeat was SENT, for the bound the
//! leader gives. The leader counts the same bound (and a margin) from when
//! it GOT the heartbeat, which is later, so the agent's lease always lapses
//! first whatever the delays: when it lapses, the agent fences its
//! primaries itself before the leader may promote elsewhere. The list of
//! primaries is kept in the state directory, so an agent restarted inside
//! a partition still knows what to fence.

use seawall_proto::v1::{Lease, SelfFence};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Heartbeats remembered by number (a lease naming an older one than
/// these is too old to extend anything).
const REMEMBERED: usize = 64;

/// What the lease covers, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Covered {
    /// The bound, in milliseconds (0: nothing to fence).
    pub after_ms: u32,
    /// The sources fenced when it lapses, with the PostgreSQL fence mode.
    pub sources: Vec<(String, bool)>,
}

struct Inner {
    next_seq: u64,
    sent: VecDeque<(u64, Instant)>,
    valid_until: Instant,
    renew_every: Option<Duration>,
    covered: Covered,
}

/// The lease and what it covers.
pub struct LeaseState {
    inner: Mutex<Inner>,
    path: PathBuf,
}

impl LeaseState {
    /// The lease of an agent just started: what it covered before a
    /// restart is read back, and it runs for one bound from now (a
    /// reachable leader renews it long before).
    pub fn open(state_dir: &Path) -> LeaseState {
        let path = state_dir.join("lease.json");
        let covered: Covered = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let now = Instant::now();
        LeaseState {
            inner: Mutex::new(Inner {
                next_seq: 1,
                sent: VecDeque::new(),
                valid_until: now + Duration::from_millis(u64::from(covered.after_ms)),
                renew_every: None,
                covered,
            }),
            path,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers a heartbeat about to be sent.
    pub fn beat(&self) -> u64 {
        let mut i = self.lock();
        let seq = i.next_seq;
        i.next_seq += 1;
        i.sent.push_back((seq, Instant::now()));
        while i.sent.len() > REMEMBERED {
            i.sent.pop_front();
        }
        seq
    }

    /// The leader's answer: the lease extended from the named heartbeat's
    /// send time; what it covers kept.
    pub fn granted(&self, lease: &Lease) {
        let covered = Covered {
            after_ms: lease.self_fence_after_ms,
            sources: lease
                .sources
                .iter()
                .map(|s: &SelfFence| (s.source.clone(), s.stop_postgres))
                .collect(),
        };
        let changed = {
            let mut i = self.lock();
            if let Some(sent) = i
                .sent
                .iter()
                .find(|(seq, _)| *seq == lease.heartbeat_seq)
                .map(|(_, at)| *at)
            {
                let until = sent + Duration::from_millis(u64::from(lease.self_fence_after_ms));
                if until > i.valid_until {
                    i.valid_until = until;
                }
            }
            i.renew_every = (lease.renew_every_ms > 0)
                .then(|| Duration::from_millis(u64::from(lease.renew_every_ms)));
            let changed = i.covered != covered;
            i.covered = covered.clone();
            changed
        };
        if changed {
            self.keep(&covered);
        }
    }

    fn keep(&self, covered: &Covered) {
        let written = serde_json::to_vec(covered)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "what the lease covers is not kept: an agent restarted inside a partition would not fence its primaries");
        }
    }

    /// When the lease lapses, and what it covers.
    pub fn now(&self) -> (Instant, Covered) {
        let i = self.lock();
        (i.valid_until, i.covered.clone())
    }

    /// How often to heartbeat while the lease covers something.
    pub fn renew_every(&self) -> Option<Duration> {
        let i = self.lock();
        i.renew_every.filter(|_| !i.covered.sources.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_from_the_named_heartbeats_send_time() {
        let dir = tempfile::tempdir().unwrap();
        let lease = LeaseState::open(dir.path());
        let first = lease.beat();
        tokio::time::advance(Duration::from_millis(300)).await;
        let second = lease.beat();
        let sent_first = Instant::now() - Duration::from_millis(300);
        let grant = |seq| Lease {
            heartbeat_seq: seq,
            self_fence_after_ms: 2000,
            sources: vec![SelfFence {
                source: "db".into(),
                stop_postgres: false,
            }],
            renew_every_ms: 500,
        };
        lease.granted(&grant(first));
        let (until, covered) = lease.now();
        assert_eq!(until, sent_first + Duration::from_secs(2));
        assert_eq!(covered.sources, [("db".to_string(), false)]);
        // An older grant arriving late does not shorten it; a newer extends.
        lease.granted(&grant(second));
        lease.granted(&grant(first));
        assert_eq!(lease.now().0, sent_first + Duration::from_millis(2300));
        // A number it never sent extends nothing.
        lease.granted(&grant(999));
        assert_eq!(lease.now().0, sent_first + Duration::from_millis(2300));
        assert_eq!(lease.renew_every(), Some(Duration::from_millis(500)));
        // A restarted agent remembers what to fence, for one bound.
        let again = LeaseState::open(dir.path());
        let (until, covered) = again.now();
        assert_eq!(covered.sources, [("db".to_string(), false)]);
        assert_eq!(until, Instant::now() + Duration::from_secs(2));
    }
}
