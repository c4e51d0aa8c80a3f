//! Starting a failover: the service and the region it leaves, the plan
//! against the stores' state, and the record, refused while another
//! failover of the service runs or when the plan refuses. The operator API
//! and failover drills start failovers the same way.

use crate::core::{Coordinator, Lead};
use crate::topology::ServiceConfig;
use seawall_proto::v1::{Failover, FailoverRequest};
use tonic::Status;

/// The service a request names and the region its primary is in now.
pub async fn target<'a>(
    coord: &'a Coordinator,
    req: &FailoverRequest,
) -> Result<(&'a ServiceConfig, String), Status> {
    let service = coord
        .config
        .services
        .iter()
        .find(|s| s.name == req.service)
        .ok_or_else(|| {
            Status::not_found(format!(
                "no service {:?} in the topology ([[services]] in coordinator.toml)",
                req.service
            ))
        })?;
    let from = super::primaries::current(coord, service)
        .await?
        .ok_or_else(|| Status::failed_precondition("the topology has no primary region"))?;
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
            .find(|r| r.role == crate::topology::RegionRole::Primary)
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
) -> Result<Failover, Status> {
    let (service, from) = target(coord, req).await?;
    let running = super::steps::all(coord)
        .await?
        .into_iter()
        .find(|f| f.service == req.service && !super::steps::is_final(f));
    if let Some(f) = running {
        return Err(Status::failed_precondition(format!(
            "failover {} of {} is still running: `seawall failover status {}`",
            f.id, f.service, f.id
        )));
    }
    let assessed = assess(coord, lead, service, &from, req).await;
    if !assessed.plan.refusals.is_empty() {
        metrics::counter!("seawall_failovers_total", "service" => req.service.clone(), "outcome" => "refused").increment(1);
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
        return Err(Status::failed_precondition(format!(
            "{} refused: {}",
            if req.failback { "failback" } else { "failover" },
            assessed.plan.refusals.join("; ")
        )));
    }
    Ok(super::steps::create(coord, lead, req, who, &assessed, None).await?)
}
