//! `seawall coordinator` and `seawall agent`: the two daemons, stopped
//! gracefully by SIGTERM or SIGINT.

use crate::args::{AgentArgs, CoordinatorArgs};
use seawall_coordinator::model::config::CoordinatorConfig;

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("stopping");
}

/// Runs a coordinator replica.
pub async fn coordinator(a: CoordinatorArgs) -> anyhow::Result<u8> {
    let mut config = CoordinatorConfig::load(&a.config)?;
    if let Some(id) = a.id {
        config.id = id;
    }
    if let Some(advertise) = a.advertise {
        config.advertise = Some(advertise);
    }
    config.check()?;
    if a.check {
        seawall_coordinator::server::load_identity(&config)?;
        seawall_coordinator::server::read_token(&config)?;
        let state = match (&config.etcd, &config.dev, a.dev) {
            (_, Some(d), true) => format!("{} (embedded)", d.state.display()),
            (Some(e), _, false) => {
                // Reach etcd now, as the replica will: an unreachable cluster
                // shows at --check rather than as a replica that never leads.
                let store = seawall_coordinator::server::open_store(&config, false).await?;
                let leader = store.leader().await.map_err(|err| {
                    let hint = if e.ca.is_some() {
                        "check the endpoints, that [etcd] ca signed the members' certificates, and that cert/key are set if etcd requires client certificates"
                    } else {
                        "check the endpoints and that etcd runs"
                    };
                    anyhow::anyhow!(
                        "etcd at {} does not answer ({hint}): {err}",
                        e.endpoints.join(",")
                    )
                })?;
                format!(
                    "etcd {} (reachable; {})",
                    e.endpoints.join(","),
                    match leader {
                        Some(l) => format!("leader {} at epoch {}", l.id, l.epoch),
                        None => "no leader yet".to_string(),
                    }
                )
            }
            (_, None, true) => anyhow::bail!("--dev needs a [dev] section with `state`"),
            (None, _, false) => {
                anyhow::bail!("no [etcd] section: add one, or run with --dev and a [dev] section")
            }
        };
        println!(
            "{}: replica {} advertised as {}, certificate matches, {} schedule(s), state in {state}",
            a.config.display(),
            config.id,
            config.advertised(),
            config.schedules.len(),
        );
        return Ok(0);
    }
    seawall_coordinator::server::run(config, a.dev, shutdown_signal()).await?;
    Ok(0)
}

/// Runs the agent daemon.
pub async fn agent(a: AgentArgs) -> anyhow::Result<u8> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the seawall binary to run jobs with: {e}"))?;
    let prepared = seawall_agent::daemon::prepare(&a.config, a.id.as_deref())?;
    if let Some(epoch) = a.reset_epoch {
        let dir = &prepared.config.state_dir;
        let old = seawall_agent::daemon::epoch::reset(dir, epoch)?;
        println!(
            "epoch mark in {} set to {epoch} (was {old}); start the agent again",
            dir.display()
        );
        return Ok(0);
    }
    // Said at every start, and by --check.
    for warning in prepared.config.exposed_secrets(&a.config) {
        eprintln!("warning: {}: {warning}", a.config.display());
    }
    if a.check {
        let c = &prepared.config;
        // Open the repository the way jobs will (password, storage), so a
        // wrong password or an unreachable bucket shows now, not at 02:00.
        // A standby region's replica is empty until its first mirror run.
        let snapshots = match c.repository.spec().open().await {
            Ok(repo) => format!("{} snapshots", repo.snapshots().await?.len()),
            Err(e) if e.kind() == seawall_common::ErrorKind::NotFound && !c.mirrors.is_empty() => {
                "empty: the first mirror run fills it".to_string()
            }
            Err(e) => anyhow::bail!(
                "{}: the repository {} does not open: {e}",
                a.config.display(),
                c.repository.repo
            ),
        };
        // Each mirror's source must be readable from here, or its jobs
        // would fail at their first run.
        let mut mirrors = Vec::new();
        for m in &c.mirrors {
            let storage = m.spec().storage().await?;
            storage
                .read(seawall_common::storage::FileKind::Config, "")
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: mirror {:?} cannot read the repository {}: {e}",
                        a.config.display(),
                        m.name,
                        m.from
                    )
                })?;
            mirrors.push(format!("{} (from {})", m.name, m.from));
        }
        println!(
            "{}: agent {} in region {}, certificate matches; repository {} opens ({snapshots}); sources: {}",
            a.config.display(),
            c.id,
            c.region,
            c.repository.repo,
            c.sources
                .iter()
                .map(|s| format!("{} ({})", s.name, s.kind.name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !mirrors.is_empty() {
            println!("mirrors (sources readable): {}", mirrors.join(", "));
        }
        return Ok(0);
    }
    seawall_agent::daemon::run(prepared, exe, shutdown_signal()).await?;
    Ok(0)
}
