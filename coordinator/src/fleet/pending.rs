//! Sends probes down agent streams and waits for their answers. Each probe
//! has an id; the answer is accepted only from the session it was sent to,
//! and one that misses the deadline is dropped (the round reports the store
//! unreachable).

use crate::fleet::registry::{Registry, Session};
use seawall_proto::v1::{
    coordinator_message, CoordinatorMessage, ProbeReply, ProbeRequest, RepositoryProbe, StoreProbe,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Requests sent down agent streams and not yet answered: probes, or a
/// failover's actions (`R` is the answer's type).
pub struct Pending<R> {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (u64, oneshot::Sender<R>)>>,
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        Pending {
            next: AtomicU64::new(0),
            waiting: Mutex::default(),
        }
    }
}

impl<R> Pending<R> {
    /// Hands answer `id` to whoever waits for it, if it came from the
    /// session the request went to; returns whether anyone did.
    pub fn deliver(&self, session: &Session, id: u64, reply: R) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match waiting.get(&id) {
            Some((sid, _)) if *sid == session.session_id => {}
            _ => return false,
        }
        match waiting.remove(&id) {
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

    /// Sends the message `make` builds for a fresh id to `session` and
    /// waits for the answer, at most `deadline` plus a margin for the way
    /// back.
    pub async fn request(
        &self,
        session: &Session,
        make: impl FnOnce(u64) -> CoordinatorMessage,
        deadline: Duration,
    ) -> Result<R, AskError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (session.session_id, tx));
        let msg = make(id);
        let margin = Duration::from_millis(500).max(deadline / 4);
        // A full outbox (an agent that does not read) waits no longer than
        // the answer would have.
        let answered = tokio::time::timeout(deadline + margin, async {
            session
                .outbox
                .send(Ok(msg))
                .await
                .map_err(|_| AskError::StreamClosed)?;
            rx.await.map_err(|_| AskError::StreamClosed)
        })
        .await;
        self.forget(id);
        match answered {
            Ok(r) => r,
            Err(_) => Err(AskError::NoAnswer(deadline + margin)),
        }
    }
}

/// Why an agent did not answer a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AskError {
    /// The agent is not connected to this replica.
    #[error("agent {region}/{agent} is not connected: unreachable")]
    NotConnected {
        /// Its region, as the topology names it.
        region: String,
        /// Its name.
        agent: String,
    },
    /// The agent is connected, but in another region than the topology
    /// says: an operator must fix one of them.
    #[error("agent {agent} is connected in region {other}, not {region}: an agent acts only in its certificate's region, so fix the topology's region (or the agent's)")]
    WrongRegion {
        /// Its name.
        agent: String,
        /// The region the topology names.
        region: String,
        /// The region its certificate names.
        other: String,
    },
    /// Its stream closed before the answer came.
    #[error("its stream closed")]
    StreamClosed,
    /// No answer within the deadline (and the margin for the way back).
    #[error("no answer within {}", humantime::format_duration(*.0))]
    NoAnswer(Duration),
}

impl AskError {
    /// Whether another attempt, without an operator's change, can succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, AskError::WrongRegion { .. })
    }
}

/// The deadline as the wire carries it.
pub fn deadline_ms(deadline: Duration) -> u32 {
    deadline.as_millis().min(u128::from(u32::MAX)) as u32
}

impl Pending<ProbeReply> {
    /// Sends `probes` to `session` and waits for the answer.
    pub async fn ask(
        &self,
        session: &Session,
        epoch: u64,
        probes: Vec<StoreProbe>,
        repository: Option<RepositoryProbe>,
        deadline: Duration,
    ) -> Result<ProbeReply, AskError> {
        self.request(
            session,
            |id| CoordinatorMessage {
                epoch,
                body: Some(coordinator_message::Body::Probe(ProbeRequest {
                    probe_id: id,
                    deadline_ms: deadline_ms(deadline),
                    probes,
                    repository,
                })),
            },
            deadline,
        )
        .await
    }
}

/// The session of agent `agent` in `region`, or why there is none: not
/// connected, or connected in another region than the topology says.
pub fn session_of(
    registry: &Registry,
    region: &str,
    agent: &str,
) -> Result<Arc<Session>, AskError> {
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
        return Err(AskError::WrongRegion {
            agent: agent.to_string(),
            region: region.to_string(),
            other: other.clone(),
        });
    }
    Err(AskError::NotConnected {
        region: region.to_string(),
        agent: agent.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::registry::next_session_id;

    fn session(
        region: &str,
        agent: &str,
    ) -> (
        Arc<Session>,
        tokio::sync::mpsc::Receiver<Result<CoordinatorMessage, tonic::Status>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let s = Arc::new(Session {
            session_id: next_session_id(),
            agent_id: agent.into(),
            region: region.into(),
            sources: vec!["db".into()],
            version: String::new(),
            hostname: String::new(),
            connected_ms: 0,
            last_heartbeat_ms: 0.into(),
            leased: false.into(),
            running: 0.into(),
            max_jobs: 0,
            outbox: tx,
            fingerprint: String::new(),
            cert_expires_ms: i64::MAX,
            ended: Default::default(),
            ready: true.into(),
            self_fenced: Vec::new(),
            check_files: Vec::new(),
        });
        (s, rx)
    }

    #[test]
    fn an_agent_named_in_the_wrong_region_is_told_apart_from_a_missing_one() {
        let registry = Registry::default();
        let (s, _rx) = session("east", "db-1");
        registry.insert(s);
        assert!(session_of(&registry, "east", "db-1").is_ok());
        let wrong = session_of(&registry, "west", "db-1").expect_err("wrong region");
        assert!(
            wrong
                .to_string()
                .contains("connected in region east, not west"),
            "{wrong}"
        );
        assert!(!wrong.retryable(), "a topology to fix is not waited out");
        let missing = session_of(&registry, "west", "db-2").expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("is not connected: unreachable"),
            "{missing}"
        );
        assert!(missing.retryable());
    }

    #[tokio::test]
    async fn an_answer_counts_only_from_the_session_asked_and_a_late_one_is_dropped() {
        let pending = Pending::<ProbeReply>::default();
        let (asked, mut rx) = session("east", "db-1");
        let (other, _rx2) = session("east", "db-2");
        let waiting = {
            let asked = asked.clone();
            let pending = &pending;
            async move {
                pending
                    .ask(&asked, 7, Vec::new(), None, Duration::from_millis(300))
                    .await
            }
        };
        let answering = async {
            let Some(Ok(msg)) = rx.recv().await else {
                panic!("no probe sent")
            };
            assert_eq!(msg.epoch, 7);
            let Some(coordinator_message::Body::Probe(p)) = msg.body else {
                panic!("not a probe")
            };
            let reply = ProbeReply {
                probe_id: p.probe_id,
                ..Default::default()
            };
            // Another agent cannot answer for it; the one asked can.
            assert!(!pending.deliver(&other, p.probe_id, reply.clone()));
            assert!(pending.deliver(&asked, p.probe_id, reply));
        };
        let (answer, ()) = tokio::join!(waiting, answering);
        assert!(answer.is_ok());
        // Nobody answers: the deadline and its margin, then an error.
        let silent = pending
            .ask(&asked, 7, Vec::new(), None, Duration::from_millis(100))
            .await;
        let silent = silent.expect_err("silent");
        assert!(matches!(silent, AskError::NoAnswer(_)), "{silent:?}");
        assert!(
            silent.to_string().starts_with("no answer within"),
            "{silent}"
        );
        assert!(!pending.deliver(&asked, 2, ProbeReply::default()));
    }
}
