//! A switchover's standbys replay up to where the fenced primaries stopped,
//! so the promotion loses nothing.

use super::{done, skipped, StepDone, StepError};
use crate::failover::action::{act, position_of, wire_position};
use crate::failover::plan::stores_in;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, Positions, Step};
use crate::model::topology::ServiceConfig;
use seawall_proto::v1::{action_request::Action, CatchUpAction};

pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
) -> Result<StepDone, StepError> {
    if !f.switchover {
        return Ok(skipped(
            "not a switchover: the standby is promoted with what it has",
        ));
    }
    let mut positions = Positions::new();
    let mut details = Vec::new();
    for store in stores_in(service, &f.to) {
        let target = CatchUpAction {
            to: f.position_at(Step::Fence, store.kind).map(wire_position),
        };
        let reply = act(
            coord,
            lead,
            store,
            Action::CatchUp(target),
            service.catch_up_timeout,
        )
        .await
        .map_err(|e| StepError::Fatal(e.to_string()))?;
        if let Some(at) = position_of(&reply) {
            positions.insert(store.kind, at);
        }
        details.push(format!("{}: {}", store.kind.name(), reply.detail));
    }
    Ok(done(details.join("; "), Evidence::Positions(positions)))
}
