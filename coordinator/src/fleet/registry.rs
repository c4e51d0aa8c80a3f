//! The agents connected to this replica: one session each, with the channel
//! commands go down. Only the leader keeps sessions; a follower redirects.

use seawall_proto::v1::CoordinatorMessage;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tonic::Status;

/// Commands to one agent.
pub type Outbox = mpsc::Sender<Result<CoordinatorMessage, Status>>;

/// One connected agent.
#[derive(Debug)]
pub struct Session {
    /// Distinguishes a reconnect from the session it replaces.
    pub session_id: u64,
    /// Agent name (from its certificate).
    pub agent_id: String,
    /// Region (from its certificate).
    pub region: String,
    /// Source names it serves.
    pub sources: Vec<String>,
    /// Its version.
    pub version: String,
    /// Its host.
    pub hostname: String,
    /// When it connected.
    pub connected_ms: i64,
    /// Last heartbeat.
    pub last_heartbeat_ms: AtomicI64,
    /// It numbers its heartbeats and keeps the lease they renew (it fences
    /// its primaries itself when the renewals stop).
    pub leased: std::sync::atomic::AtomicBool,
    /// Jobs it runs now.
    pub running: AtomicU32,
    /// Jobs it runs at once at most (0: not said, no limit known).
    pub max_jobs: u32,
    /// Where commands go.
    pub outbox: Outbox,
    /// The SHA-256 fingerprint of its certificate.
    pub fingerprint: String,
    /// When its certificate expires (ms since the epoch): the session ends
    /// then, and the agent reconnects with its renewed certificate.
    pub cert_expires_ms: i64,
    /// Cancelled to end the session (revoked or expired certificate).
    pub ended: tokio_util::sync::CancellationToken,
    /// Set once the leader has checked the agent's stores after it
    /// connected (an old primary is fenced first): no job goes to it before.
    pub ready: std::sync::atomic::AtomicBool,
    /// Sources the agent fenced itself on a lapsed lease (its hello).
    pub self_fenced: Vec<String>,
    /// The check files the agent lets a coordinator name (its hello's).
    pub check_files: Vec<String>,
}

impl Session {
    /// Whether it may be handed a job now: checked after it connected, and
    /// below its max_jobs.
    pub fn takes_jobs(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && (self.max_jobs == 0 || self.running.load(Ordering::Relaxed) < self.max_jobs)
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh session id.
pub fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// The connected agents, by region and name: an agent is its certificate's
/// (region, name) pair, so `db-1` of one region never replaces `db-1` of
/// another.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: RwLock<HashMap<(String, String), Arc<Session>>>,
    /// When each agent whose session ended last sent a heartbeat: a region
    /// declared down counts its fault from then, also after its sessions
    /// were ended for silence.
    departed: RwLock<HashMap<(String, String), i64>>,
}

fn key(region: &str, agent_id: &str) -> (String, String) {
    (region.to_string(), agent_id.to_string())
}

pub use crate::model::self_fence::silence_limit;

impl Registry {
    /// Adds a session; returns the one it replaces (same agent reconnecting).
    pub fn insert(&self, s: Arc<Session>) -> Option<Arc<Session>> {
        let mut map = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        let old = map.insert(key(&s.region, &s.agent_id), s);
        metrics::gauge!(crate::fleet::metrics::AGENTS_CONNECTED).set(map.len() as f64);
        old
    }

    /// Removes the agent's session if it is still `session_id`.
    pub fn remove(&self, region: &str, agent_id: &str, session_id: u64) -> bool {
        let mut map = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        let k = key(region, agent_id);
        let same = map.get(&k).is_some_and(|s| s.session_id == session_id);
        if same {
            if let Some(s) = map.remove(&k) {
                let last = s
                    .last_heartbeat_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                self.departed
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(k, last);
            }
        }
        metrics::gauge!(crate::fleet::metrics::AGENTS_CONNECTED).set(map.len() as f64);
        same
    }

    /// When an agent with no session now last sent a heartbeat, if it had
    /// a session since this replica started.
    pub fn last_heard(&self, region: &str, agent_id: &str) -> Option<i64> {
        self.departed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(region, agent_id))
            .copied()
    }

    /// One agent's session.
    pub fn get(&self, region: &str, agent_id: &str) -> Option<Arc<Session>> {
        let map = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key(region, agent_id)).cloned()
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let map = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// How many agents are connected.
    pub fn len(&self) -> usize {
        self.sessions.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every session (leadership lost): their streams end.
    pub fn clear(&self) {
        let mut map = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        map.clear();
        metrics::gauge!(crate::fleet::metrics::AGENTS_CONNECTED).set(0.0);
    }

    /// The least busy agent of `region` that serves `source` and has room
    /// for another job.
    pub fn pick(&self, region: &str, source: &str) -> Option<Arc<Session>> {
        let map = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|s| s.region == region && s.sources.iter().any(|x| x == source))
            .filter(|s| s.takes_jobs())
            .min_by_key(|s| s.running.load(Ordering::Relaxed))
            .cloned()
    }
}
