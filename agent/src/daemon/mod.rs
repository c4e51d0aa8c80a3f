//! `seawall agent`: the regional daemon. It holds one stream to the leader
//! over mutual TLS, runs the jobs it is given against its sources and its
//! region's repository, and refuses any command whose epoch is older than
//! the newest it has seen.

pub mod actions;
pub mod certs;
pub mod channel;
pub mod config;
pub mod durable;
pub mod epoch;
pub mod jobs;
pub mod lease;
pub mod link;
pub mod metrics;
pub mod probes;
pub mod result;
pub mod revoked;
pub mod self_fence;
pub mod wal_follow;

use config::AgentConfig;
use seawall_common::tls::{Identity, TlsPem};
use seawall_common::{Error, ErrorKind, Result};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a stopping agent waits for its last results to be acknowledged.
const FLUSH: Duration = Duration::from_secs(3);

/// A configuration checked against the certificate it names.
pub struct Prepared {
    /// The configuration.
    pub config: AgentConfig,
    /// Its certificate, key and CA, loaded.
    pub tls: TlsPem,
}

/// Loads `agent.toml` (with `id` replacing the file's, if given) and its
/// certificate, and checks the certificate names this agent and region.
pub fn prepare(config_path: &Path, id: Option<&str>) -> Result<Prepared> {
    let config = AgentConfig::load(config_path, id)?;
    let tls = config.tls.load()?;
    match &tls.identity {
        Identity::Agent { region, name } if *region == config.region && *name == config.id => {}
        other => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is the certificate of {other}, but {} says agent {} in region {}: issue one with `seawall certs agent --name {} --region {}`",
                    config.tls.cert.display(),
                    config_path.display(),
                    config.id,
                    config.region,
                    config.id,
                    config.region
                ),
            ))
        }
    }
    Ok(Prepared { config, tls })
}

/// Runs the agent until `shutdown` resolves; `exe` is the seawall binary jobs run.
pub async fn run(
    prepared: Prepared,
    exe: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let Prepared { config, tls } = prepared;
    let config = Arc::new(config);
    let epoch = Arc::new(epoch::EpochGuard::open(&config.state_dir)?);
    if let Some(m) = &config.metrics_listen {
        seawall_common::metrics_endpoint::serve(m)?;
    }
    ::metrics::gauge!(metrics::CONNECTED).set(0.0);
    let jobs = Arc::new(jobs::JobRunner::new(exe, config.clone()));
    let (uplink, upstream) = tokio::sync::mpsc::unbounded_channel();
    let tasks = seawall_common::tasks::Tree::default();
    let (unacked, mut unacked_seen) = tokio::sync::watch::channel(0usize);
    let revoked = Arc::new(revoked::RevokedCertificates::open(&config.state_dir)?);
    let agent_tls = certs::AgentTls::new(config.tls.clone(), tls, revoked);
    let lease = Arc::new(lease::LeaseState::open(&config.state_dir));
    let self_fence = Arc::new(self_fence::SelfFencer::open(
        config.clone(),
        lease.clone(),
        agent_tls.clone(),
    ));
    // First of all: a lease that lapsed while the agent was away (a
    // restart inside a partition) fences before anything else runs.
    let watchdog = tokio_util::sync::CancellationToken::new();
    tokio::spawn(self_fence.clone().run(watchdog.clone()));
    let link = link::Link {
        tls: agent_tls,
        lease,
        self_fence,
        config: config.clone(),
        epoch,
        jobs: jobs.clone(),
        prober: Arc::new(probes::Prober::new(config.clone())),
        unacked,
        tasks: tasks.clone(),
    };
    tracing::info!(agent = %config.id, region = %config.region, "agent starting");
    wal_follow::start(&config, &tasks);
    crate::stores::rds::sweep::start(&config, &tasks, {
        let jobs = jobs.clone();
        move || jobs.running_ids()
    });
    let grace = config.shutdown_grace;
    let serving = link.run(uplink, upstream);
    tokio::pin!(serving);
    tokio::select! {
        _ = &mut serving => return Ok(()),
        _ = shutdown => {}
    }
    // Stopping: take no new job, let running ones finish within the grace
    // period while the link still carries their results, then stop the rest.
    jobs.drain();
    let running = jobs.running_ids().len();
    tracing::info!(running, grace = ?grace, "agent stopping: letting running jobs finish");
    let deadline = tokio::time::Instant::now() + grace;
    let mut cancelled = 0;
    let link_ended = tokio::select! {
        _ = &mut serving => true,
        ended = tokio::time::timeout_at(deadline, jobs.ended()) => {
            if ended.is_err() {
                cancelled = jobs.cancel_all();
                tracing::info!(cancelled, "grace period over: stopped the jobs still running");
                // A cancelled job ends once its child is killed.
                tokio::select! {
                    _ = &mut serving => true,
                    _ = jobs.ended() => false,
                }
            } else {
                false
            }
        }
    };
    // Give the link a moment to hand the last results to the leader and
    // hear them acknowledged. A result still unacknowledged is lost with
    // the process: the next hello of this agent does not list its job, so
    // the leader fails that attempt and retries it.
    if !link_ended {
        // A result handed to the link but not yet taken by it counts as
        // unacknowledged too.
        let flushed = async {
            while jobs.results_queued() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = unacked_seen.wait_for(|n| *n == 0).await;
        };
        tokio::select! {
            _ = &mut serving => {}
            _ = tokio::time::timeout(FLUSH, flushed) => {}
        }
    }
    // Probes, actions and WAL followers: cancelled, and waited for within
    // what is left of the grace (an action runs to its end).
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !tasks.stop(left.max(FLUSH)).await {
        tracing::warn!("agent tasks still running at the end of the grace period: abandoned");
    }
    watchdog.cancel();
    tracing::info!(cancelled, "agent stopped");
    Ok(())
}
