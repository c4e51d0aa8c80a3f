//! Starting a failover: the service and the region it leaves, the plan
//! against the stores' state, and the record, refused while another
//! failover of the service runs or when the plan refuses. The operator API
//! and failover drills start failovers the same way.

use crate::jobs::{Coordinator, Lead};
use crate::model::error::ActError;
use crate::model::failover::FailoverRecord;
use crate::model::topology::ServiceConfig;
use seawall_proto::v1::FailoverRequest;

/// Why a failover was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request names no service of the topology.
    #[error("{0}")]
    NoSuchService(String),
    /// The service cannot fail over now: another failover runs, the
    /// topology has no primary, or the plan refuses.
    #[error("{0}")]
    Refused(String),
    /// The store or the lead failed.
    #[error(transparent)]
    Act(#[from] ActError),
}

impl From<crate::model::error::StoreError> for StartError {
    fn from(e: crate::model::error::StoreError) -> StartError {
        StartError::Act(e.into())
    }
}

/// The service a request names and the region its primary is in now.
pub async fn target<'a>(
    coord: &'a Coordinator,
    req: &FailoverRequest,
) -> Result<(&'a ServiceConfig, String), StartError> {
    let service = coord
        .config
        .services
        .iter()
        .find(|s| s.name == req.service)
        .ok_or_else(|| {
            StartError::NoSuchService(format!(
                "no service {:?} in the topology ([[services]] in coordinator.toml)",
                req.service
            ))
        })?;
    let from = crate::replication::primaries::current(coord, service)
        .await?
        .ok_or_else(|| StartError::Refused("the topology has no primary region".into()))?;
    Ok((service, from))
}

/// A failover's or a failback's plan; a failback with no region named
/// returns to the region the topology names primary.
pub async fn assess(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    from: &str,
    req: &FailoverRequest,
) -> super::plan::Assessment {
    if !req.failback {
        return super::plan::assess(coord, lead, service, from, req, false).await;
    }
    let to = if req.to.is_empty() {
        coord
            .config
            .regions
            .iter()
            .find(|r| r.role == crate::model::topology::RegionRole::Primary)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    } else {
        req.to.clone()
    };
    super::plan::assess_failback(coord, lead, service, from, &to, req.standby_only).await
}

/// Starts the failover `req` asks for on behalf of `who`.
pub async fn start(
    coord: &Coordinator,
    lead: &Lead,
    req: &FailoverRequest,
    who: &str,
) -> Result<FailoverRecord, StartError> {
    let (service, from) = target(coord, req).await?;
    let running = super::stored::all(coord)
        .await?
        .into_iter()
        .find(|f| f.service == req.service && !f.is_final());
    if let Some(f) = running {
        return Err(StartError::Refused(format!(
            "failover {} of {} is still running: `seawall failover status {}`",
            f.id, f.service, f.id
        )));
    }
    let assessed = assess(coord, lead, service, &from, req).await;
    if !assessed.plan.refusals.is_empty() {
        super::metrics::outcome(&req.service, "refused");
        coord
            .audit(
                lead,
                who,
                format!(
                    "{} of {} to {} refused: {}",
                    if req.failback { "failback" } else { "failover" },
                    req.service,
                    assessed.plan.to,
                    assessed.plan.refusals.join("; ")
                ),
            )
            .await;
        return Err(StartError::Refused(format!(
            "{} refused: {}",
            if req.failback { "failback" } else { "failover" },
            assessed.plan.refusals.join("; ")
        )));
    }
    Ok(super::driver::create(coord, lead, req, who, &assessed, None).await?)
}
