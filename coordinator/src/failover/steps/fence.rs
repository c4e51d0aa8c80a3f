//! Fencing the old primary region's stores, and lifting the fence when a
//! failover fails before anything was promoted.

use super::{done, StepDone, StepError};
use crate::failover::action::{act, position_of};
use crate::failover::plan::stores_in;
use crate::failover::self_fence;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, FenceEvidence};
use crate::model::topology::{FenceMode, ServiceConfig};
use seawall_proto::v1::{action_request::Action, FenceAction, UnfenceAction};
use std::time::Duration;

/// How long fencing a store may take (a reachable one takes milliseconds).
const FENCE_DEADLINE: Duration = Duration::from_secs(10);
/// How long lifting a fence may take.
const UNFENCE_DEADLINE: Duration = Duration::from_secs(30);

pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
) -> Result<StepDone, StepError> {
    let mut evidence = FenceEvidence::default();
    if f.region_declared_down() {
        // Declared down by two signals: asking it again only costs time.
        // Its agents fence it themselves when their lease lapses; nothing
        // is promoted before that moment has passed.
        evidence.unfenced = stores_in(service, &f.from).iter().map(|s| s.kind).collect();
        let selves = match self_fence::wait_fenced(coord, lead, service, &f.from).await {
            Some((by, said)) => {
                evidence.self_fenced_by_unix_ms = Some(by);
                said
            }
            None => "nothing fences its stores until their agent returns".into(),
        };
        return Ok(done(
            format!(
                "not fenced by the failover: {} was declared down; {selves}",
                f.from
            ),
            Evidence::Fence(evidence),
        ));
    }
    let mut details = Vec::new();
    for store in stores_in(service, &f.from) {
        // Durable until the demote step makes it a standby, or a failover
        // that promoted nothing unfences it: a fence that lapses by itself
        // (a restart, a client's command) would let the old primary write.
        let action = Action::Fence(FenceAction {
            stop_postgres: service.fence == FenceMode::Stop,
        });
        match act(coord, lead, store, action, FENCE_DEADLINE).await {
            Ok(reply) => {
                if let Some(at) = position_of(&reply) {
                    evidence.fenced.insert(store.kind, at);
                }
                details.push(format!("{}: {}", store.kind.name(), reply.detail));
            }
            Err(e) if e.unreachable() && service.failover_unfenced && !f.switchover => {
                evidence.unfenced.push(store.kind);
                details.push(format!(
                    "{}: not fenced: unreachable ({e})",
                    store.kind.name()
                ));
            }
            // The store whose failure started this: two signals said it
            // does not answer. Its agent fences it from its data directory
            // when it can (above); when even that fails it is recorded
            // unfenced, and the RPO says it is unbounded.
            Err(e) if f.failed_store == store.kind.name() => {
                evidence.unfenced.push(store.kind);
                details.push(format!(
                    "{}: not fenced: it failed, and its agent could not fence it ({e}); if it comes back it may take writes until its agent fences it",
                    store.kind.name()
                ));
            }
            Err(e) => {
                return Err(StepError::Fatal(format!(
                    "{} could not be fenced: {e}{}",
                    f.from,
                    if service.failover_unfenced {
                        ""
                    } else {
                        " (failover_unfenced is off for this service)"
                    }
                )))
            }
        }
    }
    if !evidence.unfenced.is_empty() && !f.failed_store.is_empty() {
        // Its agent reports, so its lease does not lapse: nothing but that
        // agent fences the failed store, when it can reach it again.
        details.push(format!(
            "{}'s agent still reports: its lease does not lapse, so the RPO of what it did not fence is unbounded",
            f.from
        ));
    } else if !evidence.unfenced.is_empty() {
        // Unreachable stores may still take writes: what fences them is
        // their agents' lease, when the service has one.
        details.push(
            match self_fence::wait_fenced(coord, lead, service, &f.from).await {
                Some((by, said)) => {
                    evidence.self_fenced_by_unix_ms = Some(by);
                    said
                }
                None => format!(
                    "nothing fences {}'s unreachable stores until their agent returns (no automatic failover, so its agents hold no lease)",
                    f.from
                ),
            },
        );
    }
    Ok(done(details.join("; "), Evidence::Fence(evidence)))
}

/// Makes the old primary region's stores take writes again after a
/// failover that promoted nothing; returns what happened, for the error.
pub async fn unfence(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    from: &str,
) -> String {
    let mut out = Vec::new();
    for store in stores_in(service, from) {
        match act(
            coord,
            lead,
            store,
            Action::Unfence(UnfenceAction {}),
            UNFENCE_DEADLINE,
        )
        .await
        {
            Ok(_) => out.push(format!("{} takes writes again", store.kind.name())),
            Err(e) => out.push(format!(
                "{} could not be unfenced ({e}): it stays fenced",
                store.kind.name(),
            )),
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(
            "; nothing was promoted, so {from} was unfenced: {}",
            out.join(", ")
        )
    }
}
