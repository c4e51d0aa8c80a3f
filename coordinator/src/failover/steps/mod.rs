//! The failover's steps, one module each: what a step does, the typed
//! evidence it records, and whether its failure can be tried again. The
//! driver (`super::driver`) runs them in the order [`for_request`] gives.

mod catch_up;
mod demote;
mod dns;
mod fence;
mod post_check;
mod precheck;
mod promote;
mod rebuild;

use super::action::ActionError;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, Step};
use crate::model::topology::{ServiceConfig, StoreKind};
use seawall_proto::v1::FailoverRequest;

pub use fence::unfence;
pub use precheck::{detail as precheck_detail, evidence as precheck_evidence};

/// The steps of a failover as `req` asks for it, in order.
pub fn for_request(req: &FailoverRequest) -> Vec<Step> {
    // A failback's first steps: the old primary region's stores rebuilt as
    // standbys of the current primary (then a switchover to them).
    let rebuild = StoreKind::ALL.map(Step::Rebuild);
    // A switchover's last steps: the old primary, reachable by definition,
    // ends as a standby of the new one (as after a Patroni switchover).
    let follow = StoreKind::ALL.map(Step::Follow);
    if req.failback && req.standby_only {
        // Stops once the rebuilt standbys follow.
        return [rebuild.as_slice(), &[Step::Precheck]].concat();
    }
    let mut steps = Vec::new();
    if req.failback {
        steps.extend(rebuild);
    }
    steps.extend(Step::core());
    if req.switchover || req.failback {
        steps.extend(follow);
    }
    steps
}

/// Why a step did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// Waiting or trying again cannot mend it: the failover fails.
    #[error("{0}")]
    Fatal(String),
    /// Another attempt may succeed (an agent reconnecting, Route 53 back).
    #[error("{0}")]
    Transient(String),
}

impl StepError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StepError::Transient(_))
    }
}

impl From<ActionError> for StepError {
    fn from(e: ActionError) -> StepError {
        if e.retryable() {
            StepError::Transient(e.to_string())
        } else {
            StepError::Fatal(e.to_string())
        }
    }
}

/// What a finished step says.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDone {
    /// It had nothing to do.
    pub skipped: bool,
    /// What it did, in words.
    pub detail: String,
    /// What it found.
    pub evidence: Evidence,
}

fn done(detail: impl Into<String>, evidence: Evidence) -> StepDone {
    StepDone {
        skipped: false,
        detail: detail.into(),
        evidence,
    }
}

fn skipped(detail: impl Into<String>) -> StepDone {
    StepDone {
        skipped: true,
        detail: detail.into(),
        evidence: Evidence::None,
    }
}

/// Runs `step` of `f` (its `attempts`th attempt).
pub async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
    step: Step,
    attempts: u32,
) -> Result<StepDone, StepError> {
    match step {
        Step::Precheck => precheck::run(coord, lead, service, f).await,
        Step::Fence => fence::run(coord, lead, service, f).await,
        Step::CatchUp => catch_up::run(coord, lead, service, f).await,
        Step::Promote(kind) => promote::run(coord, lead, service, f, kind).await,
        Step::Dns => dns::run(service, f, attempts).await,
        Step::PostCheck => post_check::run(coord, lead, service, f).await,
        Step::Demote => demote::run(coord, lead, service, f).await,
        Step::Rebuild(kind) => rebuild::rebuild(coord, lead, service, f, kind).await,
        Step::Follow(kind) => rebuild::follow(coord, lead, service, f, kind).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failover_has_its_steps_in_order() {
        let req = |switchover, failback, standby_only| FailoverRequest {
            switchover,
            failback,
            standby_only,
            ..Default::default()
        };
        use StoreKind::{Postgres, Redis};
        let core = [
            Step::Precheck,
            Step::Fence,
            Step::CatchUp,
            Step::Promote(Postgres),
            Step::Promote(Redis),
            Step::Dns,
            Step::PostCheck,
            Step::Demote,
        ];
        assert_eq!(for_request(&req(false, false, false)), core);
        let switchover = for_request(&req(true, false, false));
        assert_eq!(&switchover[..8], core);
        assert_eq!(
            &switchover[8..],
            [Step::Follow(Postgres), Step::Follow(Redis)]
        );
        let back = for_request(&req(false, true, false));
        assert_eq!(&back[..2], [Step::Rebuild(Postgres), Step::Rebuild(Redis)]);
        assert_eq!(&back[2..], switchover.as_slice());
        assert_eq!(
            for_request(&req(false, true, true)),
            [
                Step::Rebuild(Postgres),
                Step::Rebuild(Redis),
                Step::Precheck
            ]
        );
    }
}
