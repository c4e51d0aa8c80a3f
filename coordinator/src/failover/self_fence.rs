//! The leader's side of self-fencing (the inequality is in
//! `model/self_fence.rs`): what an agent's lease covers, and the wait
//! before a promotion in a region whose old primaries were not fenced by
//! the failover itself.

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::self_fence::SELF_FENCE_MARGIN;
use crate::model::topology::{FenceMode, ServiceConfig};
use std::time::Duration;

/// What an agent's lease covers: its stores in services with automatic
/// failover (fencing one that is a standby already changes nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Covered {
    /// The bound (the smallest of its services').
    pub after: Option<Duration>,
    /// Its sources, and whether PostgreSQL stays stopped (fence = "stop").
    pub sources: Vec<(String, bool)>,
}

/// What `region/agent`'s lease covers.
pub fn covered(services: &[ServiceConfig], region: &str, agent: &str) -> Covered {
    let mut out = Covered::default();
    for s in services {
        let Some(auto) = &s.auto_failover else {
            continue;
        };
        for st in s
            .stores
            .iter()
            .filter(|st| st.region == region && st.agent == agent)
        {
            out.after = Some(
                out.after
                    .map_or(auto.self_fence_after, |a| a.min(auto.self_fence_after)),
            );
            if !out.sources.iter().any(|(src, _)| *src == st.source) {
                out.sources
                    .push((st.source.clone(), s.fence == FenceMode::Stop));
            }
        }
    }
    out
}

/// When `region`'s stores of `service` have fenced themselves at the
/// latest (unix ms): the bound and margin after the newest heartbeat
/// from any of their agents, or after this leader was elected when it
/// never heard them. None when the service has no automatic failover
/// (its agents hold no lease, and nothing fences them but the failover).
pub fn fenced_by(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
) -> Option<i64> {
    let auto = service.auto_failover.as_ref()?;
    let mut last = lead.since_ms;
    for st in service.stores.iter().filter(|s| s.region == region) {
        let heard = coord
            .registry
            .get(region, &st.agent)
            .map(|s| {
                s.last_heartbeat_ms
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .or_else(|| coord.registry.last_heard(region, &st.agent));
        if let Some(h) = heard {
            last = last.max(h);
        }
    }
    Some(last + (auto.self_fence_after + SELF_FENCE_MARGIN).as_millis() as i64)
}

/// Waits until `region`'s stores of `service` have fenced themselves;
/// when that was (unix ms) and what was waited, for the journal. None:
/// they hold no lease.
pub async fn wait_fenced(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
) -> Option<(i64, String)> {
    let by = fenced_by(coord, lead, service, region)?;
    let wait = by - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    Some((by, format!(
        "its agents fence its stores themselves when their lease lapses: by {} (the last heartbeat plus self_fence_after and a {:?} margin){}",
        crate::model::clock::iso(by),
        SELF_FENCE_MARGIN,
        if wait > 0 {
            format!(", waited {:.2} s for it", wait as f64 / 1000.0)
        } else {
            ", passed already".into()
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_covers_an_agents_stores_in_services_with_automatic_failover() {
        let text = r#"
            name = "shop"
            [[stores]]
            region = "west"
            kind = "postgres"
            agent = "w1"
            source = "db"
            [[stores]]
            region = "east"
            kind = "postgres"
            agent = "e1"
            source = "db"
        "#;
        let shop: ServiceConfig = toml::from_str(text).unwrap();
        assert_eq!(
            covered(std::slice::from_ref(&shop), "west", "w1"),
            Covered::default()
        );
        let auto: ServiceConfig = toml::from_str(&format!(
            "fence = \"stop\"\n{text}\n[auto_failover]\nself_fence_after = \"3s\"\n"
        ))
        .unwrap();
        let c = covered(&[auto], "west", "w1");
        assert_eq!(c.after, Some(Duration::from_secs(3)));
        assert_eq!(c.sources, [("db".to_string(), true)]);
    }
}
