//! The agent stream. The agent's certificate says who it is and which
//! region it serves; its hello must agree. A follower answers with a
//! redirect to the leader; the leader registers the agent (bound to its
//! lease), takes heartbeats, progress and results, and sends commands
//! stamped with its epoch.

use super::agent_input::{bounded, oversized_hello};
use crate::fleet::auth::peer_identity;
use crate::fleet::registry::{next_session_id, Session};
use crate::jobs::{AttemptFailure, Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::records::{agent_key, AgentRecord, JobState};
use seawall_common::tls::certinfo::{fingerprint, not_after};
use seawall_common::tls::Identity;
use seawall_proto::v1::agent_service_server::AgentService;
use seawall_proto::v1::{
    agent_message, coordinator_message, AgentMessage, CoordinatorMessage, Hello, LeadershipAnswer,
    LeadershipQuery, Lease, OperationStatus, Redirect, ResultRecorded, RevokedCertificates,
    SelfFence, Welcome,
};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued per agent before sends wait.
const OUTBOX: usize = 64;

/// The AgentService implementation.
pub struct AgentApi {
    coord: Arc<Coordinator>,
}

impl AgentApi {
    /// Serves agents for `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        AgentApi { coord }
    }
}

type Replies = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

fn check_hello(hello: &Hello, region: &str, name: &str) -> Result<(), Status> {
    if hello.region != region {
        return Err(Status::permission_denied(format!(
            "this agent's certificate names region {region:?}, but it says it serves {:?}: an agent acts only in its certificate's region",
            hello.region
        )));
    }
    if hello.agent_id != name {
        return Err(Status::permission_denied(format!(
            "this agent's certificate names agent {name:?}, but it says it is {:?}",
            hello.agent_id
        )));
    }
    if let Some(why) = oversized_hello(hello) {
        return Err(Status::invalid_argument(why));
    }
    Ok(())
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = Replies;

    async fn leadership(
        &self,
        request: Request<LeadershipQuery>,
    ) -> Result<Response<LeadershipAnswer>, Status> {
        match peer_identity(&request) {
            Some(Identity::Agent { .. }) => {}
            Some(other) => {
                return Err(Status::permission_denied(format!(
                    "{other} is not an agent: leadership is answered to agents"
                )))
            }
            None => return Err(Status::unauthenticated("no agent certificate")),
        }
        Ok(Response::new(LeadershipAnswer {
            leader: self.coord.lead().is_some(),
            coordinator_id: self.coord.me.id.clone(),
        }))
    }

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Replies>, Status> {
        let (region, name) =
            match peer_identity(&request) {
                Some(Identity::Agent { region, name }) => (region, name),
                Some(other) => {
                    return Err(Status::permission_denied(format!(
                        "{other} is not an agent: the agent stream needs an agent certificate"
                    )))
                }
                None => return Err(Status::unauthenticated(
                    "no agent certificate: agents connect with mutual TLS (seawall certs agent)",
                )),
            };
        let leaf = request.peer_certs().and_then(|c| c.first().cloned());
        let fingerprint = leaf.as_deref().map(fingerprint).unwrap_or_default();
        let cert_expires_ms = leaf
            .as_deref()
            .and_then(|d| not_after(d).ok())
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))?;
        let hello = match first {
            Some(Ok(AgentMessage {
                body: Some(agent_message::Body::Hello(h)),
            })) => h,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message must be hello")),
            Some(Err(e)) => return Err(e),
            None => return Err(Status::cancelled("the agent closed the stream")),
        };
        check_hello(&hello, &region, &name)?;

        let coord = self.coord.clone();
        let Some(lead) = coord.lead() else {
            // A follower names the leader and ends the stream.
            let leader = coord.store.leader().await.ok().flatten();
            let msg = CoordinatorMessage {
                epoch: leader.as_ref().map(|l| l.epoch.max(0) as u64).unwrap_or(0),
                body: Some(coordinator_message::Body::Redirect(Redirect {
                    leader_id: leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
                    leader_address: leader.map(|l| l.address).unwrap_or_default(),
                })),
            };
            let once = tokio_stream::once(Ok(msg));
            return Ok(Response::new(Box::pin(once)));
        };

        // An agent whose mark is above this leader's epoch obeyed someone
        // the election never chose (a forged epoch), unless this replica
        // was deposed: the store says which.
        if hello.newest_epoch > lead.epoch() {
            let leader = coord.store.leader().await.ok().flatten();
            let deposed = leader.as_ref().is_some_and(|l| {
                l.id != coord.me.id && u64::try_from(l.epoch).unwrap_or(0) >= hello.newest_epoch
            });
            if !deposed {
                let why = format!(
                    "agent {region}/{name} has obeyed epoch {}, above the elected leader's {}: a coordinator that was never elected commanded it (revoke that certificate), and the agent refuses the real leader until its mark is reset: stop it and run `seawall agent --config ... --reset-epoch {}`",
                    hello.newest_epoch,
                    lead.epoch(),
                    lead.epoch()
                );
                tracing::error!(agent = %name, region = %region, "{why}");
                metrics::counter!(crate::fleet::metrics::AGENTS_FORGED_EPOCH_TOTAL).increment(1);
                coord.audit(&lead, "coordinator", why.clone()).await;
                return Err(Status::failed_precondition(why));
            }
        }
        let (tx, rx) = mpsc::channel(OUTBOX);
        let session = Arc::new(Session {
            session_id: next_session_id(),
            agent_id: name.clone(),
            region: region.clone(),
            sources: hello.sources.iter().map(|s| s.name.clone()).collect(),
            version: hello.version.clone(),
            hostname: hello.hostname.clone(),
            connected_ms: now_ms(),
            last_heartbeat_ms: now_ms().into(),
            leased: false.into(),
            running: (hello.running_jobs.len() as u32).into(),
            max_jobs: hello.max_jobs,
            outbox: tx.clone(),
            fingerprint: fingerprint.clone(),
            cert_expires_ms,
            ended: lead.tree.token.child_token(),
            ready: false.into(),
            self_fenced: hello.self_fenced.clone(),
            check_files: hello.check_files.clone(),
        });
        let record = AgentRecord {
            agent_id: name.clone(),
            region: region.clone(),
            version: hello.version.clone(),
            hostname: hello.hostname.clone(),
            sources: session.sources.clone(),
            connected_ms: session.connected_ms,
            coordinator: coord.me.id.clone(),
            cert_fingerprint: fingerprint,
            cert_expires_ms: (cert_expires_ms != i64::MAX).then_some(cert_expires_ms),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| Status::internal(format!("registration not encoded: {e}")))?;
        coord
            .store
            .put_bound(lead.fence(), &agent_key(&region, &name), &value)
            .await
            .map_err(|e| Status::unavailable(format!("registration not recorded: {e}")))?;
        coord.registry.insert(session.clone());
        reconcile(&coord, &lead, &session, &hello).await;
        let welcome = CoordinatorMessage {
            epoch: lead.epoch(),
            body: Some(coordinator_message::Body::Welcome(Welcome {
                coordinator_id: coord.me.id.clone(),
                heartbeat_interval_secs: coord.config.heartbeat.as_secs().max(1) as u32,
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        let mut revocations_sent = send_revoked(&coord, lead.epoch(), &tx, 0).await;
        coord.wake.notify_one();
        if cert_expires_ms != i64::MAX {
            metrics::gauge!(crate::fleet::metrics::AGENT_CERTIFICATE_EXPIRY, "region" => region.clone(), "agent" => name.clone())
                .set(cert_expires_ms as f64 / 1000.0);
        }
        tracing::info!(agent = %name, region = %region, "agent connected");
        // An old primary back after a failover is fenced before it can
        // take a write.
        {
            let (coord, lead, session) = (coord.clone(), lead.clone(), session.clone());
            lead.tree.clone().spawn(async move {
                crate::failover::rejoin::on_connect(&coord, &lead, &session).await;
                session.ready.store(true, Ordering::Relaxed);
                coord.wake.notify_one();
            });
        }

        // Both tasks belong to this term's tree: a lost lead stops them
        // (and the stream with them) before the next term starts.
        let tree = lead.tree.clone();
        let reader_coord = coord.clone();
        let reader_session = session.clone();
        tree.spawn(async move {
            let lost = lead.leadership.lost();
            tokio::pin!(lost);
            let ended = reader_session.ended.clone();
            loop {
                let msg = tokio::select! {
                    _ = &mut lost => break,
                    _ = ended.cancelled() => break,
                    m = inbound.next() => m,
                };
                match msg {
                    Some(Ok(m)) => handle(&reader_coord, &lead, &reader_session, m).await,
                    Some(Err(e)) => {
                        tracing::info!(agent = %reader_session.agent_id, error = %e, "agent stream failed");
                        break;
                    }
                    None => break,
                }
            }
            let s = &reader_session;
            if reader_coord.registry.remove(&s.region, &s.agent_id, s.session_id) {
                if let Some(lead) = reader_coord.lead() {
                    let key = agent_key(&s.region, &s.agent_id);
                    let _ = reader_coord.store.delete(lead.fence(), &key).await;
                }
            }
            tracing::info!(agent = %s.agent_id, "agent disconnected");
        });
        // Heartbeat from the coordinator's side: an empty message with the
        // epoch lets an agent notice a silent coordinator.
        let ping_tx = tx;
        let every = coord.config.heartbeat;
        let ping_coord = coord.clone();
        let ping_session = session.clone();
        tree.spawn(async move {
            loop {
                tokio::select! {
                    _ = ping_session.ended.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                // A certificate revoked or expired since the handshake
                // ends the stream within one heartbeat.
                if let Some(why) = certificate_ended(&ping_coord, &ping_session) {
                    tracing::warn!(agent = %ping_session.agent_id, region = %ping_session.region, %why, "ending the agent's session");
                    let _ = ping_tx.send(Err(Status::unauthenticated(why))).await;
                    ping_session.ended.cancel();
                    break;
                }
                // An agent silent past what declares a region down is cut
                // off: a stream that resumes after a partition must not
                // skip the checks a reconnecting agent gets (an old
                // primary fenced before anything else).
                let silent_ms = now_ms() - ping_session.last_heartbeat_ms.load(Ordering::Relaxed);
                if silent_ms > crate::fleet::registry::silence_limit(every).as_millis() as i64 {
                    tracing::warn!(agent = %ping_session.agent_id, region = %ping_session.region, silent_ms, "no heartbeat from the agent: ending its session");
                    let _ = ping_tx
                        .send(Err(Status::unavailable(format!(
                            "no heartbeat for {silent_ms} ms: reconnect"
                        ))))
                        .await;
                    ping_session.ended.cancel();
                    break;
                }
                let Some(lead) = ping_coord.lead() else { break };
                revocations_sent =
                    send_revoked(&ping_coord, lead.epoch(), &ping_tx, revocations_sent).await;
                let ping = CoordinatorMessage {
                    epoch: lead.epoch(),
                    body: None,
                };
                if ping_tx.send(Ok(ping)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Most revoked fingerprints sent to an agent (the newest).
const MAX_REVOKED_SENT: usize = 10_000;

/// Sends the agent every revoked certificate when more are known than the
/// `sent` it already has; returns how many it now has.
async fn send_revoked(
    coord: &Coordinator,
    epoch: u64,
    tx: &mpsc::Sender<Result<CoordinatorMessage, Status>>,
    sent: usize,
) -> usize {
    let known = coord.revoked.count();
    if known <= sent {
        return sent;
    }
    let msg = CoordinatorMessage {
        epoch,
        body: Some(coordinator_message::Body::Revoked(RevokedCertificates {
            fingerprints: coord.revoked.fingerprints(MAX_REVOKED_SENT),
        })),
    };
    match tx.send(Ok(msg)).await {
        Ok(()) => known,
        Err(_) => sent,
    }
}

/// Why a session's certificate no longer admits it, if it does not.
fn certificate_ended(coord: &Coordinator, session: &Session) -> Option<String> {
    if coord.revoked.is_revoked(&session.fingerprint) {
        return Some(format!(
            "certificate {} is revoked: use a newly issued one (seawall certs)",
            session.fingerprint
        ));
    }
    (now_ms() >= session.cert_expires_ms).then(|| {
        "the certificate this session was opened with has expired: reconnect with the renewed one"
            .to_string()
    })
}

/// Jobs this replica thinks the agent runs but the agent does not list
/// were lost (the agent restarted): they fail their attempt.
async fn reconcile(coord: &Coordinator, lead: &Lead, session: &Session, hello: &Hello) {
    let mine: Vec<String> = match lead.active.lock() {
        Ok(active) => active
            .values()
            .filter(|(j, _)| j.state == JobState::Running && assigned_to(j, session))
            .map(|(j, _)| j.job_id.clone())
            .collect(),
        Err(_) => return,
    };
    for job in mine {
        if !hello.running_jobs.contains(&job) {
            let _ = coord
                .job_failed(
                    lead,
                    &job,
                    &AttemptFailure::transient("the agent restarted while running it"),
                )
                .await;
        }
    }
}

pub(crate) async fn handle(coord: &Coordinator, lead: &Lead, session: &Session, msg: AgentMessage) {
    match bounded(msg).body {
        Some(agent_message::Body::Heartbeat(h)) => {
            // Stored before the lease is granted: the leader's count of
            // the agent's bound never starts before the agent's own.
            session.last_heartbeat_ms.store(now_ms(), Ordering::Relaxed);
            session.running.store(h.running_jobs, Ordering::Relaxed);
            if h.seq > 0 {
                session.leased.store(true, Ordering::Relaxed);
            }
            grant_lease(coord, lead, session, h.seq).await;
        }
        Some(agent_message::Body::Progress(p)) => {
            if let Some((mut job, rev)) = coord.active_job(lead, &p.job_id) {
                if !assigned_to(&job, session) {
                    return;
                }
                job.bytes_done = p.bytes_done;
                let last = job.last_news_ms.unwrap_or(0);
                job.last_news_ms = Some(now_ms());
                // Progress is written at most every 5 s per job.
                if now_ms() - last >= 5000 {
                    let _ = coord.save_job(lead, job, rev).await;
                } else if let Ok(mut active) = lead.active.lock() {
                    active.insert(job.job_id.clone(), (job, rev));
                }
            }
        }
        Some(agent_message::Body::Result(r)) => {
            let Some((job, _)) = coord.active_job(lead, &r.job_id) else {
                tracing::info!(job = %r.job_id, "result for a job that is not active; ignored");
                recorded(lead, session, &r.job_id).await;
                return;
            };
            // An agent reports only for jobs of its own region it was given.
            if !assigned_to(&job, session) {
                refuse_foreign_result(coord, lead, session, &r.job_id, &job.region).await;
                return;
            }
            session
                .running
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                })
                .ok();
            let span = tracing::info_span!("job", job = %r.job_id, epoch = r.epoch, agent = %session.agent_id);
            let _entered = span.enter();
            let succeeded = r.status == OperationStatus::Succeeded as i32
                || r.status == OperationStatus::SucceededWithWarnings as i32;
            // A drill's report goes into its journal before the job is
            // settled, so the drill never sees an ended job without it.
            if let Some(seawall_proto::v1::operation_result::Output::RestoreDrill(out)) = &r.output
            {
                if let Some((job, _)) = coord.active_job(lead, &r.job_id) {
                    if let Err(e) = crate::drills::restore::record(coord, lead, &job, out).await {
                        tracing::warn!(job = %r.job_id, error = %e, "drill report not recorded");
                    }
                }
            }
            let outcome = if succeeded {
                coord.job_succeeded(lead, &r.job_id, &r).await
            } else {
                coord
                    .job_failed(lead, &r.job_id, &AttemptFailure::reported(&r))
                    .await
            };
            match outcome {
                Ok(()) => recorded(lead, session, &r.job_id).await,
                // Not acknowledged: the agent sends it again after it
                // reconnects, to this leader or the next.
                Err(e) => tracing::warn!(job = %r.job_id, error = %e, "result not recorded"),
            }
        }
        Some(agent_message::Body::Refused(r)) => {
            let (reason, job_id) = (r.reason.clone(), r.job_id.clone());
            // Only a refusal of a job this agent was given counts: another
            // agent's job, or one already settled, is left as it is.
            let Some((job, _)) = coord.active_job(lead, &r.job_id) else {
                tracing::warn!(agent = %session.agent_id, job = %job_id, "refusal for a job that is not active; ignored");
                return;
            };
            if !assigned_to(&job, session) {
                tracing::warn!(agent = %session.agent_id, region = %session.region, job = %job_id, "refusal for a job this agent was not given; ignored");
                return;
            }
            tracing::warn!(agent = %session.agent_id, job = %job_id, epoch = r.epoch, newest = r.newest_epoch, %reason, "agent refused a command");
            coord
                .audit(
                    lead,
                    &session.agent_id,
                    format!(
                        "refused command for job {job_id} (epoch {} < {}): {reason}",
                        r.epoch, r.newest_epoch
                    ),
                )
                .await;
            // A newer epoch means another replica leads: its fence stops our
            // writes, and our lease check stops us; nothing to settle here.
            if r.newest_epoch <= lead.epoch() {
                let _ = coord
                    .job_failed(lead, &r.job_id, &AttemptFailure::transient(reason))
                    .await;
            }
        }
        Some(agent_message::Body::ProbeReply(reply)) => {
            if !coord.probes.deliver(session, reply.probe_id, reply) {
                tracing::debug!(agent = %session.agent_id, "a probe answer arrived after its deadline; dropped");
            }
        }
        Some(agent_message::Body::ActionReply(reply)) => {
            if !coord.actions.deliver(session, reply.action_id, reply) {
                tracing::warn!(agent = %session.agent_id, "a failover action's answer arrived after its deadline; dropped");
            }
        }
        Some(agent_message::Body::Hello(_)) | None => {}
    }
}

/// A result for a job this agent was not given: counted, audited at most
/// once a minute, and the session ended when the agent keeps at it.
async fn refuse_foreign_result(
    coord: &Coordinator,
    lead: &Lead,
    session: &Session,
    job_id: &str,
    job_region: &str,
) {
    use crate::fleet::offences::{Verdict, CUT_OFF};
    let verdict = coord
        .offences
        .note(&session.region, &session.agent_id, now_ms());
    let (audit, cut_off) = match verdict {
        Verdict::Audit { count } => (Some(count), false),
        Verdict::Counted => (None, false),
        Verdict::CutOff { audit } => (audit, true),
    };
    if let Some(count) = audit {
        tracing::warn!(agent = %session.agent_id, region = %session.region, job = %job_id, count, "results for jobs this agent was not given; refused");
        let event = if count == 1 {
            format!("refused a result for job {job_id} of region {job_region}")
        } else {
            format!("refused {count} results for jobs it was not given (the last: job {job_id} of region {job_region})")
        };
        coord.audit(lead, &session.agent_id, event).await;
    }
    if cut_off {
        tracing::warn!(agent = %session.agent_id, region = %session.region, "more than {CUT_OFF} results for jobs this agent was not given in a minute: ending its session");
        let _ = session
            .outbox
            .try_send(Err(Status::permission_denied(format!(
                "more than {CUT_OFF} results for jobs this agent was not given in a minute"
            ))));
        session.ended.cancel();
        return;
    }
    recorded(lead, session, job_id).await;
}

/// Whether `job` was assigned to this session's agent (name and region).
fn assigned_to(job: &crate::model::records::JobRecord, session: &Session) -> bool {
    job.region == session.region && job.agent_id.as_deref() == Some(session.agent_id.as_str())
}

/// Tells the agent a job's result needs no resending.
/// Answers heartbeat `seq` with the agent's lease (what it fences itself
/// when no leader answers for the bound).
async fn grant_lease(coord: &Coordinator, lead: &Lead, session: &Session, seq: u64) {
    let covered = crate::failover::self_fence::covered(
        &coord.config.services,
        &session.region,
        &session.agent_id,
    );
    let after_ms = covered
        .after
        .map_or(0, |a| a.as_millis().min(u128::from(u32::MAX)) as u32);
    let lease = CoordinatorMessage {
        epoch: lead.epoch(),
        body: Some(coordinator_message::Body::Lease(Lease {
            heartbeat_seq: seq,
            self_fence_after_ms: after_ms,
            sources: covered
                .sources
                .into_iter()
                .map(|(source, stop_postgres)| SelfFence {
                    source,
                    stop_postgres,
                })
                .collect(),
            renew_every_ms: after_ms / 4,
        })),
    };
    let _ = session.outbox.send(Ok(lease)).await;
}

async fn recorded(lead: &Lead, session: &Session, job_id: &str) {
    let ack = CoordinatorMessage {
        epoch: lead.epoch(),
        body: Some(coordinator_message::Body::Recorded(ResultRecorded {
            job_id: job_id.to_string(),
        })),
    };
    let _ = session.outbox.send(Ok(ack)).await;
}
