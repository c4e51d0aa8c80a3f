//! The agent's stream to the leader, over mutual TLS: hello, heartbeats,
//! progress and results up; commands down, each checked against the epoch
//! mark before it is obeyed. A follower's redirect is followed; a silent or
//! lost coordinator is left for the next address, with backoff.

use super::certs::{AgentTls, RELOAD_EVERY};
pub use super::channel::{host_of, open_channel, url_of};
use super::config::AgentConfig;
use super::epoch::{EpochGuard, Verdict};
use super::jobs::JobRunner;
use seawall_proto::v1::agent_service_client::AgentServiceClient;
use seawall_proto::v1::{
    agent_message, coordinator_message, AgentMessage, CommandRefused, CoordinatorMessage,
    Heartbeat, Hello, SourceInfo,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Redirects followed at once before the backoff applies to them too.
const FREE_REDIRECTS: u32 = 2;

/// Where a redirect sends the agent: to the leader it names, unless that
/// leader's epoch is older than one this agent has already obeyed (a
/// replica with a stale view), in which case the agent tries the next
/// configured address.
fn redirect(r: &seawall_proto::v1::Redirect, epoch: u64, newest: u64) -> Ended {
    if r.leader_address.is_empty() {
        return Ended::Next("no leader elected yet".into());
    }
    if epoch < newest {
        return Ended::Next(format!(
            "a redirect to {} at epoch {epoch}, older than {newest}, the newest this agent has obeyed: ignored",
            r.leader_address
        ));
    }
    Ended::Redirect(r.leader_address.clone())
}

/// Shortest and longest wait between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Unacknowledged results kept for resending (a leader that records none
/// for this long is not keeping up anyway).
const MAX_UNCONFIRMED: usize = 256;
/// How long opening a connection (TCP, TLS) or a session may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a connection needs.
pub struct Link {
    /// The configuration.
    pub config: Arc<AgentConfig>,
    /// Certificates, renewed from disk.
    pub tls: Arc<AgentTls>,
    /// The epoch mark.
    pub epoch: Arc<EpochGuard>,
    /// Running jobs.
    pub jobs: Arc<JobRunner>,
    /// Answers the leader's replication probes.
    pub prober: Arc<super::probes::Prober>,
    /// Results sent or queued but not yet acknowledged by a leader (a
    /// stopping agent waits for 0).
    pub unacked: tokio::sync::watch::Sender<usize>,
    /// Where probe and action answers run, so a stopping agent ends them.
    pub tasks: seawall_common::tasks::Tree,
    /// The lease on this agent's primaries, renewed by heartbeats.
    pub lease: Arc<super::lease::LeaseState>,
    /// What fences them when the lease lapses.
    pub self_fence: Arc<super::self_fence::SelfFencer>,
}

/// What a message from the coordinator asks of the session.
enum Next {
    /// Carry on.
    Stay,
    /// End this connection.
    End(Ended),
    /// Heartbeat at this interval (the leader's welcome).
    Heartbeat(Duration),
    /// The leader settled this job's result: stop resending it.
    Recorded(String),
    /// The fleet's revoked certificates.
    Revoked(Vec<String>),
}

/// Why a connection ended.
enum Ended {
    /// Go to this address next.
    Redirect(String),
    /// Try the next configured address.
    Next(String),
    /// The certificate was renewed: connect to the same address with it.
    Renewed,
}

impl Link {
    /// Connects, serves, reconnects, until the process ends.
    pub async fn run(
        &self,
        uplink: mpsc::UnboundedSender<AgentMessage>,
        mut upstream: mpsc::UnboundedReceiver<AgentMessage>,
    ) {
        let mut index = 0usize;
        let mut target: Option<String> = None;
        let mut backoff = BACKOFF_MIN;
        let mut redirects = 0u32;
        // Results are sent again after a reconnect until the leader
        // acknowledges them (it ignores results for jobs already settled).
        let mut unconfirmed: Vec<AgentMessage> = Vec::new();
        loop {
            let address = target.take().unwrap_or_else(|| {
                let a = self.config.coordinators[index % self.config.coordinators.len()].clone();
                index += 1;
                a
            });
            let url = url_of(&address);
            let started = std::time::Instant::now();
            match self
                .session(&url, &uplink, &mut upstream, &mut unconfirmed)
                .await
            {
                Ok(Ended::Redirect(to)) => {
                    tracing::info!(from = %url, to = %to, "redirected to the leader");
                    target = Some(to);
                    redirects += 1;
                    // Replicas that send each other's agents back and
                    // forth (a leader change in flight) are not followed
                    // in a tight loop.
                    if redirects <= FREE_REDIRECTS {
                        backoff = BACKOFF_MIN;
                        continue;
                    }
                }
                Ok(Ended::Renewed) => {
                    metrics::gauge!(crate::daemon::metrics::CONNECTED).set(0.0);
                    target = Some(address);
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Ok(Ended::Next(why)) => {
                    redirects = 0;
                    tracing::warn!(coordinator = %url, %why, "connection ended");
                    metrics::gauge!(crate::daemon::metrics::CONNECTED).set(0.0);
                    // A session that lasted was a success: the next
                    // attempt starts from the shortest wait again.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(e) => {
                    tracing::warn!(coordinator = %url, error = %e, "cannot reach coordinator");
                    metrics::gauge!(crate::daemon::metrics::CONNECTED).set(0.0);
                }
            }
            let jitter =
                Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn session(
        &self,
        url: &str,
        uplink: &mpsc::UnboundedSender<AgentMessage>,
        upstream: &mut mpsc::UnboundedReceiver<AgentMessage>,
        unconfirmed: &mut Vec<AgentMessage>,
    ) -> Result<Ended, String> {
        // Files renewed while disconnected (a revoked or expired
        // certificate replaced) are used by this attempt.
        self.tls.renewed().await;
        // The next coordinator is tried when this one does not answer.
        let (channel, accepted) =
            super::channel::open_watched(&self.tls, url, OPEN_TIMEOUT).await?;
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        // Results queued while disconnected are reported right after the
        // hello, so the hello lists their jobs as still ours.
        let mut taken = 0;
        while let Ok(m) = upstream.try_recv() {
            if matches!(m.body, Some(agent_message::Body::Result(_))) {
                unconfirmed.push(m);
                taken += 1;
            }
        }
        self.count_unacked(unconfirmed);
        for _ in 0..taken {
            self.jobs.result_taken();
        }
        let mut running = self.jobs.running_ids();
        for m in unconfirmed.iter() {
            if let Some(agent_message::Body::Result(r)) = &m.body {
                running.push(r.job_id.clone());
            }
        }
        let hello = Hello {
            agent_id: self.config.id.clone(),
            region: self.config.region.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: hostname(),
            // Mirror entries are served like sources, so the coordinator
            // hands a mirror schedule's jobs to an agent that has it.
            sources: self
                .config
                .sources
                .iter()
                .map(|s| SourceInfo {
                    name: s.name.clone(),
                    kind: s.kind.name().into(),
                })
                .chain(self.config.mirrors.iter().map(|m| SourceInfo {
                    name: m.name.clone(),
                    kind: "mirror".into(),
                }))
                .collect(),
            newest_epoch: self.epoch.newest(),
            running_jobs: running,
            max_jobs: self.config.max_jobs,
            self_fenced: self.self_fence.fenced(),
            check_files: self.config.check_files_as_named(),
        };
        let _ = tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            })
            .await;
        let mut inbound = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| format!("no answer to the session's opening within {OPEN_TIMEOUT:?}"))?
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
        let mut heartbeat = Duration::from_secs(5);
        let mut welcomed = false;
        // Heartbeats go at the welcome's interval, or faster while they
        // renew a lease on primaries.
        let beat_every = |heartbeat: Duration| {
            self.lease
                .renew_every()
                .map_or(heartbeat, |r| r.min(heartbeat))
        };
        let mut beating = beat_every(heartbeat);
        let mut tick = tokio::time::interval(beating);
        let mut renewal = tokio::time::interval(RELOAD_EVERY);
        renewal.tick().await;
        // Counted from the coordinator's last message, not restarted by
        // this loop's own heartbeats: a partition that swallows the
        // coordinator's pings must end the stream, so that the agent
        // reconnects (and the leader checks its stores) once it heals.
        let mut last_word = tokio::time::Instant::now();
        let mut self_fenced = self.self_fence.watch();
        self_fenced.mark_unchanged();
        loop {
            let silence = heartbeat * 3;
            tokio::select! {
                _ = tokio::time::sleep_until(last_word + silence) => {
                    return Ok(Ended::Next(format!("no word from the coordinator for {silence:?}")));
                }
                msg = inbound.message() => {
                    last_word = tokio::time::Instant::now();
                    let msg = match msg {
                        Err(s) => return Ok(Ended::Next(format!("{}: {}", s.code(), s.message()))),
                        Ok(None) => return Ok(Ended::Next("the coordinator closed the stream".into())),
                        Ok(Some(m)) => m,
                    };
                    match self.obey(msg, uplink, &tx).await? {
                        Next::End(ended) => return Ok(ended),
                        Next::Heartbeat(every) => {
                            heartbeat = every;
                        }
                        Next::Recorded(job) => {
                            unconfirmed.retain(|m| {
                                !matches!(&m.body, Some(agent_message::Body::Result(r)) if r.job_id == job)
                            });
                            self.count_unacked(unconfirmed);
                        }
                        Next::Revoked(fingerprints) => {
                            match self.tls.revoked.add(&fingerprints) {
                                Ok(0) => {}
                                Ok(added) => tracing::warn!(added, "certificates revoked: coordinators presenting them are refused from now on"),
                                Err(e) => tracing::error!(error = %e, "revoked certificates not kept: a restarted agent would not know them"),
                            }
                            let current = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            if current.is_some_and(|fp| self.tls.revoked.contains(&fp)) {
                                return Ok(Ended::Next("this coordinator's own certificate is revoked".into()));
                            }
                        }
                        Next::Stay => {}
                    }
                    if beat_every(heartbeat) != beating {
                        beating = beat_every(heartbeat);
                        tick = tokio::time::interval(beating);
                    }
                    if !welcomed {
                        welcomed = true;
                        metrics::gauge!(crate::daemon::metrics::CONNECTED).set(1.0);
                        for m in unconfirmed.iter() {
                            let _ = tx.send(m.clone()).await;
                        }
                    }
                }
                m = upstream.recv() => {
                    let Some(m) = m else { return Ok(Ended::Next("shutting down".into())) };
                    if matches!(m.body, Some(agent_message::Body::Result(_))) {
                        // Kept until the leader acknowledges it, in case
                        // this stream breaks first; bounded all the same.
                        unconfirmed.push(m.clone());
                        if unconfirmed.len() > MAX_UNCONFIRMED {
                            unconfirmed.remove(0);
                        }
                        self.count_unacked(unconfirmed);
                        self.jobs.result_taken();
                    }
                    if tx.send(m).await.is_err() {
                        return Ok(Ended::Next("the stream to the coordinator closed".into()));
                    }
                }
                _ = self_fenced.changed() => {
                    // The leader's answers were only late, perhaps: a new
                    // hello tells it what was fenced, and it decides.
                    return Ok(Ended::Next("fenced this region's primaries on a lapsed lease: reconnecting".into()));
                }
                _ = renewal.tick() => {
                    // A renewed certificate is used at once, not when the
                    // old one has expired and the coordinator ends the stream.
                    if self.tls.renewed().await {
                        return Ok(Ended::Renewed);
                    }
                }
                _ = tick.tick() => {
                    let beat = AgentMessage {
                        body: Some(agent_message::Body::Heartbeat(Heartbeat {
                            sent_unix_ms: chrono::Utc::now().timestamp_millis() as u64,
                            running_jobs: self.jobs.running_ids().len() as u32,
                            seq: self.lease.beat(),
                        })),
                    };
                    if tx.send(beat).await.is_err() {
                        return Ok(Ended::Next("the stream to the coordinator closed".into()));
                    }
                }
            }
        }
    }

    fn count_unacked(&self, unconfirmed: &[AgentMessage]) {
        self.unacked.send_replace(unconfirmed.len());
        metrics::gauge!(crate::daemon::metrics::RESULTS_UNACKNOWLEDGED)
            .set(unconfirmed.len() as f64);
    }

    /// Checks one command's epoch and carries it out.
    async fn obey(
        &self,
        msg: CoordinatorMessage,
        uplink: &mpsc::UnboundedSender<AgentMessage>,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<Next, String> {
        if let Some(coordinator_message::Body::Redirect(r)) = &msg.body {
            return Ok(Next::End(redirect(r, msg.epoch, self.epoch.newest())));
        }
        let verdict = self.epoch.check(msg.epoch).map_err(|e| e.to_string())?;
        if verdict == Verdict::Impossible {
            metrics::counter!(crate::daemon::metrics::REFUSED_COMMANDS_TOTAL).increment(1);
            tracing::error!(
                epoch = msg.epoch,
                "refused a command with an epoch no store issues: a forged command? disconnecting"
            );
            return Ok(Next::End(Ended::Next(format!(
                "the coordinator sent epoch {}, beyond any etcd revision",
                msg.epoch
            ))));
        }
        if let Verdict::Refuse(newest) = verdict {
            metrics::counter!(crate::daemon::metrics::REFUSED_COMMANDS_TOTAL).increment(1);
            let job_id = match &msg.body {
                Some(coordinator_message::Body::Assign(a)) => a.job_id.clone(),
                Some(coordinator_message::Body::Cancel(c)) => c.job_id.clone(),
                _ => String::new(),
            };
            tracing::warn!(epoch = msg.epoch, newest, job = %job_id, "refused a command from a deposed leader");
            let _ = tx
                .send(AgentMessage {
                    body: Some(agent_message::Body::Refused(CommandRefused {
                        job_id,
                        epoch: msg.epoch,
                        newest_epoch: newest,
                        reason: format!(
                            "epoch {} is older than {newest}, the newest this agent has seen",
                            msg.epoch
                        ),
                    })),
                })
                .await;
            // A deposed leader is not worth staying connected to.
            return Ok(Next::End(Ended::Next(format!(
                "the coordinator's epoch {} is older than {newest}",
                msg.epoch
            ))));
        }
        match msg.body {
            Some(coordinator_message::Body::Welcome(w)) => {
                tracing::info!(coordinator = %w.coordinator_id, epoch = msg.epoch, "connected to the leader");
                return Ok(Next::Heartbeat(Duration::from_secs(u64::from(
                    w.heartbeat_interval_secs.max(1),
                ))));
            }
            Some(coordinator_message::Body::Recorded(r)) => return Ok(Next::Recorded(r.job_id)),
            Some(coordinator_message::Body::Revoked(r)) => {
                return Ok(Next::Revoked(r.fingerprints))
            }
            Some(coordinator_message::Body::Lease(lease)) => self.lease.granted(&lease),
            Some(coordinator_message::Body::Assign(job)) => {
                let job_id = job.job_id.clone();
                tracing::info!(job = %job_id, epoch = msg.epoch, operation = ?job.operation, "job assigned");
                if let Err(refusal) = self.jobs.start(job, msg.epoch, uplink.clone()) {
                    tracing::warn!(job = %job_id, reason = %refusal.message, "job refused");
                    // Through the uplink, so it is resent until acknowledged.
                    let _ = uplink.send(AgentMessage {
                        body: Some(agent_message::Body::Result(super::result::refused(
                            &job_id, msg.epoch, &refusal,
                        ))),
                    });
                }
            }
            Some(coordinator_message::Body::Cancel(c)) => {
                tracing::info!(job = %c.job_id, epoch = msg.epoch, "job cancelled by the coordinator: stopping it");
                self.jobs.cancel(&c.job_id);
            }
            Some(coordinator_message::Body::Action(a)) => {
                tracing::info!(action = a.action_id, source = %a.source, epoch = msg.epoch, kind = ?a.action, "failover action");
                let (config, up, tasks) = (self.config.clone(), uplink.clone(), self.tasks.clone());
                let self_fence = self.self_fence.clone();
                let span = tracing::info_span!("action", id = a.action_id, source = %a.source);
                // To its end even when the agent stops: a fence or a
                // promotion cut half-way helps no one, and each has its
                // deadline (the agent's stop waits at most its grace).
                self.tasks.spawn_to_end(tracing::Instrument::instrument(
                    async move {
                        let source = a.source.clone();
                        let fence = matches!(
                            a.action,
                            Some(seawall_proto::v1::action_request::Action::Fence(_))
                        );
                        let reply = super::actions::answer(config, a, &tasks).await;
                        if !reply.error.is_empty() {
                            tracing::warn!(error = %reply.error, "failover action failed");
                        } else if !fence {
                            // The leader owns the store's state again.
                            self_fence.lifted(&source);
                        }
                        let _ = up.send(AgentMessage {
                            body: Some(agent_message::Body::ActionReply(reply)),
                        });
                    },
                    span,
                ));
            }
            Some(coordinator_message::Body::Probe(p)) => {
                // Answered beside the stream, never in its way; an answer
                // is not resent after a reconnect (the next round asks again).
                let (prober, up) = (self.prober.clone(), uplink.clone());
                let span = tracing::info_span!("probe", id = p.probe_id);
                self.tasks.spawn(tracing::Instrument::instrument(
                    async move {
                        let reply = prober.answer(p).await;
                        let _ = up.send(AgentMessage {
                            body: Some(agent_message::Body::ProbeReply(reply)),
                        });
                    },
                    span,
                ));
            }
            Some(coordinator_message::Body::Redirect(_)) | None => {}
        }
        Ok(Next::Stay)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_proto::v1::Redirect;

    #[test]
    fn a_redirect_to_an_older_leader_than_one_obeyed_is_not_followed() {
        let r = Redirect {
            leader_id: "c2".into(),
            leader_address: "c2:7443".into(),
        };
        assert!(matches!(redirect(&r, 7, 7), Ended::Redirect(a) if a == "c2:7443"));
        assert!(matches!(redirect(&r, 9, 7), Ended::Redirect(_)));
        assert!(matches!(redirect(&r, 5, 7), Ended::Next(why) if why.contains("older")));
        let none = Redirect::default();
        assert!(matches!(redirect(&none, 9, 7), Ended::Next(why) if why.contains("no leader")));
    }
}
