//! Starting a drill from a request: a scenario by name (its drill, region
//! and objectives), a restore drill of a service or source by hand, or a
//! failover drill by hand; the operator API and drill schedules both start
//! drills here.

use super::{failover, restore};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::scenarios::{self, default_region, ms, DrillKind};
use seawall_proto::v1::{Drill, DrillRequest};

/// Starts the drill `req` asks for, under `id` when given (a schedule's
/// slot: a drill of that id that exists already is returned as it is).
pub async fn launch(
    coord: &Coordinator,
    lead: &Lead,
    req: &DrillRequest,
    id: Option<String>,
    who: &str,
) -> Result<Drill, ActError> {
    let cfg = &coord.config;
    let scenario = if req.scenario.is_empty() {
        None
    } else {
        Some(scenarios::find(&cfg.scenarios, &req.scenario).map_err(ActError::Invalid)?)
    };
    let failover_by_hand = req.scenario.is_empty() && req.kind == "failover";
    if scenario.is_some_and(|s| s.drill == DrillKind::Failover) || failover_by_hand {
        let (name, service_name, region, objectives) = match scenario {
            Some(s) => {
                let t = s
                    .target(&cfg.regions, &cfg.services, &req.region)
                    .map_err(ActError::Invalid)?;
                (
                    s.name.clone(),
                    t.service.name.clone(),
                    t.region,
                    (t.rto_ms, t.rpo_ms),
                )
            }
            None => {
                let service = cfg
                    .services
                    .iter()
                    .find(|x| x.name == req.service)
                    .ok_or_else(|| {
                        ActError::Invalid(format!(
                            "no service {:?} in [[services]] to drill a failover of",
                            req.service
                        ))
                    })?;
                let region = if req.region.is_empty() {
                    default_region(DrillKind::Failover, &cfg.regions, service)
                } else {
                    Some(req.region.clone())
                };
                (
                    String::new(),
                    service.name.clone(),
                    region,
                    (ms(service.rto), ms(service.rpo)),
                )
            }
        };
        let to = region.ok_or_else(|| {
            ActError::Invalid(format!(
                "{service_name} has no stores in a standby region to fail over to: name one with --to"
            ))
        })?;
        let id = id.unwrap_or_else(|| format!("{service_name}-failover-{}", now_ms()));
        return failover::start(coord, lead, &name, &service_name, &to, objectives, id, who).await;
    }
    let resolved = restore::resolve(coord, req, scenario).await?;
    let id = id.unwrap_or_else(|| {
        format!(
            "{}-{}-{}",
            resolved.service,
            if resolved.managed { "pitr" } else { "restore" },
            now_ms()
        )
    });
    restore::start(coord, lead, &resolved, id, who).await
}
