//! The demoted side of a failover. When an agent connects, the leader
//! looks at each service whose primary is in another region: a store of
//! this agent that still acts as a primary there (an old primary the
//! failover could not fence, back after a partition) is fenced at once:
//! PostgreSQL read-only with its sessions ended, Redis made a replica of
//! the new master (or its writes paused when the topology gives no address
//! for it). A demoted primary never takes writes again until failback.
//! Services with a failover running are left to it.

use super::plan::{probe, store_of};
use super::primaries;
use super::steps::act;
use crate::core::{Coordinator, Lead};
use crate::registry::Session;
use crate::topology::{ServiceConfig, StoreConfig, StoreKind};
use seawall_proto::v1::{action_request::Action, FenceAction, RejoinAction};
use std::time::Duration;

/// What keeps `store`, outside the primary region `primary`, from taking
/// writes: PostgreSQL read-only; Redis a replica of the new master (or its
/// writes paused when the topology gives no address for it).
pub(super) fn demotion(service: &ServiceConfig, primary: &str, store: &StoreConfig) -> Action {
    let new_master = store_of(service, primary, StoreKind::Redis).and_then(|s| s.address.clone());
    match (store.kind, new_master) {
        (StoreKind::Redis, Some(master)) => Action::Rejoin(RejoinAction {
            redis_master: master,
        }),
        (StoreKind::Redis, None) => Action::Fence(FenceAction {
            redis_pause_ms: u32::MAX,
            stop_postgres: false,
        }),
        (StoreKind::Postgres, _) => Action::Rejoin(RejoinAction::default()),
    }
}

/// Fences whatever of `session`'s stores acts as a primary outside its
/// service's primary region; returns what was done, one line each.
pub async fn on_connect(coord: &Coordinator, lead: &Lead, session: &Session) -> Vec<String> {
    let mut done = Vec::new();
    // A service in the middle of a failover has a promoted store outside
    // the recorded primary region on purpose: the workflow owns it.
    let running: Vec<String> = match super::steps::all(coord).await {
        Ok(all) => all
            .into_iter()
            .filter(|f| !super::steps::is_final(f))
            .map(|f| f.service)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "failovers not read: no rejoin check for this agent now");
            return done;
        }
    };
    for service in coord
        .config
        .services
        .iter()
        .filter(|s| !running.contains(&s.name))
    {
        let Ok(Some(primary)) = primaries::current(coord, service).await else {
            continue;
        };
        if primary == session.region {
            continue;
        }
        for store in service
            .stores
            .iter()
            .filter(|s| s.region == session.region && s.agent == session.agent_id)
        {
            let Ok(state) = probe(coord, lead, store).await else {
                continue;
            };
            let acts_as_primary = match store.kind {
                StoreKind::Postgres => state.postgres.as_ref().is_some_and(|p| !p.in_recovery),
                StoreKind::Redis => state.redis.as_ref().is_some_and(|r| r.master),
            };
            if !acts_as_primary {
                continue;
            }
            let action = demotion(service, &primary, store);
            let line = match act(coord, lead, store, action, Duration::from_secs(30)).await {
                Ok(reply) => format!(
                    "{}'s {} ({}/{}) still acted as a primary although {} is {}'s primary region: {}",
                    session.region,
                    store.kind.name(),
                    store.agent,
                    store.source,
                    primary,
                    service.name,
                    reply.detail
                ),
                Err(e) => format!(
                    "{}'s {} ({}/{}) still acts as a primary and could not be fenced: {}",
                    session.region,
                    store.kind.name(),
                    store.agent,
                    store.source,
                    e.message
                ),
            };
            tracing::warn!(service = %service.name, "{line}");
            metrics::counter!("seawall_rejoins_total", "service" => service.name.clone())
                .increment(1);
            coord
                .audit(lead, "failover", format!("rejoin: {line}"))
                .await;
            done.push(line);
        }
    }
    done
}
