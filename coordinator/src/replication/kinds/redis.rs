//! Redis replication: positions are replication offsets, a replica follows
//! its master over a link that must be up, and its lag is the master's
//! offset minus its own.

use super::{Finding, Judgement, KindRules};
use seawall_proto::v1::{
    store_report::Replication, RedisReplication, StoreReplication, StoreReport,
};

/// The Redis rules.
pub(super) struct Redis;

fn state(rep: &StoreReport) -> Option<&RedisReplication> {
    match rep.replication.as_ref()? {
        Replication::Redis(r) => Some(r),
        _ => None,
    }
}

impl KindRules for Redis {
    fn judge_primary(&self, rep: &StoreReport, _standbys_expected: bool) -> Judgement {
        let Some(r) = state(rep) else {
            return Judgement::missing("Redis");
        };
        let mut j = Judgement {
            position: r.offset.to_string(),
            ..Judgement::default()
        };
        if !r.master {
            j.findings.push(Finding::Broken(format!(
                "a replica of {}: the primary region's Redis is not a master",
                r.master_address
            )));
        }
        j
    }

    fn judge_standby(&self, rep: &StoreReport, primary: Option<&StoreReport>) -> Judgement {
        let Some(r) = state(rep) else {
            return Judgement::missing("Redis");
        };
        let mut j = Judgement {
            position: r.offset.to_string(),
            ..Judgement::default()
        };
        if r.master {
            j.findings.push(Finding::Broken(
                "a master, not a replica: it no longer follows the primary".into(),
            ));
            return j;
        }
        if r.link != "up" {
            j.findings.push(Finding::Broken(format!(
                "link to its master {} is {} (last offset {})",
                r.master_address, r.link, r.offset
            )));
        }
        let master = primary.and_then(state).filter(|m| m.master);
        j.lag_bytes = master.map(|m| (m.offset - r.offset).max(0));
        j.lag_secs = match j.lag_bytes {
            Some(0) => Some(0.0),
            _ => None,
        };
        if master.is_none() {
            j.findings.push(Finding::Note(
                "master unreachable: lag in bytes unknown".into(),
            ));
        }
        j
    }

    fn acts_as_primary(&self, rep: &StoreReport) -> bool {
        state(rep).is_some_and(|r| r.master)
    }

    fn trails(
        &self,
        standby: &StoreReport,
        primary: Option<&StoreReport>,
        to: &str,
        from: &str,
    ) -> Result<Option<i64>, String> {
        let Some(r) = state(standby) else {
            return Ok(None);
        };
        if r.master {
            return Err(format!(
                "{to}'s Redis is a master: it does not follow {from}"
            ));
        }
        Ok(primary
            .and_then(state)
            .filter(|m| m.master)
            .map(|m| (m.offset - r.offset).max(0)))
    }

    fn rebuild_note(&self, _answer: &StoreReport, to: &str, from: &str) -> String {
        format!("{to}'s Redis becomes a replica of {from}'s (a full sync)")
    }

    fn promote_step(&self, store: &str) -> String {
        format!("REPLICAOF NO ONE on {store}; the offset recorded")
    }

    fn rebuild_step(&self, _to: &str, primary: &str, _timeout: std::time::Duration) -> String {
        format!("REPLICAOF {primary}, waited for until the link is up")
    }

    fn keep_detail(&self, rep: &StoreReport, out: &mut StoreReplication) {
        out.redis = state(rep).cloned();
    }
}
