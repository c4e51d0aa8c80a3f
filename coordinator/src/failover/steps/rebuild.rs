//! Rebuilding a region's store as a standby of the primary region's: a
//! failback's first steps (`rebuild`), and a switchover's last (`follow`,
//! the old primary following the new one).

use super::{done, skipped, StepDone, StepError};
use crate::failover::action::{act, position_of};
use crate::failover::plan::store_of;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, StoreActEvidence};
use crate::model::topology::{ServiceConfig, StoreKind};
use seawall_proto::v1::{action_request::Action, RebuildAction};

/// A failback's rebuild of the region it returns to (`f.to`) as a standby
/// of the current primary region (`f.from`).
pub(super) async fn rebuild(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
    kind: StoreKind,
) -> Result<StepDone, StepError> {
    standby_of(coord, lead, service, kind, &f.to, &f.from)
        .await
        .map_err(StepError::Fatal)
}

/// A switchover's old primary rebuilt as a standby of the new one. The
/// service runs in the new region already: a rebuild that cannot be done
/// now is reported, not a failed failover.
pub(super) async fn follow(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
    kind: StoreKind,
) -> Result<StepDone, StepError> {
    Ok(
        match standby_of(coord, lead, service, kind, &f.from, &f.to).await {
            Ok(d) => d,
            Err(e) => skipped(format!(
                "not rebuilt as a standby: {e}; `seawall failover run {} --failback --to {} --standby-only` tries again",
                service.name, f.from
            )),
        },
    )
}

/// Rebuilds `region`'s store of `kind` as a standby of `primary_region`'s.
async fn standby_of(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    kind: StoreKind,
    region: &str,
    primary_region: &str,
) -> Result<StepDone, String> {
    let Some(store) = store_of(service, region, kind) else {
        return Ok(skipped(format!("{region} has no {} store", kind.name())));
    };
    let Some(primary) = store_of(service, primary_region, kind).and_then(|s| s.address.clone())
    else {
        return Err(format!(
            "{primary_region}'s {} store has no address in the topology: the rebuilt standby cannot be pointed at it",
            kind.name()
        ));
    };
    let action = Action::Rebuild(RebuildAction {
        primary,
        rewind_only: false,
        primary_instance: managed_instance(coord, service, primary_region, kind).await,
    });
    let reply = act(coord, lead, store, action, service.rebuild_timeout)
        .await
        .map_err(|e| e.to_string())?;
    Ok(done(
        reply.detail.clone(),
        Evidence::StoreAct(StoreActEvidence {
            newest_data: None,
            position: position_of(&reply),
            already: reply.already_done,
            took_ms: Some(i64::from(reply.took_ms)),
        }),
    ))
}

/// The managed instance (its ARN) of `region`'s `kind` store, as the last
/// replication check stored it; empty for a self-managed store.
async fn managed_instance(
    coord: &Coordinator,
    service: &ServiceConfig,
    region: &str,
    kind: StoreKind,
) -> String {
    let Ok(reports) = crate::replication::stored(coord).await else {
        return String::new();
    };
    reports
        .iter()
        .filter(|r| r.service == service.name)
        .flat_map(|r| &r.stores)
        .find(|st| st.region == region && st.kind == kind.name())
        .and_then(|st| st.managed.as_ref())
        .map(|m| m.arn.clone())
        .unwrap_or_default()
}
