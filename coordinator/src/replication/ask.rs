//! Sends probes down agent streams and waits for their answers. Each probe
//! has an id; the answer is accepted only from the session it was sent to,
//! and one that misses the deadline is dropped (the round reports the store
//! unreachable).

use crate::registry::{Registry, Session};
use seawall_proto::v1::{
    coordinator_message, CoordinatorMessage, ProbeReply, ProbeRequest, RepositoryProbe, StoreProbe,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Probes sent and not yet answered.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (u64, oneshot::Sender<ProbeReply>)>>,
}

impl Pending {
    /// Hands an answer to whoever waits for it, if it came from the session
    /// the probe went to; returns whether anyone did.
    pub fn deliver(&self, session: &Session, reply: ProbeReply) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match waiting.get(&reply.probe_id) {
            Some((sid, _)) if *sid == session.session_id => {}
            _ => return false,
        }
        match waiting.remove(&reply.probe_id) {
            Some((_, tx)) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Sends `probes` to `session` and waits for the answer, at most
    /// `deadline` plus a margin for the way back.
    pub async fn ask(
        &self,
        session: &Session,
        epoch: u64,
        probes: Vec<StoreProbe>,
        repository: Option<RepositoryProbe>,
        deadline: Duration,
    ) -> Result<ProbeReply, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (session.session_id, tx));
        let msg = CoordinatorMessage {
            epoch,
            body: Some(coordinator_message::Body::Probe(ProbeRequest {
                probe_id: id,
                deadline_ms: deadline.as_millis().min(u128::from(u32::MAX)) as u32,
                probes,
                repository,
            })),
        };
        let margin = Duration::from_millis(500).max(deadline / 4);
        // A full outbox (an agent that does not read) waits no longer than
        // the answer would have.
        let answered = tokio::time::timeout(deadline + margin, async {
            session
                .outbox
                .send(Ok(msg))
                .await
                .map_err(|_| "its stream closed".to_string())?;
            rx.await.map_err(|_| "its stream closed".to_string())
        })
        .await;
        self.forget(id);
        match answered {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(deadline + margin)
            )),
        }
    }
}

/// The session of agent `agent` in `region`, or why there is none: not
/// connected, or connected in another region than the topology says.
pub fn session_of(registry: &Registry, region: &str, agent: &str) -> Result<Arc<Session>, String> {
    if let Some(s) = registry.get(region, agent) {
        return Ok(s);
    }
    let elsewhere: Vec<String> = registry
        .all()
        .into_iter()
        .filter(|s| s.agent_id == agent)
        .map(|s| s.region.clone())
        .collect();
    if let Some(other) = elsewhere.first() {
        return Err(format!(
            "agent {agent} is connected in region {other}, not {region}: an agent acts only in its certificate's region, so fix the topology's region (or the agent's)"
        ));
    }
    Err(format!(
        "agent {region}/{agent} is not connected: unreachable"
    ))
}
