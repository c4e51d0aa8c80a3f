//! The leader's drill worker: moves every running drill on (its jobs'
//! ends into its steps), settles the ones that are done with their
//! verdict, and exports the figures. A new leader takes up the drills its
//! predecessor left, since everything it needs is in the journal and the
//! job records.

use super::{failover, journal, restore};
use crate::jobs::{Coordinator, Lead};
use std::sync::Arc;
use std::time::Duration;

/// Starts the `drills` worker of `lead`'s term.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    // Drills are of services: without any there is nothing to drill.
    if coord.config.services.is_empty() {
        return;
    }
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    let seeded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::fleet::workers::spawn_worker(&tree, &board, "drills", move || {
        let (coord, lead, seeded) = (coord.clone(), lead.clone(), seeded.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            if !seeded.swap(true, std::sync::atomic::Ordering::Relaxed) {
                seed_metrics(&coord).await;
            }
            pass(&coord, &lead).await.map_err(|e| e.to_string())?;
            tokio::select! {
                _ = coord.drill_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            Ok(crate::fleet::workers::Next::After(Duration::ZERO))
        }
    });
}

/// The gauges of each scenario's newest finished drill, as the journal
/// has them (the counters start again with each leader).
async fn seed_metrics(coord: &Coordinator) {
    let Ok(all) = journal::all(coord).await else {
        return;
    };
    // Oldest first: each scenario's gauges end at its newest drill, and its
    // last success at its newest drill that met the objectives.
    for d in all.iter().rev().filter(|d| d.state == journal::FINISHED) {
        super::metrics::drill_seen(d);
    }
}

/// One pass over the running drills.
async fn pass(coord: &Coordinator, lead: &Lead) -> Result<(), crate::model::error::ActError> {
    // Each running drill as listed, with its revision: a report that lands
    // in between makes the save conflict, and the next pass sees both.
    for (mut d, rev) in journal::all_with_revisions(coord).await? {
        if d.state != journal::RUNNING {
            continue;
        }
        let span = tracing::info_span!("drill", id = %d.id, kind = %d.kind);
        let changed = tracing::Instrument::instrument(
            async {
                match d.kind.as_str() {
                    "restore" | "rds-pitr" => restore::advance(coord, lead, &mut d).await,
                    "failover" => failover::advance(coord, lead, &mut d).await,
                    _ => Ok(false),
                }
            },
            span,
        )
        .await?;
        if !changed {
            continue;
        }
        let event = (d.state == journal::FINISHED).then(|| {
            format!(
                "drill {} of {} finished: {}{}",
                d.id,
                d.service,
                d.verdict,
                if d.reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", d.reasons.join("; "))
                }
            )
        });
        match journal::save(coord, lead, &d, rev, event).await {
            Ok(_) => {
                if d.state == journal::FINISHED {
                    super::metrics::drill_finished(&d);
                    tracing::info!(drill = %d.id, verdict = %d.verdict, rto_ms = ?d.rto_ms, rpo_ms = ?d.rpo_ms, "drill finished");
                }
            }
            // A report landed in between: the next pass sees both.
            Err(crate::model::error::ActError::Store(
                crate::model::error::StoreError::Conflict { .. },
            )) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
