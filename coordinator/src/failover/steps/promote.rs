//! Promoting the new primary region's store of one kind.

use super::{done, skipped, StepDone, StepError};
use crate::failover::action::{act, position_of};
use crate::failover::plan::store_of;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, StoreActEvidence};
use crate::model::topology::{ServiceConfig, StoreKind};
use seawall_proto::v1::{action_request::Action, PromoteAction};
use std::time::Duration;

/// How long a promotion may take.
const PROMOTE_DEADLINE: Duration = Duration::from_secs(60);

pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
    kind: StoreKind,
) -> Result<StepDone, StepError> {
    let Some(store) = store_of(service, &f.to, kind) else {
        return Ok(skipped(format!("{} has no {} store", f.to, kind.name())));
    };
    let reply = act(
        coord,
        lead,
        store,
        Action::Promote(PromoteAction {}),
        PROMOTE_DEADLINE,
    )
    .await?;
    Ok(done(
        reply.detail.clone(),
        Evidence::StoreAct(StoreActEvidence {
            position: position_of(&reply),
            already: reply.already_done,
            took_ms: None,
        }),
    ))
}
