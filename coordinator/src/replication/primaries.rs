//! Which region each service's primary is in now. The configuration names
//! the first one; every completed failover records the new one in the store
//! (`primaries/<service>`), and everything that needs roles (the
//! replication checks, the next failover) reads it from there.

use crate::jobs::Coordinator;
use crate::model::error::StoreError;
use crate::model::topology::{RegionConfig, RegionRole, ServiceConfig};
use std::collections::HashMap;

/// Store prefix.
pub const PREFIX: &str = "primaries/";

/// The key of `service`'s primary region.
pub fn key(service: &str) -> String {
    format!("{PREFIX}{service}")
}

/// Every service's primary region, where a failover has moved it.
pub async fn moved(coord: &Coordinator) -> Result<HashMap<String, String>, StoreError> {
    Ok(coord
        .store
        .list(PREFIX)
        .await?
        .into_iter()
        .filter_map(|e| {
            let service = e.key.strip_prefix(PREFIX)?.to_string();
            Some((service, String::from_utf8(e.value).ok()?))
        })
        .collect())
}

/// The configured primary region.
pub fn configured(regions: &[RegionConfig]) -> Option<String> {
    regions
        .iter()
        .find(|r| r.role == RegionRole::Primary)
        .map(|r| r.name.clone())
}

/// `service`'s primary region now.
pub async fn current(
    coord: &Coordinator,
    service: &ServiceConfig,
) -> Result<Option<String>, StoreError> {
    if let Some(e) = coord.store.get(&key(&service.name)).await? {
        if let Ok(region) = String::from_utf8(e.value) {
            return Ok(Some(region));
        }
    }
    Ok(configured(&coord.config.regions))
}

/// The regions with their roles as they stand for a service whose primary
/// is in `primary`: that region primary, the configured primary a standby,
/// the rest as configured.
pub fn effective(regions: &[RegionConfig], primary: Option<&str>) -> Vec<RegionConfig> {
    let Some(primary) = primary else {
        return regions.to_vec();
    };
    regions
        .iter()
        .map(|r| RegionConfig {
            name: r.name.clone(),
            role: if r.name == primary {
                RegionRole::Primary
            } else if r.role == RegionRole::Primary {
                RegionRole::Standby
            } else {
                r.role
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_over_service_sees_the_roles_swapped() {
        let regions = vec![
            RegionConfig {
                name: "west".into(),
                role: RegionRole::Primary,
            },
            RegionConfig {
                name: "east".into(),
                role: RegionRole::Standby,
            },
            RegionConfig {
                name: "eu".into(),
                role: RegionRole::Cold,
            },
        ];
        let after = effective(&regions, Some("east"));
        assert_eq!(after[0].role, RegionRole::Standby);
        assert_eq!(after[1].role, RegionRole::Primary);
        assert_eq!(after[2].role, RegionRole::Cold);
        assert_eq!(effective(&regions, None)[0].role, RegionRole::Primary);
    }
}
