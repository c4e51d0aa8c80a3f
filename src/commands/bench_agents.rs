//! `seawall bench-agents` (hidden, for `bench/fleet.sh`): simulates many
//! agents in one process, each with its own certificate and mutual-TLS
//! stream, heartbeating like real agents and answering every assignment at
//! once; measures the coordinator's CPU and memory while they heartbeat and
//! the time to dispatch one job to every agent.

use crate::args::BenchAgentsArgs;
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use seawall_common::tls::issue::issue;
use seawall_common::tls::Identity;
use seawall_proto::v1::agent_service_client::AgentServiceClient;
use seawall_proto::v1::operator_service_client::OperatorServiceClient;
use seawall_proto::v1::{
    agent_message, coordinator_message, AgentMessage, BackupOutput, Heartbeat, Hello,
    OperationResult, OperationStatus, SourceInfo, TriggerBackupRequest,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsId};

async fn channel(address: &str, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(TlsId::from_pem(cert, key))
        .domain_name("127.0.0.1");
    Ok(Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// (utime + stime) in clock ticks, and peak RSS in KiB, of `pid`.
fn usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((ticks, hwm))
}

/// Runs the simulation and prints its figures as JSON.
pub async fn run(a: BenchAgentsArgs) -> Result<u8> {
    let read = |f: &str| std::fs::read(a.pki.join(f)).with_context(|| format!("reading {f}"));
    let (ca, ca_key) = (read("ca.pem")?, read("ca.key")?);
    let ca_text = String::from_utf8_lossy(&ca).to_string();
    let ca_key_text = String::from_utf8_lossy(&ca_key).to_string();
    let connected = Arc::new(AtomicUsize::new(0));
    let assigned = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.count {
        let region = format!("r{}", i % a.regions.max(1));
        let name = format!("sim-{i}");
        let id = Identity::Agent {
            region: region.clone(),
            name: name.clone(),
        };
        let leaf = issue(
            &ca_text,
            &ca_key_text,
            &id,
            &[],
            seawall_common::tls::issue::days(2),
        )?;
        let ch = channel(
            &a.coordinator,
            &ca,
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
        )
        .await?;
        let (connected, assigned) = (connected.clone(), assigned.clone());
        let every = Duration::from_secs(a.heartbeat_secs);
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel::<AgentMessage>(16);
            let hello = Hello {
                agent_id: name,
                region,
                version: "sim".into(),
                sources: vec![SourceInfo {
                    name: format!("src-{i}"),
                    kind: "files".into(),
                }],
                ..Default::default()
            };
            let _ = tx.send(AgentMessage { body: Some(agent_message::Body::Hello(hello)) }).await;
            let mut inbound = match AgentServiceClient::new(ch)
                .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(e) => return Err(format!("sim-{i}: {e}")),
            };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => match m.body {
                            Some(coordinator_message::Body::Welcome(_)) => {
                                connected.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(coordinator_message::Body::Assign(job)) => {
                                assigned.fetch_add(1, Ordering::Relaxed);
                                let r = OperationResult {
                                    job_id: job.job_id,
                                    epoch: m.epoch,
                                    status: OperationStatus::Succeeded as i32,
                                    output: Some(seawall_proto::v1::operation_result::Output::Backup(BackupOutput {
                                        snapshot_id: "0".repeat(64),
                                        ..Default::default()
                                    })),
                                    ..Default::default()
                                };
                                let _ = tx.send(AgentMessage { body: Some(agent_message::Body::Result(r)) }).await;
                            }
                            _ => {}
                        },
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(format!("sim-{i}: {e}")),
                    },
                    _ = tick.tick() => {
                        let beat = Heartbeat { sent_unix_ms: chrono::Utc::now().timestamp_millis() as u64, running_jobs: 0, seq: 0 };
                        if tx.send(AgentMessage { body: Some(agent_message::Body::Heartbeat(beat)) }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < a.count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} agents connected within 120 s",
                connected.load(Ordering::Relaxed),
                a.count
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} agents connected in {connect_secs:.1}s; heartbeating for {}s",
        a.count, a.hold_secs
    );
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (t0, _) = usage(a.coordinator_pid)?;
    let hold = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    let (t1, _) = usage(a.coordinator_pid)?;
    let cpu_percent = 100.0 * (t1 - t0) as f64 / ticks_per_sec / hold.elapsed().as_secs_f64();

    // One job to every agent: triggered concurrently, timed until the last assignment arrives.
    let ops = channel(&a.coordinator, &ca, &read("ops.pem")?, &read("ops.key")?).await?;
    let client = OperatorServiceClient::new(ops);
    let dispatch = Instant::now();
    let triggers = futures_util::stream::iter(0..a.count)
        .map(|i| {
            let mut c = client.clone();
            let regions = a.regions.max(1);
            async move {
                c.trigger_backup(TriggerBackupRequest {
                    region: format!("r{}", i % regions),
                    source: format!("src-{i}"),
                    level: "incremental".into(),
                })
                .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let refused = triggers.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = triggers.iter().find(|r| r.is_err()) {
        eprintln!("a trigger was refused: {e}");
    }
    let triggered_secs = dispatch.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    while assigned.load(Ordering::Relaxed) < a.count - refused {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dispatch_secs = dispatch.elapsed().as_secs_f64();
    // Let results settle, then read peak memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, peak_kib) = usage(a.coordinator_pid)?;
    crate::output::json(&serde_json::json!({
        "agents": a.count,
        "connect_secs": connect_secs,
        "heartbeat_secs": a.heartbeat_secs,
        "hold_secs": a.hold_secs,
        "coordinator_cpu_percent_of_one_core": cpu_percent,
        "coordinator_peak_rss_mib": peak_kib as f64 / 1024.0,
        "triggers_refused": refused,
        "triggered_secs": triggered_secs,
        "assigned": assigned.load(Ordering::Relaxed),
        "dispatch_to_all_secs": dispatch_secs,
    }))?;
    for t in tasks {
        t.abort();
    }
    Ok(0)
}
