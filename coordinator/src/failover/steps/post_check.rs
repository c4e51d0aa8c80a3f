//! The new primaries answer writes and pass the service's checks.

use super::{done, StepDone, StepError};
use crate::failover::action::{act, position_of};
use crate::failover::plan::stores_in;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, Positions};
use crate::model::topology::ServiceConfig;
use seawall_proto::v1::{action_request::Action, PostCheckAction};
use std::time::Duration;

/// How long a store's post-check may take.
const POST_CHECK_DEADLINE: Duration = Duration::from_secs(30);

pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
) -> Result<StepDone, StepError> {
    let mut positions = Positions::new();
    let mut details = Vec::new();
    for store in stores_in(service, &f.to) {
        let action = Action::PostCheck(PostCheckAction {
            service: service.name.clone(),
            // A kind without SQL checks (Redis) ignores it.
            check_file: service.check_file.clone().unwrap_or_default(),
        });
        let reply = act(coord, lead, store, action, POST_CHECK_DEADLINE).await?;
        if let Some(at) = position_of(&reply) {
            positions.insert(store.kind, at);
        }
        details.push(format!("{}: {}", store.kind.name(), reply.detail));
    }
    Ok(done(details.join("; "), Evidence::Positions(positions)))
}
