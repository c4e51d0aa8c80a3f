//! The operator commands, over gRPC to a coordinator replica: `status`,
//! `agents`, `schedules`, `jobs [--watch]`, `backups`, `replication` and `backup --now`,
//! each with `--json`. A trigger sent to a follower is sent again to the
//! leader the follower names.

use crate::args::{
    AgentsArgs, AuditArgs, BackupArgs, BackupsArgs, Global, JobsArgs, OperatorArgs,
    ReplicationArgs, RevokeArgs,
};
use crate::output::size;
use seawall_proto::v1::operator_service_client::OperatorServiceClient;
use seawall_proto::v1::*;
use serde_json::json;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// A connection to one replica, with the operator's credentials.
pub(super) struct Op {
    /// The gRPC client.
    pub(super) client: OperatorServiceClient<Channel>,
    token: Option<String>,
}

fn url_of(address: &str) -> String {
    seawall_agent::daemon::link::url_of(address)
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()))
}

impl Op {
    /// Connects to the replica at `address`.
    pub(super) async fn connect(a: &OperatorArgs, address: &str) -> anyhow::Result<Op> {
        let Some(ca) = &a.ca else {
            anyhow::bail!("give --ca FILE (the Seawall CA certificate; or SEAWALL_CA)");
        };
        if a.cert.is_none() && a.token_file.is_none() {
            anyhow::bail!(
                "give --cert and --key (an operator certificate from `seawall certs operator`) or --token-file"
            );
        }
        let url = url_of(address);
        let host = seawall_agent::daemon::link::host_of(&url);
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?))
            .domain_name(host);
        if let (Some(cert), Some(key)) = (&a.cert, &a.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "operator certificate")?,
                read(key, "operator key")?,
            ));
        }
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("{url} is not a valid address: {e}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the coordinator at {url}: {e}{}",
                    std::error::Error::source(&e)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                )
            })?;
        let token = match &a.token_file {
            Some(p) => Some(
                String::from_utf8_lossy(&seawall_common::secret::read_secret_file(p, "token")?)
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Op {
            client: OperatorServiceClient::new(channel),
            token,
        })
    }

    /// A request carrying the operator's token and a deadline.
    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }
}

/// A refusal, in words.
pub(super) fn failed(s: Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {} ({:?})", s.message(), s.code())
}

/// A time as operators read it.
pub(super) fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn job_json(j: &Job) -> serde_json::Value {
    json!({
        "job_id": j.job_id, "region": j.region, "source": j.source, "kind": j.kind,
        "level": j.level, "state": j.state, "agent_id": j.agent_id, "attempt": j.attempt,
        "schedule": j.schedule, "created_unix_ms": j.created_unix_ms,
        "started_unix_ms": j.started_unix_ms, "finished_unix_ms": j.finished_unix_ms,
        "error": j.error, "snapshot_id": j.snapshot_id, "bytes_done": j.bytes_done,
        "bytes_added": j.bytes_added, "epoch": j.epoch, "error_kind": j.error_kind,
        "warning_count": j.warning_count, "warnings": j.warnings,
    })
}

fn print_job_line(j: &Job) {
    crate::say!(
        "{:<42} {:<10} {:<12} {:<10} {:<23} {:<12} {:>3} {:>10} {}",
        j.job_id,
        j.region,
        j.source,
        j.kind,
        j.state,
        j.agent_id,
        j.attempt,
        size(j.bytes_added),
        match (j.error.is_empty(), j.error_kind.is_empty(), j.warning_count) {
            (true, _, 0) => j.snapshot_id.get(..8).unwrap_or("").to_string(),
            (true, _, n) => format!(
                "{} ({n} warnings: {})",
                j.snapshot_id.get(..8).unwrap_or(""),
                j.warnings.first().map(String::as_str).unwrap_or("")
            ),
            (false, true, _) => j.error.clone(),
            (false, false, _) => format!("[{}] {}", j.error_kind, j.error),
        }
    );
}

/// `seawall status`.
pub async fn status(g: &Global, a: OperatorArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a, &a.coordinator).await?;
    let s = op
        .client
        .status(op.req(StatusRequest {}))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(&json!({
            "replica_id": s.replica_id, "is_leader": s.is_leader, "leader_id": s.leader_id,
            "leader_address": s.leader_address, "epoch": s.epoch,
            "agents_connected": s.agents_connected, "jobs_running": s.jobs_running,
            "store": s.store,
            "failovers_running": s.failovers_running,
            "sources": s.sources.iter().map(|x| json!({
                "region": x.region, "source": x.source, "last_success_job": x.last_success_job,
                "last_success_unix_ms": x.last_success_unix_ms, "last_snapshot_id": x.last_snapshot_id,
                "age_secs": x.age_secs,
            })).collect::<Vec<_>>(),
            "workers": s.workers.iter().map(|w| json!({
                "name": w.name, "running": w.running, "failures_in_a_row": w.failures_in_a_row,
                "last_error": w.last_error, "last_error_unix_ms": w.last_error_unix_ms,
                "last_success_unix_ms": w.last_success_unix_ms,
            })).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    crate::say!(
        "leader {} ({}) epoch {}; asked {} ({}); store {}",
        if s.leader_id.is_empty() {
            "none"
        } else {
            &s.leader_id
        },
        s.leader_address,
        s.epoch,
        s.replica_id,
        if s.is_leader { "leader" } else { "follower" },
        s.store
    );
    crate::say!(
        "{} agents connected, {} jobs running",
        s.agents_connected,
        s.jobs_running
    );
    for f in &s.failovers_running {
        crate::say!("FAILOVER RUNNING {f}");
    }
    for w in &s.workers {
        let health = match (w.running, w.failures_in_a_row) {
            (false, _) => "stopped".to_string(),
            (true, 0) => "ok".to_string(),
            (true, n) => format!(
                "failing ({n} in a row since {}): {}",
                when(w.last_error_unix_ms),
                w.last_error
            ),
        };
        crate::say!("worker {:<12} {health}", w.name);
    }
    if s.sources.is_empty() {
        crate::say!("no successful backup recorded yet");
    } else {
        crate::say!(
            "{:<12} {:<14} {:<20} {:>10} SNAPSHOT",
            "REGION",
            "SOURCE",
            "LAST SUCCESS",
            "AGE"
        );
        for x in &s.sources {
            crate::say!(
                "{:<12} {:<14} {:<20} {:>9}s {}",
                x.region,
                x.source,
                when(x.last_success_unix_ms),
                x.age_secs,
                x.last_snapshot_id.get(..8).unwrap_or(&x.last_snapshot_id)
            );
        }
    }
    Ok(0)
}

/// `seawall agents`.
pub async fn agents(g: &Global, a: AgentsArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let req = ListAgentsRequest {
        region: a.region.unwrap_or_default(),
    };
    let r = op
        .client
        .list_agents(op.req(req))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(&r.agents.iter().map(|x| json!({
            "agent_id": x.agent_id, "region": x.region, "version": x.version,
            "hostname": x.hostname, "sources": x.sources,
            "connected_unix_ms": x.connected_unix_ms,
            "last_heartbeat_unix_ms": x.last_heartbeat_unix_ms, "running_jobs": x.running_jobs,
            "cert_fingerprint": x.cert_fingerprint, "cert_expires_unix_ms": x.cert_expires_unix_ms,
        })).collect::<Vec<_>>())?;
        return Ok(0);
    }
    crate::say!(
        "{:<16} {:<12} {:<20} {:<20} {:>4} SOURCES",
        "AGENT",
        "REGION",
        "CONNECTED",
        "CERT EXPIRES",
        "JOBS"
    );
    for x in &r.agents {
        crate::say!(
            "{:<16} {:<12} {:<20} {:<20} {:>4} {}",
            x.agent_id,
            x.region,
            when(x.connected_unix_ms),
            when(x.cert_expires_unix_ms),
            x.running_jobs,
            x.sources.join(",")
        );
    }
    Ok(0)
}

/// `seawall revoke`.
pub async fn revoke(g: &Global, a: RevokeArgs) -> anyhow::Result<u8> {
    let fingerprint = match (&a.fingerprint, &a.pem) {
        (_, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            seawall_common::tls::certinfo::pem_fingerprint(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        (Some(fp), None) => fp.clone(),
        (None, None) => anyhow::bail!("give a fingerprint or --pem FILE"),
    };
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let r = op
        .client
        .revoke_certificate(op.req(RevokeCertificateRequest {
            fingerprint,
            reason: a.reason,
        }))
        .await
        .map_err(failed)?
        .into_inner();
    let revoked = r.revoked.unwrap_or_default();
    if g.json {
        crate::output::json(&json!({
            "fingerprint": revoked.fingerprint, "reason": revoked.reason, "by": revoked.by,
            "at_unix_ms": revoked.at_unix_ms, "newly": r.newly,
        }))?;
    } else if !g.quiet {
        if r.newly {
            crate::say!("revoked {}", revoked.fingerprint);
        } else {
            crate::say!(
                "{} was revoked already, at {} by {}",
                revoked.fingerprint,
                when(revoked.at_unix_ms),
                revoked.by
            );
        }
    }
    Ok(0)
}

/// `seawall revoked`.
pub async fn revoked(g: &Global, a: OperatorArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a, &a.coordinator).await?;
    let r = op
        .client
        .list_revoked(op.req(ListRevokedRequest {}))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(
            &r.revoked
                .iter()
                .map(|x| {
                    json!({
                        "fingerprint": x.fingerprint, "reason": x.reason, "by": x.by,
                        "at_unix_ms": x.at_unix_ms,
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        return Ok(0);
    }
    crate::say!("{:<64} {:<20} {:<20} REASON", "FINGERPRINT", "AT", "BY");
    for x in &r.revoked {
        crate::say!(
            "{:<64} {:<20} {:<20} {}",
            x.fingerprint,
            when(x.at_unix_ms),
            x.by,
            x.reason
        );
    }
    Ok(0)
}

/// `seawall schedules`.
pub async fn schedules(g: &Global, a: OperatorArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a, &a.coordinator).await?;
    let r = op
        .client
        .list_schedules(op.req(ListSchedulesRequest {}))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(
            &r.schedules
                .iter()
                .map(|x| {
                    json!({
                        "name": x.name, "region": x.region, "source": x.source, "kind": x.kind,
                        "level": x.level, "cron": x.cron, "timezone": x.timezone,
                        "jitter_secs": x.jitter_secs, "last_fired_unix_ms": x.last_fired_unix_ms,
                        "next_unix_ms": x.next_unix_ms,
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        return Ok(0);
    }
    crate::say!(
        "{:<20} {:<12} {:<12} {:<10} {:<18} {:<20} NEXT",
        "SCHEDULE",
        "REGION",
        "SOURCE",
        "KIND",
        "CRON",
        "LAST"
    );
    for x in &r.schedules {
        crate::say!(
            "{:<20} {:<12} {:<12} {:<10} {:<18} {:<20} {} {}",
            x.name,
            x.region,
            x.source,
            if x.level.is_empty() {
                x.kind.clone()
            } else {
                format!("{}/{}", x.kind, x.level)
            },
            x.cron,
            when(x.last_fired_unix_ms),
            when(x.next_unix_ms),
            x.timezone
        );
    }
    Ok(0)
}

/// Follows one job until it ends; the exit code says how it ended.
async fn watch(g: &Global, op: &mut Op, job_id: &str) -> anyhow::Result<u8> {
    let mut stream = op
        .client
        .watch_job(op.req(WatchJobRequest {
            job_id: job_id.to_string(),
        }))
        .await
        .map_err(failed)?
        .into_inner();
    let mut last = None;
    while let Some(j) = stream.message().await.map_err(failed)? {
        if g.json {
            crate::say!("{}", job_json(&j));
        } else if !g.quiet {
            print_job_line(&j);
        }
        last = Some(j);
    }
    Ok(match last.map(|j| j.state) {
        Some(s) if s == "succeeded" || s == "succeeded_with_warnings" => 0,
        _ => 1,
    })
}

/// `seawall jobs [--watch ID]`.
pub async fn jobs(g: &Global, a: JobsArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    if let Some(id) = &a.watch {
        return watch(g, &mut op, id).await;
    }
    if let Some(id) = a.cancel {
        let req = CancelJobRequest {
            job_id: id,
            reason: a.reason.unwrap_or_default(),
        };
        let reply = match op.client.cancel_job(op.req(req.clone())).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let leader = leader_named(&s).ok_or_else(|| failed(s))?;
                op = Op::connect(&a.op, &leader).await?;
                op.client
                    .cancel_job(op.req(req))
                    .await
                    .map_err(failed)?
                    .into_inner()
            }
        };
        let job = reply
            .job
            .ok_or_else(|| anyhow::anyhow!("the coordinator answered without the job"))?;
        if g.json {
            crate::output::json(&job_json(&job))?;
        } else {
            print_job_line(&job);
        }
        return Ok(0);
    }
    let req = ListJobsRequest {
        region: a.region.unwrap_or_default(),
        limit: a.limit,
    };
    let r = op
        .client
        .list_jobs(op.req(req))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(&r.jobs.iter().map(job_json).collect::<Vec<_>>())?;
        return Ok(0);
    }
    crate::say!(
        "{:<42} {:<10} {:<12} {:<10} {:<23} {:<12} {:>3} {:>10} SNAPSHOT/ERROR",
        "JOB",
        "REGION",
        "SOURCE",
        "KIND",
        "STATE",
        "AGENT",
        "TRY",
        "ADDED"
    );
    for j in &r.jobs {
        print_job_line(j);
    }
    Ok(0)
}

/// `seawall audit`.
pub async fn audit(g: &Global, a: AuditArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let since_unix_ms = a.since.map_or(0, |d| {
        chrono::Utc::now().timestamp_millis() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    });
    let req = ListAuditRequest {
        limit: a.limit,
        since_unix_ms,
        before: a.before.unwrap_or_default(),
    };
    let r = op
        .client
        .list_audit(op.req(req))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(
            &r.entries
                .iter()
                .map(|e| {
                    json!({
                        "at_unix_ms": e.at_unix_ms, "epoch": e.epoch, "replica": e.replica,
                        "actor": e.actor, "event": e.event, "key": e.key,
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        return Ok(0);
    }
    crate::say!(
        "{:<20} {:>6} {:<10} {:<22} EVENT",
        "AT",
        "EPOCH",
        "REPLICA",
        "ACTOR"
    );
    for e in &r.entries {
        crate::say!(
            "{:<20} {:>6} {:<10} {:<22} {}",
            when(e.at_unix_ms),
            e.epoch,
            e.replica,
            e.actor,
            e.event
        );
    }
    if let Some(last) = r
        .entries
        .last()
        .filter(|_| r.entries.len() >= a.limit as usize)
    {
        crate::say!("older entries: seawall audit --before {}", last.key);
    }
    Ok(0)
}

/// `seawall backups`.
pub async fn backups(g: &Global, a: BackupsArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let req = ListBackupsRequest {
        region: a.region.unwrap_or_default(),
        source: a.source.unwrap_or_default(),
    };
    let r = op
        .client
        .list_backups(op.req(req))
        .await
        .map_err(failed)?
        .into_inner();
    if g.json {
        crate::output::json(
            &r.backups
                .iter()
                .map(|b| {
                    json!({
                        "region": b.region, "source": b.source, "snapshot_id": b.snapshot_id,
                        "job_id": b.job_id, "finished_unix_ms": b.finished_unix_ms,
                        "bytes_read": b.bytes_read, "bytes_added": b.bytes_added,
                        "duration_secs": b.duration_secs,
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        return Ok(0);
    }
    crate::say!(
        "{:<12} {:<14} {:<20} {:<10} {:>10} {:>8}",
        "REGION",
        "SOURCE",
        "FINISHED",
        "SNAPSHOT",
        "ADDED",
        "SECS"
    );
    for b in &r.backups {
        crate::say!(
            "{:<12} {:<14} {:<20} {:<10} {:>10} {:>8.1}",
            b.region,
            b.source,
            when(b.finished_unix_ms),
            b.snapshot_id.get(..8).unwrap_or(&b.snapshot_id),
            size(b.bytes_added),
            b.duration_secs
        );
    }
    Ok(0)
}

/// The leader's address, when `s` is a follower's refusal naming it.
pub(super) fn leader_named(s: &tonic::Status) -> Option<String> {
    if s.code() != Code::FailedPrecondition {
        return None;
    }
    let leader = s.metadata().get("seawall-leader")?.to_str().ok()?;
    Some(leader.to_string())
}

/// `seawall backup --now --region R --source S`.
pub async fn backup_now(g: &Global, a: BackupArgs) -> anyhow::Result<u8> {
    let req = TriggerBackupRequest {
        region: a.region.clone().unwrap_or_default(),
        source: a.source_name.clone().unwrap_or_default(),
        level: if a.full {
            "full".into()
        } else {
            "incremental".into()
        },
    };
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let reply = match op.client.trigger_backup(op.req(req.clone())).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let leader = leader_named(&s).ok_or_else(|| failed(s))?;
            op = Op::connect(&a.op, &leader).await?;
            op.client
                .trigger_backup(op.req(req))
                .await
                .map_err(failed)?
                .into_inner()
        }
    };
    let job = reply
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator answered without a job"))?;
    if g.json && !a.wait {
        crate::output::json(&job_json(&job))?;
    } else if !g.quiet && !g.json {
        crate::say!(
            "job {} queued for {} in {}",
            job.job_id,
            job.source,
            job.region
        );
    }
    if a.wait {
        return watch(g, &mut op, &job.job_id).await;
    }
    Ok(0)
}

/// A duration in milliseconds as operators read it.
pub(super) fn millis(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => {
            humantime::format_duration(Duration::from_secs(ms.max(0) as u64 / 1000)).to_string()
        }
    }
}

/// `seawall replication`: every service's stores, lag and verdict. Exits 1
/// when a service is not "ok", so a script can gate on it.
pub async fn replication(g: &Global, a: ReplicationArgs) -> anyhow::Result<u8> {
    let mut op = Op::connect(&a.op, &a.op.coordinator).await?;
    let r = op
        .client
        .get_replication(op.req(GetReplicationRequest {
            service: a.service.unwrap_or_default(),
        }))
        .await
        .map_err(failed)?
        .into_inner();
    let healthy = r.services.iter().all(|s| s.verdict == "ok");
    if g.json {
        crate::output::json(&json!({
            "interval_ms": r.interval_ms,
            "services": r.services,
        }))?;
        return Ok(if healthy { 0 } else { 1 });
    }
    if r.services.is_empty() {
        crate::say!("no services: [[regions]] and [[services]] in coordinator.toml describe them (docs/configuration.md)");
    }
    let now = chrono::Utc::now().timestamp_millis();
    for s in &r.services {
        let age = if s.checked_unix_ms > 0 {
            format!("checked {} ago", millis(Some(now - s.checked_unix_ms)))
        } else {
            "never checked".into()
        };
        crate::say!(
            "{}: {} (exposure {}, RPO {}, RTO {}; {age})",
            s.service,
            s.verdict.to_uppercase(),
            millis(s.exposure_ms),
            millis(Some(s.rpo_ms)),
            millis(Some(s.rto_ms)),
        );
        crate::say!(
            "  {:<12} {:<8} {:<9} {:<20} {:<9} {:>12} {:>8} {:>9} {:>9}  POSITION",
            "REGION",
            "ROLE",
            "KIND",
            "AGENT/SOURCE",
            "VERDICT",
            "LAG BYTES",
            "LAG",
            "CANARY",
            "DELAY"
        );
        for st in &s.stores {
            crate::say!(
                "  {:<12} {:<8} {:<9} {:<20} {:<9} {:>12} {:>8} {:>9} {:>9}  {}",
                st.region,
                st.role,
                st.kind,
                format!("{}/{}", st.agent, st.source),
                st.verdict,
                st.lag_bytes
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
                millis(st.lag_secs.map(|x| (x * 1000.0) as i64)),
                millis(st.canary_exposure_ms),
                millis(st.canary_delay_ms),
                if st.position.is_empty() {
                    "-"
                } else {
                    &st.position
                },
            );
            if let Some(m) = st.managed.as_ref().filter(|m| !m.status.is_empty()) {
                let place = if !m.group.is_empty() {
                    format!(", {} of Global Datastore {}", m.role, m.group)
                } else if !m.source.is_empty() {
                    format!(", replica of {}", m.source)
                } else {
                    String::new()
                };
                let what = if m.service == "elasticache" {
                    "replication group"
                } else {
                    "instance"
                };
                crate::say!(
                    "      {} {what} {}: {}{place}",
                    m.service,
                    m.instance,
                    m.status
                );
            }
            for why in &st.reasons {
                crate::say!("      {why}");
            }
        }
        if !s.repositories.is_empty() {
            crate::say!(
                "  {:<12} {:<8} {:<20} {:<9} {:>10} {:>9} {:>6}  NEWEST WAL",
                "REGION",
                "ROLE",
                "REPOSITORY AGENT",
                "VERDICT",
                "BEHIND",
                "SNAPSHOTS",
                "GAPS"
            );
        }
        for repo in &s.repositories {
            crate::say!(
                "  {:<12} {:<8} {:<20} {:<9} {:>10} {:>9} {:>6}  {}",
                repo.region,
                repo.role,
                repo.agent,
                repo.verdict,
                millis(repo.behind_ms),
                repo.snapshots_behind,
                repo.gap_count,
                if repo.newest_wal.is_empty() {
                    "-"
                } else {
                    &repo.newest_wal
                },
            );
            for why in &repo.reasons {
                crate::say!("      {why}");
            }
        }
    }
    Ok(if healthy { 0 } else { 1 })
}
