//! The old primaries end as replicas of the new ones (or stay fenced). The
//! service runs in the new region already: this step records what it could
//! not do rather than fail.

use super::{done, skipped, StepDone, StepError};
use crate::failover::action::act;
use crate::failover::plan::stores_in;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord};
use crate::model::topology::ServiceConfig;
use std::time::Duration;

/// How long a demotion may take.
const DEMOTE_DEADLINE: Duration = Duration::from_secs(30);

pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
) -> Result<StepDone, StepError> {
    if f.region_declared_down() {
        return Ok(skipped(format!(
            "{} was declared down: its stores are fenced when its agent returns",
            f.from
        )));
    }
    let unfenced = f
        .fence_evidence()
        .map(|e| e.unfenced.clone())
        .unwrap_or_default();
    let mut details = Vec::new();
    for store in stores_in(service, &f.from) {
        let kind = store.kind.name();
        if unfenced.contains(&store.kind) {
            details.push(format!(
                "{kind}: not fenced (unreachable): fenced when its agent returns"
            ));
            continue;
        }
        // A switchover's new primary caught up to this store's fence:
        // nothing diverged. Otherwise it may have.
        let action = crate::failover::rejoin::demotion(service, &f.to, store, !f.switchover);
        match act(coord, lead, store, action, DEMOTE_DEADLINE).await {
            Ok(reply) => details.push(format!("{kind}: {}", reply.detail)),
            Err(e) => details.push(format!("{kind}: not demoted ({e}); it stays fenced")),
        }
    }
    Ok(done(details.join("; "), Evidence::None))
}
