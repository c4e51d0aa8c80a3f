//! A failover's end: the achieved RTO and RPO, the gaps between what the
//! old primaries held at the fence and what the new ones started from, and
//! the new primary region recorded.

use super::plan::stores_in;
use super::stored::save;
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::failover::{FailoverRecord, FailoverState, Step};
use crate::model::topology::{ServiceConfig, StoreKind};
use seawall_proto::v1::StoreProbe;
use std::time::Duration;

/// The newest canary each store of the new primary region holds.
async fn canaries_in(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for store in stores_in(service, region) {
        let probe = StoreProbe {
            source: store.source.clone(),
            canary_read: service.name.clone(),
            ..Default::default()
        };
        let seen = super::plan::ask_store(coord, lead, store, probe, Duration::from_secs(5))
            .await
            .ok()
            .and_then(|r| r.canary)
            .map(|c| c.written_unix_ms);
        out.push(seen);
    }
    out
}

/// Bytes of `kind` the fenced old primary held beyond where the new
/// primary started (its caught-up position, else its promoted one).
fn gap(f: &FailoverRecord, kind: StoreKind) -> Option<i64> {
    let fenced = f.position_at(Step::Fence, kind)?;
    let started = f
        .position_at(Step::CatchUp, kind)
        .or_else(|| f.position_at(Step::Promote(kind), kind))?;
    fenced.bytes_after(started)
}

/// When the RTO's clock started: an automatic failover's when the fault
/// was first seen; otherwise (a failback's too) when its precheck began.
fn clock_start(f: &FailoverRecord) -> i64 {
    if f.automatic && f.detected_unix_ms > 0 {
        return f.detected_unix_ms;
    }
    f.step(Step::Precheck)
        .map(|s| s.started_unix_ms)
        .filter(|t| *t > 0)
        .unwrap_or(f.started_unix_ms)
}

/// Every step is done: the achieved figures, the new primary recorded.
pub async fn finish(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    mut f: FailoverRecord,
    rev: i64,
) -> Result<(), ActError> {
    let now = now_ms();
    if f.standby_only {
        f.state = FailoverState::Succeeded;
        f.finished_unix_ms = now;
        let event = format!(
            "failback {} succeeded: {}'s stores in {} are standbys of {} again",
            f.id, f.service, f.to, f.from
        );
        save(coord, lead, &f, rev, Some(event), Vec::new()).await?;
        return Ok(());
    }
    let post_checked = f
        .step(Step::PostCheck)
        .map(|s| s.ended_unix_ms)
        .filter(|t| *t > 0)
        .unwrap_or(now);
    f.rto_ms = Some(post_checked - clock_start(&f));
    f.lsn_gap_bytes = gap(&f, StoreKind::Postgres);
    f.offset_gap = gap(&f, StoreKind::Redis);
    // RPO from the canaries: the newest the old primaries acknowledged
    // against the newest the new primaries hold.
    if service.canary {
        let acked = crate::replication::stored(coord)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|r| r.service == service.name))
            .map(|r| r.canary_written_unix_ms)
            .filter(|t| *t > 0);
        if let Some(acked) = acked {
            let seen = canaries_in(coord, lead, service, &f.to).await;
            f.rpo_ms = seen
                .iter()
                .map(|s| match s {
                    Some(t) => (acked - t).max(0),
                    // Nothing arrived: everything since canaries began.
                    None => (acked - f.started_unix_ms).max(0),
                })
                .max();
        }
    }
    f.state = FailoverState::Succeeded;
    f.finished_unix_ms = now;
    let rto = f.rto_ms.unwrap_or(0);
    super::metrics::outcome(&f.service, "succeeded");
    super::metrics::achieved(&f.service, rto, f.rpo_ms);
    let event = format!(
        "failover {} succeeded: {} is {}'s primary region; RTO {:.2} s{}",
        f.id,
        f.to,
        f.service,
        rto as f64 / 1000.0,
        f.rpo_ms
            .map(|r| format!(", RPO {:.2} s", r as f64 / 1000.0))
            .unwrap_or_default()
    );
    save(
        coord,
        lead,
        &f,
        rev,
        Some(event),
        vec![(
            crate::replication::primaries::key(&f.service),
            f.to.clone().into_bytes(),
        )],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failover::{Evidence, FenceEvidence, Position, StepRecord, StoreActEvidence};

    fn at(step: Step, evidence: Evidence) -> StepRecord {
        StepRecord {
            evidence,
            ..StepRecord::pending(step)
        }
    }

    #[test]
    fn gaps_compare_the_fence_with_the_caught_up_else_the_promoted_position() {
        let pg = |lsn: &str| Position::Postgres {
            lsn: lsn.into(),
            timeline: None,
        };
        let mut fence = FenceEvidence::default();
        fence.fenced.insert(StoreKind::Postgres, pg("0/3000100"));
        fence
            .fenced
            .insert(StoreKind::Redis, Position::Redis { offset: 500 });
        let mut f = FailoverRecord {
            steps: vec![
                at(Step::Fence, Evidence::Fence(fence)),
                at(
                    Step::Promote(StoreKind::Postgres),
                    Evidence::StoreAct(StoreActEvidence {
                        position: Some(pg("0/3000000")),
                        ..Default::default()
                    }),
                ),
                at(
                    Step::Promote(StoreKind::Redis),
                    Evidence::StoreAct(StoreActEvidence {
                        position: Some(Position::Redis { offset: 800 }),
                        ..Default::default()
                    }),
                ),
            ],
            ..Default::default()
        };
        assert_eq!(gap(&f, StoreKind::Postgres), Some(256));
        assert_eq!(gap(&f, StoreKind::Redis), Some(0));
        f.steps.insert(
            1,
            at(
                Step::CatchUp,
                Evidence::Positions([(StoreKind::Postgres, pg("0/3000100"))].into()),
            ),
        );
        assert_eq!(gap(&f, StoreKind::Postgres), Some(0));
        f.steps.remove(0);
        assert_eq!(gap(&f, StoreKind::Postgres), None, "no fence, no gap");
    }
}
