//! Failover records on the wire: the operator API and the CLI see the
//! names and the flat evidence map the records are stored with.

use crate::model::failover::FailoverRecord;
use seawall_proto::v1::{Failover, FailoverStep};

/// The wire form of a failover record, for the operator API and the CLI.
pub fn to_proto(f: &FailoverRecord) -> Failover {
    Failover {
        id: f.id.clone(),
        service: f.service.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        switchover: f.switchover,
        allow_data_loss: f.allow_data_loss,
        state: f.state.name().into(),
        started_unix_ms: f.started_unix_ms,
        finished_unix_ms: f.finished_unix_ms,
        requested_by: f.requested_by.clone(),
        abort_requested: f.abort_requested,
        error: f.error.clone(),
        steps: f
            .steps
            .iter()
            .map(|s| FailoverStep {
                name: s.step.name(),
                state: s.state.name().into(),
                started_unix_ms: s.started_unix_ms,
                ended_unix_ms: s.ended_unix_ms,
                detail: s.detail.clone(),
                evidence: s.evidence.to_map(s.step),
                attempts: s.attempts,
            })
            .collect(),
        expected_loss_bytes: f.expected_loss_bytes,
        expected_loss_ms: f.expected_loss_ms,
        rto_ms: f.rto_ms,
        rpo_ms: f.rpo_ms,
        rpo_basis: f.rpo_basis.clone(),
        failed_store: f.failed_store.clone(),
        rpo_measured_ms: f.rpo_measured_ms,
        rpo_measured: f.rpo_measured.clone(),
        lsn_gap_bytes: f.lsn_gap_bytes,
        offset_gap: f.offset_gap,
        epochs: f.epochs.clone(),
        automatic: f.automatic,
        detected_unix_ms: f.detected_unix_ms,
        failback: f.failback,
        standby_only: f.standby_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failover::{
        Evidence, FailoverState, FenceEvidence, Position, Step, StepRecord, StepState,
    };
    use crate::model::topology::StoreKind;

    #[test]
    fn the_wire_form_carries_the_stored_names_and_evidence() {
        let mut fence = FenceEvidence::default();
        fence
            .fenced
            .insert(StoreKind::Redis, Position::Redis { offset: 4242 });
        fence.unfenced.push(StoreKind::Postgres);
        let f = FailoverRecord {
            id: "app-1".into(),
            state: FailoverState::Succeeded,
            steps: vec![
                StepRecord {
                    state: StepState::Done,
                    evidence: Evidence::Fence(fence),
                    ..StepRecord::pending(Step::Fence)
                },
                StepRecord::pending(Step::Promote(StoreKind::Postgres)),
            ],
            ..Default::default()
        };
        let wire = to_proto(&f);
        assert_eq!(wire.state, "succeeded");
        assert_eq!(wire.steps[0].state, "done");
        assert_eq!(wire.steps[0].evidence["redis_fence_offset"], "4242");
        assert_eq!(wire.steps[0].evidence["postgres_fenced"], "false");
        assert_eq!(wire.steps[1].name, "promote postgres");
        assert_eq!(wire.steps[1].state, "pending");
    }
}
