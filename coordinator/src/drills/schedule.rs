//! Scheduled drills: each `[[scenarios]]` entry with a `cron` is a schedule
//! the jobs layer's scheduler keeps (`drill:<scenario>`) and calls back
//! here when a slot is due. A slot's drill has a fixed id, so a new leader
//! seeing the slot again finds the drill and makes nothing twice.

use crate::jobs::scheduler::{SlotFiring, Slotted};
use crate::jobs::{Coordinator, Lead};
use crate::model::config::CoordinatorConfig;
use crate::model::error::ActError;
use std::sync::Arc;

/// The id of a scheduled drill: the scenario's name as a slug and the slot.
pub fn drill_id(scenario: &str, slot_ms: i64) -> String {
    let slug: String = scenario
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{slug}-{slot_ms}")
}

/// The drill schedules of `config`'s scenarios, for the scheduler.
pub fn slots(config: &CoordinatorConfig) -> Vec<Slotted> {
    config
        .scenarios
        .iter()
        .filter_map(|s| {
            Some(Slotted {
                name: format!("drill:{}", s.name),
                cron: s.cron.clone()?,
                timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
                fire: Arc::new(ScenarioDrill {
                    scenario: s.name.clone(),
                }),
            })
        })
        .collect()
}

/// A scenario's drill, launched when its slot is due.
struct ScenarioDrill {
    scenario: String,
}

#[async_trait::async_trait]
impl SlotFiring for ScenarioDrill {
    async fn fire(
        &self,
        coord: &Coordinator,
        lead: &Lead,
        slot_ms: i64,
    ) -> Result<(String, bool), ActError> {
        let req = seawall_proto::v1::DrillRequest {
            scenario: self.scenario.clone(),
            ..Default::default()
        };
        let id = drill_id(&self.scenario, slot_ms);
        // A drill of the same id is returned as it is.
        let d = super::launch::launch(coord, lead, &req, Some(id.clone()), "scheduler").await?;
        Ok((id, d.started_unix_ms >= slot_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_drills_id_is_its_scenario_and_slot() {
        assert_eq!(
            drill_id("Complete outage", 1_796_000_000_000),
            "complete-outage-1796000000000"
        );
    }
}
