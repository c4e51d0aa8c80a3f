//! Scratch RDS instances (a restore drill's point-in-time copies) carry
//! tags naming the agent that made them and when they expire. An agent
//! killed mid-drill leaves one behind, and a leaked `db.r6g.large` costs
//! money every hour: each agent deletes its own leftovers when it starts
//! and its expired ones every [`EVERY`], without a final snapshot.

use super::api::{InstanceState, Rds};
use crate::daemon::config::AgentConfig;
use seawall_common::Result;
use std::time::Duration;

/// Tag: the instance is a scratch copy Seawall made ("true").
pub const SCRATCH: &str = "seawall:scratch";
/// Tag: the agent that made it (its id).
pub const AGENT: &str = "seawall:agent";
/// Tag: when it may be deleted whatever its drill does (unix seconds).
pub const EXPIRES: &str = "seawall:expires";
/// How often expired scratch instances are looked for.
pub const EVERY: Duration = Duration::from_secs(600);

fn tag<'a>(i: &'a InstanceState, key: &str) -> Option<&'a str> {
    i.tags
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Of `instances`, the scratch copies of agent `agent` to delete at
/// `now_secs`: all of them at the agent's start (`starting`: no drill of
/// its own runs yet), else the expired ones.
pub fn leftovers<'a>(
    instances: &'a [InstanceState],
    agent: &str,
    starting: bool,
    now_secs: i64,
) -> Vec<&'a InstanceState> {
    instances
        .iter()
        .filter(|i| tag(i, SCRATCH) == Some("true") && tag(i, AGENT) == Some(agent))
        .filter(|i| {
            starting
                || tag(i, EXPIRES)
                    .and_then(|e| e.parse::<i64>().ok())
                    .is_none_or(|e| e <= now_secs)
        })
        .filter(|i| i.status != "deleting")
        .collect()
}

/// Deletes agent `agent`'s leftover scratch instances in `rds`'s region;
/// returns the identifiers deleted.
pub async fn sweep(rds: &Rds, agent: &str, starting: bool) -> Result<Vec<String>> {
    let found = rds.tagged(SCRATCH).await?;
    let now = chrono::Utc::now().timestamp();
    let mut deleted = Vec::new();
    for i in leftovers(&found, agent, starting, now) {
        rds.delete_scratch(&i.id).await?;
        tracing::warn!(instance = %i.id, "deleted a scratch RDS instance a drill left behind");
        deleted.push(i.id.clone());
    }
    Ok(deleted)
}

/// Sweeps each region of the agent's RDS sources now and every [`EVERY`].
pub fn start(config: &AgentConfig, tasks: &seawall_common::tasks::Tree) {
    let mut regions: Vec<super::config::RdsInstance> = Vec::new();
    for s in &config.sources {
        if let Some(r) = &s.rds {
            if !regions.iter().any(|x| x.aws_region == r.aws_region) {
                regions.push(r.clone());
            }
        }
    }
    for instance in regions {
        let agent = config.id.clone();
        tasks.spawn(async move {
            let mut starting = true;
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let swept = match Rds::open(&instance).await {
                    Ok(rds) => sweep(&rds, &agent, starting).await,
                    Err(e) => Err(e),
                };
                match swept {
                    Ok(_) => starting = false,
                    // Tried again at the next tick; a start's sweep stays
                    // a start's until it went through.
                    Err(e) => tracing::warn!(region = %instance.aws_region, error = %e, "scratch RDS instances not swept"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, tags: &[(&str, &str)]) -> InstanceState {
        InstanceState {
            id: id.into(),
            status: "available".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..InstanceState::default()
        }
    }

    #[test]
    fn only_the_agents_own_scratch_copies_are_swept_and_live_ones_only_once_expired() {
        let all = vec![
            instance("orders-west", &[]),
            instance(
                "mine-live",
                &[(SCRATCH, "true"), (AGENT, "w1"), (EXPIRES, "2000")],
            ),
            instance(
                "mine-expired",
                &[(SCRATCH, "true"), (AGENT, "w1"), (EXPIRES, "500")],
            ),
            instance(
                "theirs",
                &[(SCRATCH, "true"), (AGENT, "e1"), (EXPIRES, "500")],
            ),
            instance("not-scratch", &[(AGENT, "w1"), (EXPIRES, "500")]),
        ];
        let ids = |v: Vec<&InstanceState>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(leftovers(&all, "w1", false, 1000)),
            vec!["mine-expired"]
        );
        assert_eq!(
            ids(leftovers(&all, "w1", true, 1000)),
            vec!["mine-live", "mine-expired"]
        );
    }
}
