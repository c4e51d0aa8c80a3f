//! The objectives table as configuration: each `[[scenarios]]` row names a
//! service, the drill that exercises it (a restore from one region's
//! repository, or a failover to another region and back) and its RTO and
//! RPO. The runbook's five rows have their objectives built in; any other
//! scenario states its own.

use crate::model::topology::{RegionConfig, RegionRole, ServiceConfig, StoreKind};
pub use seawall_common::point::Point;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// The runbook's objectives table: scenario, RTO, RPO.
pub const RUNBOOK: [(&str, Duration, Duration); 5] = [
    (
        "application crash",
        Duration::from_secs(5 * 60),
        Duration::ZERO,
    ),
    (
        "database failure",
        Duration::from_secs(15 * 60),
        Duration::from_secs(5 * 60),
    ),
    (
        "zone failure",
        Duration::from_secs(30 * 60),
        Duration::from_secs(15 * 60),
    ),
    (
        "region failure",
        Duration::from_secs(2 * 3600),
        Duration::from_secs(3600),
    ),
    (
        "complete outage",
        Duration::from_secs(4 * 3600),
        Duration::from_secs(4 * 3600),
    ),
];

/// What a scenario's drill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// Every source of the service restored from one region's repository
    /// into scratch instances, checked, torn down.
    Restore,
    /// A switchover to another region, post-checks, and failback.
    Failover,
    /// The region's RDS for PostgreSQL instances restored from their own
    /// automated backups (`RestoreDBInstanceToPointInTime`) into scratch
    /// instances, checked, deleted.
    #[serde(rename = "rds-pitr")]
    RdsPitr,
}

impl DrillKind {
    /// Its name in configuration and in the journal.
    pub fn name(self) -> &'static str {
        match self {
            DrillKind::Restore => "restore",
            DrillKind::Failover => "failover",
            DrillKind::RdsPitr => "rds-pitr",
        }
    }
}

/// One row of the objectives table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Its name ("database failure"); `seawall drill run NAME` runs it.
    pub name: String,
    /// The service it is about.
    pub service: String,
    /// The drill that exercises it.
    pub drill: DrillKind,
    /// Restore: the region whose repository is restored from (default: a
    /// cold region holding one, else the primary region's). Failover: the
    /// region switched over to (default: the service's standby region).
    /// RDS PITR: the region whose instances are restored (default: where
    /// the service's primary is now).
    #[serde(default)]
    pub region: Option<String>,
    /// The objectives (default: the runbook's row of the same name).
    #[serde(
        default,
        deserialize_with = "seawall_common::duration::serde_text::option::deserialize"
    )]
    pub rto: Option<Duration>,
    /// ... and the data loss allowed.
    #[serde(
        default,
        deserialize_with = "seawall_common::duration::serde_text::option::deserialize"
    )]
    pub rpo: Option<Duration>,
    /// Restore and RDS PITR: which recovery point (default "latest").
    #[serde(default)]
    pub point: Option<String>,
    /// Restore: read every row and page too (PostgreSQL: exact row counts
    /// of every table and pg_amcheck), at the cost of the drill's time.
    #[serde(default)]
    pub deep: bool,
    /// Run the drill on this schedule (cron, 5 fields or 6 with seconds),
    /// each slot exactly once like a backup schedule's.
    #[serde(default)]
    pub cron: Option<String>,
    /// IANA time zone `cron` is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

impl ScenarioConfig {
    /// Its RTO and RPO: as written, else the runbook's.
    pub fn objectives(&self) -> Option<(Duration, Duration)> {
        let row = RUNBOOK
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(self.name.trim()));
        Some((
            self.rto.or(row.map(|r| r.1))?,
            self.rpo.or(row.map(|r| r.2))?,
        ))
    }

    /// The recovery point a restore drill takes.
    pub fn point(&self) -> Result<Point, String> {
        self.point
            .as_deref()
            .map(Point::parse)
            .unwrap_or(Ok(Point::Latest))
    }

    /// The region the drill works in, as written or by default.
    pub fn region(&self, regions: &[RegionConfig], service: &ServiceConfig) -> Option<String> {
        match &self.region {
            Some(r) => Some(r.clone()),
            None => default_region(self.drill, regions, service),
        }
    }
}

/// What a run of a scenario works on.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Its service.
    pub service: &'a ServiceConfig,
    /// The region asked for, else the scenario's own (None: none found).
    pub region: Option<String>,
    /// Its objectives, in ms.
    pub rto_ms: i64,
    /// ...
    pub rpo_ms: i64,
}

/// A duration in whole milliseconds, as the journal keeps objectives.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The scenario called `name` (in any case), or a sentence naming those
/// there are.
pub fn find<'a>(scenarios: &'a [ScenarioConfig], name: &str) -> Result<&'a ScenarioConfig, String> {
    scenarios
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            format!(
                "no scenario {name:?} in [[scenarios]] (there are: {})",
                scenarios
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

impl ScenarioConfig {
    /// Its service, region (`region` when not empty) and objectives.
    pub fn target<'a>(
        &self,
        regions: &[RegionConfig],
        services: &'a [ServiceConfig],
        region: &str,
    ) -> Result<Target<'a>, String> {
        let service = services
            .iter()
            .find(|x| x.name == self.service)
            .ok_or_else(|| format!("no service {:?} in [[services]]", self.service))?;
        let (rto, rpo) = self.objectives().ok_or_else(|| {
            format!(
                "scenario {:?} has no objectives: set rto and rpo",
                self.name
            )
        })?;
        Ok(Target {
            service,
            region: if region.is_empty() {
                self.region(regions, service)
            } else {
                Some(region.to_string())
            },
            rto_ms: ms(rto),
            rpo_ms: ms(rpo),
        })
    }
}

/// The region a drill of `kind` works in when none is named: a restore
/// reads a cold region's repository (else the primary's), a failover goes
/// to the standby region.
pub fn default_region(
    kind: DrillKind,
    regions: &[RegionConfig],
    service: &ServiceConfig,
) -> Option<String> {
    {
        let role_of = |name: &str| regions.iter().find(|r| r.name == name).map(|r| r.role);
        match kind {
            DrillKind::Restore => {
                let held: Vec<&str> = service
                    .repositories
                    .iter()
                    .map(|r| r.region.as_str())
                    .collect();
                held.iter()
                    .find(|r| role_of(r) == Some(RegionRole::Cold))
                    .or_else(|| {
                        held.iter()
                            .find(|r| role_of(r) == Some(RegionRole::Primary))
                    })
                    .or(held.first())
                    .map(|r| r.to_string())
            }
            DrillKind::Failover => service
                .stores
                .iter()
                .map(|s| s.region.as_str())
                .find(|r| role_of(r) == Some(RegionRole::Standby))
                .map(str::to_string),
            DrillKind::RdsPitr => regions
                .iter()
                .find(|r| r.role == RegionRole::Primary)
                .map(|r| r.name.clone()),
        }
    }
}

/// What is wrong with the scenarios, one line per problem.
pub fn problems(
    regions: &[RegionConfig],
    services: &[ServiceConfig],
    scenarios: &[ScenarioConfig],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let runbook: Vec<&str> = RUNBOOK.iter().map(|r| r.0).collect();
    for s in scenarios {
        let of = |what: String| format!("[[scenarios]] {:?}: {what}", s.name);
        if !names.insert(s.name.to_lowercase()) {
            out.push(of("listed twice (names must differ)".into()));
        }
        if s.objectives().is_none() {
            out.push(of(format!(
                "set rto and rpo (only the runbook's rows have them built in: {})",
                runbook.join(", ")
            )));
        }
        if let Err(e) = s.point() {
            out.push(of(e));
        }
        if let Some(cron) = &s.cron {
            if let Err(e) = crate::model::cron::parse_cron(cron) {
                out.push(of(e));
            }
        }
        if let Some(tz) = &s.timezone {
            if let Err(e) = crate::model::cron::parse_tz(tz) {
                out.push(of(e));
            }
            if s.cron.is_none() {
                out.push(of("timezone goes with cron".into()));
            }
        }
        let Some(service) = services.iter().find(|x| x.name == s.service) else {
            out.push(of(format!("no service {:?} in [[services]]", s.service)));
            continue;
        };
        let Some(region) = s.region(regions, service) else {
            out.push(of(match s.drill {
                DrillKind::Restore => format!(
                    "{} has no [[services.repositories]] to restore from: add one, or name region",
                    service.name
                ),
                DrillKind::Failover => format!(
                    "{} has no stores in a standby region to fail over to: add them, or name region",
                    service.name
                ),
                DrillKind::RdsPitr => "no region has role = \"primary\": name region".to_string(),
            }));
            continue;
        };
        let Some(role) = regions.iter().find(|r| r.name == region).map(|r| r.role) else {
            out.push(of(format!("region {region:?} is not in [[regions]]")));
            continue;
        };
        match s.drill {
            DrillKind::Restore => {
                if !service.repositories.iter().any(|r| r.region == region) {
                    out.push(of(format!(
                        "{} has no repository in {region} ([[services.repositories]]) to restore from",
                        service.name
                    )));
                }
            }
            DrillKind::RdsPitr => {
                if !service
                    .stores
                    .iter()
                    .any(|x| x.region == region && x.kind == StoreKind::Postgres)
                {
                    out.push(of(format!(
                        "{} has no postgres store in {region} whose RDS instance could be restored: add it to [[services.stores]] (its agent's source of kind rds-postgres), or name region",
                        service.name
                    )));
                }
            }
            DrillKind::Failover => {
                if role == RegionRole::Cold {
                    out.push(of(format!(
                        "{region} is cold: a failover drill needs live standbys there; restore there instead (drill = \"restore\")"
                    )));
                }
                if s.point.is_some() {
                    out.push(of(
                        "point goes with drill = \"restore\" or \"rds-pitr\" only".into(),
                    ));
                }
                let primary: BTreeSet<_> = service
                    .stores
                    .iter()
                    .filter(|x| {
                        regions
                            .iter()
                            .any(|r| r.name == x.region && r.role == RegionRole::Primary)
                    })
                    .map(|x| x.kind)
                    .collect();
                for kind in primary {
                    if !service
                        .stores
                        .iter()
                        .any(|x| x.region == region && x.kind == kind)
                    {
                        out.push(of(format!(
                            "{region} has no {} store of {}: nothing to fail over to",
                            kind.name(),
                            service.name
                        )));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> (Vec<RegionConfig>, Vec<ServiceConfig>) {
        let text = r#"
[[regions]]
name = "west"
role = "primary"
[[regions]]
name = "east"
role = "standby"
[[regions]]
name = "eu"
role = "cold"
[[services]]
name = "shop"
[[services.stores]]
region = "west"
kind = "postgres"
agent = "w1"
source = "db"
[[services.stores]]
region = "east"
kind = "postgres"
agent = "e1"
source = "db"
[[services.repositories]]
region = "west"
agent = "w1"
[[services.repositories]]
region = "eu"
agent = "u1"
"#;
        #[derive(Deserialize)]
        struct T {
            regions: Vec<RegionConfig>,
            services: Vec<ServiceConfig>,
        }
        let t: T = toml::from_str(text).unwrap();
        (t.regions, t.services)
    }

    fn scenarios(text: &str) -> Vec<ScenarioConfig> {
        #[derive(Deserialize)]
        struct T {
            scenarios: Vec<ScenarioConfig>,
        }
        toml::from_str::<T>(text).unwrap().scenarios
    }

    #[test]
    fn the_runbooks_rows_bring_their_objectives_and_regions_default_sensibly() {
        let (regions, services) = topology();
        let s = scenarios(
            r#"
[[scenarios]]
name = "Database failure"
service = "shop"
drill = "failover"
[[scenarios]]
name = "complete outage"
service = "shop"
drill = "restore"
point = "random-within 7d"
[[scenarios]]
name = "nightly"
service = "shop"
drill = "restore"
region = "west"
rto = "10m"
rpo = "1h"
"#,
        );
        assert_eq!(problems(&regions, &services, &s), Vec::<String>::new());
        assert_eq!(
            s[0].objectives(),
            Some((Duration::from_secs(900), Duration::from_secs(300)))
        );
        assert_eq!(s[0].region(&regions, &services[0]).as_deref(), Some("east"));
        // A restore drill reads the cold region's repository by default:
        // the complete outage leaves nothing else.
        assert_eq!(s[1].region(&regions, &services[0]).as_deref(), Some("eu"));
        assert_eq!(
            s[1].point(),
            Ok(Point::RandomWithin(Duration::from_secs(7 * 86400)))
        );
        assert_eq!(
            s[2].objectives(),
            Some((Duration::from_secs(600), Duration::from_secs(3600)))
        );

        // Found in any case; a region asked for wins over the scenario's own.
        let found = find(&s, "COMPLETE outage").unwrap();
        let t = found.target(&regions, &services, "").unwrap();
        assert_eq!((t.region.as_deref(), t.rto_ms), (Some("eu"), 4 * 3_600_000));
        let t = found.target(&regions, &services, "west").unwrap();
        assert_eq!(t.region.as_deref(), Some("west"));
        assert_eq!(
            find(&s, "outage").unwrap_err(),
            "no scenario \"outage\" in [[scenarios]] (there are: Database failure, complete outage, nightly)"
        );
    }

    #[test]
    fn a_scenario_that_cannot_be_drilled_is_refused_with_the_fix() {
        let (regions, services) = topology();
        let s = scenarios(
            r#"
[[scenarios]]
name = "nightly"
service = "shop"
drill = "restore"
[[scenarios]]
name = "region failure"
service = "cart"
drill = "failover"
[[scenarios]]
name = "zone failure"
service = "shop"
drill = "failover"
region = "eu"
point = "latest"
[[scenarios]]
name = "application crash"
service = "shop"
drill = "restore"
region = "east"
point = "yesterday"
[[scenarios]]
name = "NIGHTLY"
service = "shop"
drill = "restore"
rto = "1h"
rpo = "1h"
"#,
        );
        let p = problems(&regions, &services, &s).join("\n");
        for want in [
            "\"nightly\": set rto and rpo (only the runbook's rows",
            "\"region failure\": no service \"cart\"",
            "\"zone failure\": eu is cold: a failover drill needs live standbys",
            "\"zone failure\": point goes with drill = \"restore\" or \"rds-pitr\" only",
            "\"zone failure\": eu has no postgres store of shop",
            "\"application crash\": point \"yesterday\" is not latest",
            "\"application crash\": shop has no repository in east",
            "\"NIGHTLY\": listed twice",
        ] {
            assert!(p.contains(want), "{want:?} missing from:\n{p}");
        }
    }

    #[test]
    fn an_rds_point_in_time_drill_needs_a_postgres_store_in_its_region() {
        let (regions, services) = topology();
        let s = scenarios(
            r#"
[[scenarios]]
name = "database failure"
service = "shop"
drill = "rds-pitr"
point = "random-within 1d"
[[scenarios]]
name = "zone failure"
service = "shop"
drill = "rds-pitr"
region = "eu"
"#,
        );
        assert_eq!(s[0].drill, DrillKind::RdsPitr);
        assert_eq!(s[0].drill.name(), "rds-pitr");
        // The configured primary by default (the coordinator takes the
        // primary of the moment when it starts one).
        assert_eq!(s[0].region(&regions, &services[0]).as_deref(), Some("west"));
        let p = problems(&regions, &services, &s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("\"zone failure\": shop has no postgres store in eu whose RDS instance could be restored"),
            "{p:?}"
        );
    }
}
