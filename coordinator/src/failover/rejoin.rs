//! The demoted side of a failover. When an agent connects, the leader
//! looks at each service whose primary is in another region: a store of
//! this agent that still acts as a primary there (an old primary the
//! failover could not fence, back after a partition) is fenced at once:
//! PostgreSQL fenced (standby.signal, stopped) and started as a standby,
//! Redis made a replica of the new master (or fenced when the topology
//! gives no address for it). A demoted primary never takes writes again
//! until failback. Services with a failover running are left to it.

use super::action::act;
use super::plan::{probe, store_of};
use crate::fleet::registry::Session;
use crate::jobs::{Coordinator, Lead};
use crate::model::topology::{ServiceConfig, StoreConfig};
use crate::replication::primaries;
use seawall_proto::v1::{action_request::Action, RejoinAction, UnfenceAction};
use std::time::Duration;

/// What keeps `store`, outside the primary region `primary`, from taking
/// writes: the store's provider decides how (PostgreSQL a standby, or left
/// stopped with fence = "stop"; Redis a replica of the new master, or
/// fenced when the topology gives no address for it).
/// `keep_diverged`: the store may hold writes the new primary lacks.
pub(super) fn demotion(
    service: &ServiceConfig,
    primary: &str,
    store: &StoreConfig,
    keep_diverged: bool,
) -> Action {
    Action::Rejoin(RejoinAction {
        new_primary: store_of(service, primary, store.kind)
            .and_then(|s| s.address.clone())
            .unwrap_or_default(),
        stay_stopped: service.fence == crate::model::topology::FenceMode::Stop,
        keep_diverged,
    })
}

/// Fences whatever of `session`'s stores acts as a primary outside its
/// service's primary region; returns what was done, one line each.
pub async fn on_connect(coord: &Coordinator, lead: &Lead, session: &Session) -> Vec<String> {
    let mut done = Vec::new();
    // A service in the middle of a failover has a promoted store outside
    // the recorded primary region on purpose: the workflow owns it.
    let running: Vec<String> = match super::stored::all(coord).await {
        Ok(all) => all
            .into_iter()
            .filter(|f| !f.is_final())
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
            // Still the primary region: a store its agent fenced itself
            // (its lease lapsed, and no failover followed) serves again.
            for store in service.stores.iter().filter(|s| {
                s.region == session.region
                    && s.agent == session.agent_id
                    && session.self_fenced.contains(&s.source)
            }) {
                let line = match act(coord, lead, store, Action::Unfence(UnfenceAction {}), Duration::from_secs(30)).await {
                    Ok(reply) => format!(
                        "{}'s {} ({}/{}) was self-fenced on a lapsed lease, and {} is still {}'s primary region: unfenced ({})",
                        session.region, store.kind.name(), store.agent, store.source, primary, service.name, reply.detail
                    ),
                    Err(e) => format!(
                        "{}'s {} ({}/{}) was self-fenced and could not be unfenced: {e}",
                        session.region, store.kind.name(), store.agent, store.source
                    ),
                };
                tracing::warn!(service = %service.name, "{line}");
                coord
                    .audit(lead, "failover", format!("self-fence lifted: {line}"))
                    .await;
                done.push(line);
            }
            continue;
        }
        for store in service
            .stores
            .iter()
            .filter(|s| s.region == session.region && s.agent == session.agent_id)
        {
            // A store its agent fenced itself (stopped, perhaps) is made a
            // standby of the new primary whatever a probe says of it.
            if !session.self_fenced.contains(&store.source) {
                let Ok(state) = probe(coord, lead, store).await else {
                    continue;
                };
                if !crate::replication::kinds::rules(store.kind).acts_as_primary(&state) {
                    continue;
                }
            }
            // Back after a failover it was not caught up in: whatever it
            // took since may be nowhere else.
            let action = demotion(service, &primary, store, true);
            let line = match act(coord, lead, store, action, Duration::from_secs(30)).await {
                Ok(reply) => {
                    // What it wrote that the new primary lacks: the
                    // failover's RPO, measured now.
                    let measured = match &reply.divergence {
                        Some(d) => super::measured::at_rejoin(
                            coord,
                            lead,
                            service,
                            &session.region,
                            store.kind,
                            d,
                        )
                        .await
                        .map(|m| format!("; {m}"))
                        .unwrap_or_default(),
                        None => String::new(),
                    };
                    format!(
                        "{}'s {} ({}/{}) still acted as a primary although {} is {}'s primary region: {}{measured}",
                        session.region,
                        store.kind.name(),
                        store.agent,
                        store.source,
                        primary,
                        service.name,
                        reply.detail
                    )
                }
                Err(e) => format!(
                    "{}'s {} ({}/{}) still acts as a primary and could not be fenced: {}",
                    session.region,
                    store.kind.name(),
                    store.agent,
                    store.source,
                    e
                ),
            };
            tracing::warn!(service = %service.name, "{line}");
            super::metrics::rejoined(&service.name);
            coord
                .audit(lead, "failover", format!("rejoin: {line}"))
                .await;
            done.push(line);
        }
    }
    done
}
