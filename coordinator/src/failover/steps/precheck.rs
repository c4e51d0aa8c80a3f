//! The lag gate. A failover's precheck passes before its record exists
//! (`failover run` is refused while the plan refuses); a failback's runs
//! after its rebuilds and waits for the rebuilt standbys to catch up.

use super::{done, StepDone, StepError};
use crate::failover::plan::Assessment;
use crate::jobs::{Coordinator, Lead};
use crate::model::failover::{Evidence, FailoverRecord, PrecheckEvidence};
use crate::model::topology::ServiceConfig;
use seawall_proto::v1::FailoverRequest;
use std::time::Duration;

/// What a passed precheck records.
pub fn evidence(assessed: &Assessment) -> Evidence {
    Evidence::Precheck(PrecheckEvidence {
        lag_bytes: assessed.expected_loss_bytes,
        expected_loss_ms: assessed.plan.expected_loss_ms,
        from_reachable: assessed.from_reachable,
    })
}

/// What a passed precheck says.
pub fn detail(assessed: &Assessment) -> String {
    if assessed.plan.notes.is_empty() {
        "passed".into()
    } else {
        format!("passed: {}", assessed.plan.notes.join("; "))
    }
}

/// A failback's precheck: the rebuilt standbys must follow and catch up
/// before the switchover to them begins.
pub(super) async fn run(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &FailoverRecord,
) -> Result<StepDone, StepError> {
    let req = FailoverRequest {
        service: service.name.clone(),
        to: f.to.clone(),
        switchover: true,
        allow_data_loss: f.allow_data_loss,
        ..Default::default()
    };
    let until = tokio::time::Instant::now() + service.catch_up_timeout;
    loop {
        let assessed =
            crate::failover::plan::assess(coord, lead, service, &f.from, &req, false).await;
        if assessed.plan.refusals.is_empty() {
            return Ok(done(detail(&assessed), evidence(&assessed)));
        }
        if tokio::time::Instant::now() >= until {
            return Err(StepError::Fatal(format!(
                "the rebuilt standbys in {} are not ready within {}: {}",
                f.to,
                humantime::format_duration(service.catch_up_timeout),
                assessed.plan.refusals.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
