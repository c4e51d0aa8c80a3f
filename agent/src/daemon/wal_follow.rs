//! Continuous WAL mirroring: for each `[[mirrors]]` entry with `wal_every`,
//! the agent copies the WAL segments its repository lacks from the other
//! region's, that often, between the scheduled mirror jobs. The archive is
//! what point-in-time recovery replays, so this is what keeps the standby
//! region's repository within seconds of the primary's for PostgreSQL.
//! It acts on the agent's own configuration only, into its own repository.

use super::config::MirrorConfig;
use crate::engine::mirror::mirror_wal;
use seawall_common::storage::Storage;
use std::sync::Arc;

/// Segments copied at once.
const CONCURRENCY: usize = 4;

/// Starts one follower per mirror entry that asks for it, in `tasks`
/// (they stop when it is cancelled).
pub fn start(config: &super::config::AgentConfig, tasks: &seawall_common::tasks::Tree) {
    for m in &config.mirrors {
        let Some(every) = m.wal_every else { continue };
        let (m, own) = (m.clone(), config.repository.spec());
        let span = tracing::info_span!("wal_follow", mirror = %m.name);
        tasks.spawn(tracing::Instrument::instrument(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut storages: Option<(Arc<dyn Storage>, Arc<dyn Storage>)> = None;
            let mut waiting_said = false;
            loop {
                tick.tick().await;
                if storages.is_none() {
                    match (m.spec().storage().await, own.storage().await) {
                        (Ok(from), Ok(to)) => storages = Some((from, to)),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(mirror = %m.name, error = %e, "WAL mirror cannot open its repositories");
                            continue;
                        }
                    }
                }
                let Some((from, to)) = storages.clone() else {
                    continue;
                };
                follow_once(&m, from, to, &mut waiting_said).await;
            }
        }, span));
    }
}

async fn follow_once(
    m: &MirrorConfig,
    from: Arc<dyn Storage>,
    to: Arc<dyn Storage>,
    waiting_said: &mut bool,
) {
    let labels = [("mirror", m.name.clone())];
    match mirror_wal(from, to, CONCURRENCY).await {
        Ok(Some(copied)) => {
            if copied > 0 {
                tracing::info!(mirror = %m.name, copied, "WAL mirrored");
            }
            metrics::counter!(crate::daemon::metrics::WAL_MIRRORED_TOTAL, &labels)
                .increment(copied);
            metrics::gauge!(crate::daemon::metrics::WAL_MIRROR_LAST_SUCCESS, &labels)
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        Ok(None) => {
            if !*waiting_said {
                *waiting_said = true;
                tracing::info!(mirror = %m.name, "this region's repository does not exist yet: WAL is mirrored once the first mirror job has created it");
            }
        }
        Err(e) => {
            metrics::counter!(crate::daemon::metrics::WAL_MIRROR_ERRORS_TOTAL, &labels)
                .increment(1);
            tracing::warn!(mirror = %m.name, error = %e, "WAL mirror run failed; trying again next interval");
        }
    }
}
