//! The achieved RPO: a bound on the writes clients lost, as time, never
//! below what they lost, with what it rests on. Per store kind, two times:
//!
//! - **newest in the new primary**: every write the old primary
//!   acknowledged before it is there. Read before the promotion, before
//!   Seawall writes anything there (steps/promote.rs): the newest canary
//!   it holds (stamped with the coordinator's time before the write) and,
//!   for PostgreSQL, its last replayed commit. The canary interval (the
//!   replication checks') and the replay timestamp set the resolution.
//! - **end of the old primary**: the last moment it could acknowledge a
//!   write. The fence step's end when the failover fenced it; the moment
//!   its agents' lease lapsed when they fence it themselves; nothing (no
//!   figure, only the basis) when nothing stops it.
//!
//! When the new primary replayed the old one's fence position (a
//! switchover's catch-up), that kind lost nothing, exactly.

use crate::model::failover::{Evidence, FailoverRecord, Step};
use crate::model::topology::{ServiceConfig, StoreKind};

/// The figure and its basis.
#[derive(Debug, Clone, PartialEq)]
pub struct Rpo {
    /// The bound, in ms; None when nothing bounds it.
    pub ms: Option<i64>,
    /// What it rests on, in words.
    pub basis: String,
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// The RPO of a failover whose steps are done, for the kinds `service`
/// has in the new primary region.
pub fn reckon(f: &FailoverRecord, kinds: &[StoreKind]) -> Rpo {
    let fence = f.fence_evidence();
    let fence_end = f
        .step(Step::Fence)
        .map(|s| s.ended_unix_ms)
        .filter(|t| *t > 0);
    let mut worst: Option<i64> = Some(0);
    let mut basis = Vec::new();
    for &kind in kinds {
        let name = kind.name();
        if gap(f, kind) == Some(0) {
            basis.push(format!(
                "{name}: 0 (the new primary had the old one's fence position)"
            ));
            continue;
        }
        let newest = match f.step(Step::Promote(kind)).map(|s| &s.evidence) {
            Some(Evidence::StoreAct(a)) => a.newest_data.clone(),
            _ => None,
        };
        let fenced = fence.is_some_and(|e| e.fenced.contains_key(&kind));
        let end = if fenced {
            fence_end.map(|t| (t, "fenced by the failover"))
        } else {
            fence
                .and_then(|e| e.self_fenced_by_unix_ms)
                .map(|t| (t, "self-fenced (its agents' lease lapsed)"))
        };
        match (newest, end) {
            (Some((from, what)), Some((until, how))) => {
                let ms = (until - from).max(0);
                worst = worst.map(|w| w.max(ms));
                basis.push(format!(
                    "{name}: at most {} ({what} in the new primary; the old one took writes until it was {how})",
                    secs(ms)
                ));
            }
            (None, _) => {
                worst = None;
                basis.push(format!(
                    "{name}: unbounded (nothing read of the new primary before its promotion says what it had: enable canary)"
                ));
            }
            (_, None) => {
                worst = None;
                basis.push(format!(
                    "{name}: unbounded (the old primary was not fenced and holds no lease: it may take writes until its agent returns)"
                ));
            }
        }
    }
    Rpo {
        ms: worst,
        basis: basis.join("; "),
    }
}

/// Bytes of `kind` the fenced old primary held beyond where the new
/// primary started (its caught-up position, else its promoted one).
pub fn gap(f: &FailoverRecord, kind: StoreKind) -> Option<i64> {
    let fenced = f.position_at(Step::Fence, kind)?;
    let started = f
        .position_at(Step::CatchUp, kind)
        .or_else(|| f.position_at(Step::Promote(kind), kind))?;
    fenced.bytes_after(started)
}

/// The kinds `service` has in `region`.
pub fn kinds_in(service: &ServiceConfig, region: &str) -> Vec<StoreKind> {
    let mut kinds: Vec<StoreKind> = super::plan::stores_in(service, region)
        .iter()
        .map(|s| s.kind)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failover::{FenceEvidence, Position, StepRecord, StoreActEvidence};

    fn at(step: Step, ended: i64, evidence: Evidence) -> StepRecord {
        StepRecord {
            evidence,
            ended_unix_ms: ended,
            ..StepRecord::pending(step)
        }
    }

    fn promoted(kind: StoreKind, newest: Option<i64>, position: Position) -> StepRecord {
        at(
            Step::Promote(kind),
            0,
            Evidence::StoreAct(StoreActEvidence {
                position: Some(position),
                newest_data: newest.map(|t| (t, "its newest canary".to_string())),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn the_rpo_runs_from_the_newest_data_in_the_new_primary_to_the_old_ones_end() {
        let pg = |lsn: &str| Position::Postgres {
            lsn: lsn.into(),
            timeline: None,
        };
        // A switchover: caught up to the fence, nothing lost, exactly.
        let mut fence = FenceEvidence::default();
        fence.fenced.insert(StoreKind::Postgres, pg("0/3000100"));
        let switchover = FailoverRecord {
            steps: vec![
                at(Step::Fence, 10_000, Evidence::Fence(fence.clone())),
                promoted(StoreKind::Postgres, Some(9_000), pg("0/3000100")),
            ],
            ..Default::default()
        };
        assert_eq!(reckon(&switchover, &[StoreKind::Postgres]).ms, Some(0));

        // Fenced but behind: from its newest data to the fence's end.
        let behind = FailoverRecord {
            steps: vec![
                at(Step::Fence, 10_000, Evidence::Fence(fence)),
                promoted(StoreKind::Postgres, Some(8_500), pg("0/3000000")),
            ],
            ..Default::default()
        };
        let r = reckon(&behind, &[StoreKind::Postgres]);
        assert_eq!(r.ms, Some(1_500));
        assert!(r.basis.contains("at most 1.50 s"), "{}", r.basis);

        // Unfenced, self-fenced by 12 s: bounded by the lease.
        let leased = FailoverRecord {
            steps: vec![
                at(
                    Step::Fence,
                    10_000,
                    Evidence::Fence(FenceEvidence {
                        unfenced: vec![StoreKind::Postgres, StoreKind::Redis],
                        self_fenced_by_unix_ms: Some(12_000),
                        ..Default::default()
                    }),
                ),
                promoted(StoreKind::Postgres, Some(9_000), pg("0/3000000")),
                promoted(StoreKind::Redis, Some(8_000), Position::Redis { offset: 5 }),
            ],
            ..Default::default()
        };
        let r = reckon(&leased, &[StoreKind::Postgres, StoreKind::Redis]);
        assert_eq!(r.ms, Some(4_000), "the worse kind: {}", r.basis);
        assert!(r.basis.contains("self-fence"), "{}", r.basis);

        // Unfenced with no lease, or nothing read before promotion: no figure.
        let open = FailoverRecord {
            steps: vec![
                at(
                    Step::Fence,
                    10_000,
                    Evidence::Fence(FenceEvidence {
                        unfenced: vec![StoreKind::Postgres],
                        ..Default::default()
                    }),
                ),
                promoted(StoreKind::Postgres, Some(9_000), pg("0/3000000")),
            ],
            ..Default::default()
        };
        let r = reckon(&open, &[StoreKind::Postgres]);
        assert_eq!(r.ms, None);
        assert!(r.basis.contains("unbounded"), "{}", r.basis);
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
                at(Step::Fence, 0, Evidence::Fence(fence)),
                at(
                    Step::Promote(StoreKind::Postgres),
                    0,
                    Evidence::StoreAct(StoreActEvidence {
                        position: Some(pg("0/3000000")),
                        ..Default::default()
                    }),
                ),
                at(
                    Step::Promote(StoreKind::Redis),
                    0,
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
                0,
                Evidence::Positions([(StoreKind::Postgres, pg("0/3000100"))].into()),
            ),
        );
        assert_eq!(gap(&f, StoreKind::Postgres), Some(0));
        f.steps.remove(0);
        assert_eq!(gap(&f, StoreKind::Postgres), None, "no fence, no gap");
    }
}
