//! PostgreSQL streaming replication: positions are WAL positions, a standby
//! is in recovery with its WAL receiver streaming, and its lag is the
//! primary's current position minus its replayed one.

use super::{Finding, Judgement, KindRules};
use crate::model::lsn::parse as lsn;
use seawall_proto::v1::{
    store_report::Replication, PostgresReplication, StoreReplication, StoreReport,
};

/// The PostgreSQL rules.
pub(super) struct Postgres;

fn state(rep: &StoreReport) -> Option<&PostgresReplication> {
    match rep.replication.as_ref()? {
        Replication::Postgres(p) => Some(p),
        _ => None,
    }
}

impl KindRules for Postgres {
    fn judge_primary(&self, rep: &StoreReport, standbys_expected: bool) -> Judgement {
        let Some(pg) = state(rep) else {
            return Judgement::missing("PostgreSQL");
        };
        let mut j = Judgement {
            position: pg.current_lsn.clone(),
            ..Judgement::default()
        };
        if pg.in_recovery {
            j.position = pg.replay_lsn.clone();
            j.findings.push(Finding::Broken("in recovery: the primary region's PostgreSQL is a standby (failed over elsewhere?)".into()));
        } else if pg.standbys.is_empty() && standbys_expected {
            j.findings
                .push(Finding::Note("no standby is streaming from it".into()));
        }
        j
    }

    fn judge_standby(&self, rep: &StoreReport, primary: Option<&StoreReport>) -> Judgement {
        let Some(pg) = state(rep) else {
            return Judgement::missing("PostgreSQL");
        };
        let mut j = Judgement {
            position: pg.replay_lsn.clone(),
            ..Judgement::default()
        };
        if !pg.in_recovery {
            j.position = pg.current_lsn.clone();
            j.findings.push(Finding::Broken("not in recovery: it accepts writes of its own (promoted?) and no longer follows the primary".into()));
            return j;
        }
        if pg.receiver != "streaming" {
            let r = if pg.receiver.is_empty() {
                "not running"
            } else {
                pg.receiver.as_str()
            };
            j.findings.push(Finding::Broken(format!(
                "WAL receiver {r}: the standby is not streaming from the primary"
            )));
        }
        if pg.replay_paused {
            j.findings.push(Finding::Note(
                "replay is paused (SELECT pg_wal_replay_resume() resumes it)".into(),
            ));
        }
        let replay = lsn(&pg.replay_lsn);
        let primary = primary.and_then(state).filter(|p| !p.in_recovery);
        let lag = match primary {
            Some(p) => lsn(&p.current_lsn).zip(replay).map(|(c, r)| (c - r).max(0)),
            None => {
                j.findings.push(Finding::Note(
                    "primary unreachable: only WAL this standby received is counted".into(),
                ));
                Some(pg.replay_lag_bytes.max(0))
            }
        };
        j.lag_bytes = lag;
        // The primary's replay_lag for this standby (its row is the one
        // whose replay position is nearest this standby's own).
        let row_lag = primary.and_then(|p| {
            p.standbys
                .iter()
                .min_by_key(|row| match (lsn(&row.replay_lsn), replay) {
                    (Some(a), Some(b)) => (a - b).abs(),
                    _ => i64::MAX,
                })
                .and_then(|row| row.replay_lag_secs)
        });
        j.lag_secs = match (lag, row_lag) {
            (_, Some(secs)) => Some(secs),
            (Some(0), None) => Some(0.0),
            _ => None,
        };
        j
    }

    fn acts_as_primary(&self, rep: &StoreReport) -> bool {
        state(rep).is_some_and(|p| !p.in_recovery)
    }

    /// Its last replayed commit: `now() - pg_last_xact_replay_timestamp()`
    /// on the standby, counted back from when it was asked (earlier than
    /// the standby's now, so never later than the commit).
    fn newest_replayed(&self, rep: &StoreReport, asked_ms: i64) -> Option<i64> {
        let pg = state(rep).filter(|p| p.in_recovery)?;
        let age = pg.last_replay_age_secs?;
        Some(asked_ms - (age * 1000.0).ceil() as i64)
    }

    fn trails(
        &self,
        standby: &StoreReport,
        primary: Option<&StoreReport>,
        to: &str,
        from: &str,
    ) -> Result<Option<i64>, String> {
        let Some(pg) = state(standby) else {
            return Ok(None);
        };
        if !pg.in_recovery {
            return Err(format!("{to}'s PostgreSQL is not in recovery: it does not follow {from} (promoted already? see `seawall failover status`)"));
        }
        Ok(match primary.and_then(state).filter(|p| !p.in_recovery) {
            Some(p) => lsn(&p.current_lsn)
                .zip(lsn(&pg.replay_lsn))
                .map(|(c, r)| (c - r).max(0)),
            None => None,
        })
    }

    fn rebuild_note(&self, answer: &StoreReport, to: &str, from: &str) -> String {
        match state(answer) {
            Some(p) if p.in_recovery => format!("{to}'s PostgreSQL is a standby already: it is pointed at {from} (restarted only if it follows another server)"),
            _ => format!("{to}'s PostgreSQL acts as a (fenced) primary: it is stopped, rewound onto {from}'s timeline and started as its standby"),
        }
    }

    fn promote_step(&self, store: &str) -> String {
        format!("pg_promote on {store}, waited for; the new timeline and LSN recorded")
    }

    fn rebuild_step(&self, to: &str, primary: &str, timeout: std::time::Duration) -> String {
        format!(
            "{to}'s server stopped, rewound with pg_rewind onto {primary} (a base backup of it when a rewind cannot work), its own configuration kept, started as a standby, waited for until it streams (at most {})",
            humantime::format_duration(timeout)
        )
    }

    fn keep_detail(&self, rep: &StoreReport, out: &mut StoreReplication) {
        out.postgres = state(rep).cloned();
    }
}
