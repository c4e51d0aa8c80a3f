//! The RPO made exact when an old primary returns. At the failover the
//! old primary could not be read, so the record holds a bound. When its
//! agent reconnects and the store is demoted, the agent reads what the old
//! primary wrote after the new primary's timeline began (PostgreSQL:
//! `pg_rewind --dry-run` against the new primary for the parting, then
//! `pg_waldump` for the commits after it and their times) and the failover
//! record gets the measured figure beside its bound: from the newest
//! commit the new primary had (read before its promotion) to the newest
//! commit the old one wrote. Both times come from the old primary's clock,
//! so the figure needs no clock agreement; commit timestamps set its
//! resolution.

use super::stored::{all, load, save};
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, FailoverState, Step};
use crate::model::topology::{ServiceConfig, StoreKind};
use seawall_proto::v1::Divergence;

/// The measured loss of one store kind, in ms (None: not measurable), and
/// in words.
pub fn reckon(f: &FailoverRecord, kind: StoreKind, d: &Divergence) -> (Option<i64>, String) {
    let name = kind.name();
    if !d.error.is_empty() {
        return (
            None,
            format!(
                "{name}: not measured at rejoin ({}); the bound stands",
                d.error
            ),
        );
    }
    if d.commits == 0 {
        return (
            Some(0),
            format!(
                "{name}: 0 measured at rejoin (the old primary committed nothing the new one lacks{})",
                if d.parted_at.is_empty() {
                    String::new()
                } else {
                    format!("; {} bytes of WAL after the parting at {}", d.bytes, d.parted_at)
                }
            ),
        );
    }
    let newest_there = match f.step(Step::Promote(kind)).map(|s| &s.evidence) {
        Some(Evidence::StoreAct(a)) => a.newest_data.as_ref().map(|n| n.0),
        _ => None,
    };
    let wal = format!(
        "{} transaction(s), {} of WAL after the parting at {}",
        d.commits,
        kib(d.bytes),
        d.parted_at
    );
    match (d.last_commit_unix_ms, newest_there) {
        (Some(last), Some(newest)) => {
            let ms = (last - newest).max(0);
            (
                Some(ms),
                format!(
                    "{name}: {:.2} s measured at rejoin ({wal}; the old primary's last commit {}, the newest the new primary had {})",
                    ms as f64 / 1000.0,
                    crate::model::clock::iso(last),
                    crate::model::clock::iso(newest)
                ),
            )
        }
        _ => (
            None,
            format!("{name}: {wal}, but their times or the new primary's newest are unknown; the bound stands"),
        ),
    }
}

fn kib(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Records what the demotion of `region`'s `kind` store read in the
/// newest succeeded failover away from `region`, once per kind; returns
/// what was recorded.
pub async fn at_rejoin(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
    kind: StoreKind,
    d: &Divergence,
) -> Option<String> {
    let newest = all(coord)
        .await
        .ok()?
        .into_iter()
        .find(|f| f.service == service.name && f.from == region && f.is_final())?;
    if newest.state != FailoverState::Succeeded || newest.standby_only {
        return None;
    }
    // The record may change under us (another store's figure, a second
    // session of the same agent): read it again and retry, since this
    // figure is read once, at the demotion, and is lost if not written.
    for _ in 0..CONFLICT_RETRIES {
        let (mut f, rev) = load(coord, &newest.id).await.ok()??;
        if f.rpo_measured.contains(&format!("{}:", kind.name())) {
            return None;
        }
        let words = record(&mut f, kind, d);
        let event = format!("failover {}: {words}", f.id);
        match save(coord, lead, &f, rev, Some(event), Vec::new()).await {
            Ok(_) => return Some(words),
            Err(crate::model::error::ActError::Store(
                crate::model::error::StoreError::Conflict { .. },
            )) => continue,
            Err(e) => {
                tracing::warn!(error = %e, failover = %f.id, "the measured RPO was not recorded");
                return None;
            }
        }
    }
    tracing::warn!(failover = %newest.id, "the measured RPO was not recorded: the record kept changing");
    None
}

/// Attempts at writing the measured figure into a record that keeps changing.
const CONFLICT_RETRIES: usize = 5;

/// Puts what the demotion read into `f`; returns it in words.
fn record(f: &mut FailoverRecord, kind: StoreKind, d: &Divergence) -> String {
    let (ms, words) = reckon(f, kind, d);
    f.rpo_measured = if f.rpo_measured.is_empty() {
        words.clone()
    } else {
        format!("{}; {words}", f.rpo_measured)
    };
    if let Some(ms) = ms {
        f.rpo_measured_ms = Some(f.rpo_measured_ms.unwrap_or(0).max(ms));
        // A server frozen past its lease and resumed acknowledges what was
        // in flight before its agent fences it: later than the bound.
        // The record's RPO never stays below what was measured.
        if f.rpo_ms.is_some_and(|bound| bound < ms) {
            f.rpo_basis.push_str(&format!(
                "; raised to the {:.2} s measured at rejoin (the old primary acknowledged writes after the bound: resumed from a freeze before its agent fenced it)",
                ms as f64 / 1000.0
            ));
            f.rpo_ms = Some(ms);
            super::metrics::achieved(&f.service, f.rto_ms.unwrap_or(0), f.rpo_ms);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failover::{StepRecord, StoreActEvidence};

    #[test]
    fn the_measured_loss_runs_from_the_new_primarys_newest_commit_to_the_old_ones_last() {
        let f = FailoverRecord {
            steps: vec![StepRecord {
                evidence: Evidence::StoreAct(StoreActEvidence {
                    newest_data: Some((10_000, "its last replayed commit".into())),
                    ..Default::default()
                }),
                ..StepRecord::pending(Step::Promote(StoreKind::Postgres))
            }],
            ..Default::default()
        };
        let lost = Divergence {
            parted_at: "0/3000000".into(),
            end: "0/3064000".into(),
            bytes: 409_600,
            commits: 134,
            first_commit_unix_ms: Some(10_020),
            last_commit_unix_ms: Some(11_520),
            ..Default::default()
        };
        let (ms, words) = reckon(&f, StoreKind::Postgres, &lost);
        assert_eq!(ms, Some(1_520));
        assert!(words.contains("1.52 s measured at rejoin"), "{words}");
        assert!(words.contains("134 transaction(s), 400.0 KiB"), "{words}");
        let none = Divergence::default();
        assert_eq!(reckon(&f, StoreKind::Postgres, &none).0, Some(0));
        let unread = Divergence {
            error: "pg_rewind: target server must be shut down cleanly".into(),
            ..Default::default()
        };
        let (ms, words) = reckon(&f, StoreKind::Postgres, &unread);
        assert_eq!(ms, None);
        assert!(words.contains("the bound stands"), "{words}");
    }
}
