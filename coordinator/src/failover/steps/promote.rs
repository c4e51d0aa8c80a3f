//! Promoting the new primary region's store of one kind.

use super::{done, skipped, StepDone, StepError};
use crate::failover::action::{act, position_of};
use crate::failover::plan::{ask_store, store_of};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::failover::{Evidence, FailoverRecord, StoreActEvidence};
use crate::model::topology::{ServiceConfig, StoreConfig, StoreKind};
use seawall_proto::v1::{action_request::Action, PromoteAction, StoreProbe};
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
    // Read before the promotion, before Seawall writes anything there:
    // the RPO rests on it (failover/rpo.rs).
    let newest_data = newest_data(coord, lead, service, store).await;
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
            newest_data,
        }),
    ))
}

/// How long reading the standby's newest data may take (it is about to be
/// promoted: a slow answer costs RTO, none costs only the figure's basis).
const NEWEST_DEADLINE: Duration = Duration::from_secs(3);

/// The newest moment before which every write the old primary
/// acknowledged is in `store`: its newest canary (written at the
/// coordinator's time, before the write itself) and, for a PostgreSQL
/// standby, its last replayed commit (the old primary's commit time); the
/// later of the two, and what says so.
async fn newest_data(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    store: &StoreConfig,
) -> Option<(i64, String)> {
    let asked = now_ms();
    let probe = StoreProbe {
        source: store.source.clone(),
        replication: true,
        canary_read: if service.canary {
            service.name.clone()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let report = ask_store(coord, lead, store, probe, NEWEST_DEADLINE)
        .await
        .map_err(|e| tracing::warn!(service = %service.name, error = %e, "the standby's newest data not read before its promotion"))
        .ok()?;
    let canary = report
        .canary
        .as_ref()
        .map(|c| (c.written_unix_ms, "its newest canary".to_string()));
    let commit = crate::replication::kinds::rules(store.kind)
        .newest_replayed(&report, asked)
        .map(|at| (at, "its last replayed commit".to_string()));
    match (canary, commit) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
