//! What the coordinator knows of each live store kind, in one place per
//! kind: how an answer shows the store's role and position, how far a
//! standby trails, what breaks it, and what a failback plan says of it. The
//! replication checks, the failover plan and the rejoin check ask these
//! rules instead of matching on kinds themselves.

pub mod managed;
mod postgres;
mod redis;

use crate::model::topology::StoreKind;
use seawall_proto::v1::{StoreReplication, StoreReport};

/// One thing a store's answer shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// It cannot play its part: the store's verdict is broken.
    Broken(String),
    /// Worth knowing; the verdict stands.
    Note(String),
}

/// A store's answer judged against its role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    /// Where it stands, as the kind writes positions.
    pub position: String,
    /// Bytes a standby trails its primary by, when known.
    pub lag_bytes: Option<i64>,
    /// Seconds a standby trails by, when known.
    pub lag_secs: Option<f64>,
    /// What the answer shows, in order.
    pub findings: Vec<Finding>,
}

impl Judgement {
    /// An answer without the kind's state: the store is broken.
    pub fn missing(kind: &str) -> Judgement {
        Judgement {
            findings: vec![Finding::Broken(format!("no {kind} state in the answer"))],
            ..Judgement::default()
        }
    }
}

/// The rules of one store kind.
pub trait KindRules: Sync {
    /// Judges the answer of a store in the primary region;
    /// `standbys_expected` when the service has standbys of this kind.
    fn judge_primary(&self, rep: &StoreReport, standbys_expected: bool) -> Judgement;

    /// Judges a standby's answer against its primary's (when it answered).
    fn judge_standby(&self, rep: &StoreReport, primary: Option<&StoreReport>) -> Judgement;

    /// Whether the answer shows a store that takes writes of its own.
    fn acts_as_primary(&self, rep: &StoreReport) -> bool;

    /// For a standby asked at `asked_ms`: the old primary's time of the
    /// newest write it has replayed (unix ms), when the kind records one.
    fn newest_replayed(&self, _rep: &StoreReport, _asked_ms: i64) -> Option<i64> {
        None
    }

    /// For the failover plan: bytes the standby in `to` trails the primary
    /// in `from` by (`None`: unknown); the refusal when it does not follow.
    fn trails(
        &self,
        standby: &StoreReport,
        primary: Option<&StoreReport>,
        to: &str,
        from: &str,
    ) -> Result<Option<i64>, String>;

    /// For a failback plan: what rebuilding the store in `to` (its answer)
    /// as a standby of `from` will do.
    fn rebuild_note(&self, answer: &StoreReport, to: &str, from: &str) -> String;

    /// For the plan: what promoting the store at `store` does.
    fn promote_step(&self, store: &str) -> String;

    /// For a failback plan: what rebuilding `to`'s store as a standby of
    /// the primary at `primary` does, within `timeout`.
    fn rebuild_step(&self, to: &str, primary: &str, timeout: std::time::Duration) -> String;

    /// Copies the kind's replication detail into the stored report.
    fn keep_detail(&self, rep: &StoreReport, out: &mut StoreReplication);
}

/// The rules of `kind`.
pub fn rules(kind: StoreKind) -> &'static dyn KindRules {
    match kind {
        StoreKind::Postgres => &postgres::Postgres,
        StoreKind::Redis => &redis::Redis,
    }
}
