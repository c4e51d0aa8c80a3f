//! Scratch RDS instances (a restore drill's point-in-time copies) carry
//! tags naming the agent and the job that made them and when they expire.
//! A drill killed or cancelled mid-way leaves one behind, and a leaked
//! `db.r6g.large` costs money every hour: each agent deletes, without a
//! final snapshot, its own whose job no longer runs, when it starts,
//! after each RDS drill job ends, and every [`EVERY`].

use crate::cloud::rds::api::Rds;
use crate::cloud::rds::config::RdsInstance;
use crate::cloud::rds::scratch::{leftovers, SCRATCH};
use crate::daemon::config::AgentConfig;
use seawall_common::Result;
use std::time::Duration;

/// How often expired scratch instances are looked for.
pub const EVERY: Duration = Duration::from_secs(600);

/// Deletes agent `agent`'s leftover scratch instances in `rds`'s region
/// (those of jobs not in `running`, and expired ones); returns the
/// identifiers deleted.
pub async fn sweep(rds: &Rds, agent: &str, running: &[String]) -> Result<Vec<String>> {
    let found = rds.tagged(SCRATCH).await?;
    let now = chrono::Utc::now().timestamp();
    let mut deleted = Vec::new();
    for i in leftovers(&found, agent, running, now) {
        rds.delete_scratch(&i.id).await?;
        tracing::warn!(instance = %i.id, "deleted a scratch RDS instance a drill left behind");
        deleted.push(i.id.clone());
    }
    Ok(deleted)
}

/// The agent's RDS sources, one per AWS region.
fn regions(config: &AgentConfig) -> Vec<RdsInstance> {
    let mut regions: Vec<RdsInstance> = Vec::new();
    for s in &config.sources {
        if let Some(r) = &s.rds {
            if !regions
                .iter()
                .any(|x| x.access.aws_region == r.access.aws_region)
            {
                regions.push(r.clone());
            }
        }
    }
    regions
}

/// Sweeps each region of the agent's RDS sources now and every [`EVERY`],
/// keeping the copies of the jobs `running` names.
pub fn start(
    config: &AgentConfig,
    tasks: &seawall_common::tasks::Tree,
    running: impl Fn() -> Vec<String> + Clone + Send + Sync + 'static,
) {
    for instance in regions(config) {
        let agent = config.id.clone();
        let running = running.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                once(&instance, &agent, &running()).await;
            }
        });
    }
}

/// One sweep of `instance`'s region, its failure logged (tried again at
/// the next).
pub async fn once(instance: &RdsInstance, agent: &str, running: &[String]) {
    let swept = match Rds::open(instance).await {
        Ok(rds) => sweep(&rds, agent, running).await,
        Err(e) => Err(e),
    };
    if let Err(e) = swept {
        tracing::warn!(region = %instance.access.aws_region, error = %e, "scratch RDS instances not swept");
    }
}
