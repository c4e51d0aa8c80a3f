//! A failover's end: the achieved RTO and RPO, the gaps between what the
//! old primaries held at the fence and what the new ones started from, and
//! the new primary region recorded.

use super::stored::save;
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::failover::{FailoverRecord, FailoverState, Step};
use crate::model::topology::{ServiceConfig, StoreKind};

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

/// The achieved RTO, RPO and gaps, set when the post-check passes (the
/// service is served again: `--wait` returns then) and again at the end,
/// from the same evidence: the follow steps after it change neither.
pub fn achieve(service: &ServiceConfig, f: &mut FailoverRecord, now: i64) {
    let post_checked = f
        .step(Step::PostCheck)
        .map(|s| s.ended_unix_ms)
        .filter(|t| *t > 0)
        .unwrap_or(now);
    f.rto_ms = Some(post_checked - clock_start(f));
    f.lsn_gap_bytes = super::rpo::gap(f, StoreKind::Postgres);
    f.offset_gap = super::rpo::gap(f, StoreKind::Redis);
    // From evidence taken before anything was written to the new
    // primaries (failover/rpo.rs).
    let rpo = super::rpo::reckon(f, &super::rpo::kinds_in(service, &f.to));
    f.rpo_ms = rpo.ms;
    f.rpo_basis = rpo.basis;
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
    achieve(service, &mut f, now);
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
            .map(|r| format!(", RPO at most {:.2} s", r as f64 / 1000.0))
            .unwrap_or_else(|| ", RPO unbounded".into())
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
