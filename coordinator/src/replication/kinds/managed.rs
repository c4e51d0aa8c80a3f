//! What a cloud control plane says of a managed store (RDS, ElastiCache),
//! judged against the topology: the instance must be in a state that
//! serves, a standby must replicate the primary region's (an RDS read
//! replica of its instance; an ElastiCache secondary in its Global
//! Datastore), and where the store itself does not answer, the lag metric
//! still bounds how far a standby trails.

use super::Finding;
use seawall_proto::v1::ManagedStore;

/// States in which an instance serves, although not "available".
const SERVING: [&str; 9] = [
    "snapshotting",
    "backing-up",
    "modifying",
    "configuring-enhanced-monitoring",
    "configuring-iam-database-auth",
    "configuring-log-exports",
    "storage-optimization",
    "maintenance",
    "upgrading",
];

/// What `m` shows for a store in the primary region (`primary_side`) or a
/// standby whose primary's view is `primary` (when its agent sent one).
pub fn judge(
    m: &ManagedStore,
    primary_side: bool,
    primary: Option<&ManagedStore>,
    now_ms: i64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !m.error.is_empty() {
        let age = if m.read_unix_ms > 0 {
            format!(
                " (what follows is from {} s ago)",
                (now_ms - m.read_unix_ms).max(0) / 1000
            )
        } else {
            String::new()
        };
        out.push(Finding::Note(format!(
            "{} not read: {}{age}",
            m.service, m.error
        )));
    }
    if m.status.is_empty() {
        return out;
    }
    let name = &m.instance;
    if m.status != "available" {
        let words = format!("{} reports {name} {:?}", m.service, m.status);
        out.push(if SERVING.contains(&m.status.as_str()) {
            Finding::Note(words)
        } else {
            Finding::Broken(format!("{words}: it does not serve"))
        });
    }
    if m.service == "elasticache" || m.service == "aurora" {
        out.extend(judge_group(m, primary_side, primary));
        return out;
    }
    if primary_side {
        if !m.source.is_empty() {
            out.push(Finding::Note(format!(
                "{} still names {} as {name}'s source",
                m.service, m.source
            )));
        }
        return out;
    }
    if m.source.is_empty() {
        out.push(Finding::Broken(format!(
            "{} lists no source for {name}: it is not a read replica (promoted?)",
            m.service
        )));
    } else if let Some(p) = primary.filter(|p| !p.instance.is_empty()) {
        let expected = if p.arn.is_empty() {
            &p.instance
        } else {
            &p.arn
        };
        if !seawall_common::aws::names_instance(&m.source, expected) {
            out.push(Finding::Broken(format!(
                "{} says {name} replicates from {}, not from the primary region's {}",
                m.service, m.source, p.instance
            )));
        }
    }
    out
}

/// A member's place in its global group (an ElastiCache Global Datastore,
/// an Aurora global cluster): the primary region's member is the primary
/// there, a standby's a secondary of the same group.
fn judge_group(
    m: &ManagedStore,
    primary_side: bool,
    primary: Option<&ManagedStore>,
) -> Vec<Finding> {
    let name = &m.instance;
    let (service, global) = (&m.service, global_name(m));
    if primary_side {
        return if m.role == "secondary" {
            vec![Finding::Broken(format!(
                "{service}: {name} is a secondary of {global} {}: the primary region's member takes no writes",
                m.group
            ))]
        } else {
            Vec::new()
        };
    }
    if m.group.is_empty() {
        return vec![Finding::Broken(format!(
            "{service}: {name} is in no {global}: nothing replicates the primary region's member into it"
        ))];
    }
    if m.role != "secondary" {
        return vec![Finding::Broken(format!(
            "{service}: {name} is the {} of {global} {}, not a secondary",
            if m.role.is_empty() { "member" } else { &m.role },
            m.group
        ))];
    }
    match primary.filter(|p| !p.group.is_empty()) {
        Some(p) if p.group != m.group => vec![Finding::Broken(format!(
            "{service}: {name} is in {global} {}, not in the primary region's {} ({})",
            m.group, p.group, p.instance
        ))],
        _ => Vec::new(),
    }
}

/// What a service calls its global group.
fn global_name(m: &ManagedStore) -> &'static str {
    if m.service == "aurora" {
        "global cluster"
    } else {
        "Global Datastore"
    }
}

/// The lag metric a managed service publishes for a standby.
fn lag_metric(m: &ManagedStore) -> &'static str {
    match m.service.as_str() {
        "elasticache" => "GlobalDatastoreReplicationLag",
        "aurora" => "AuroraGlobalDBReplicationLag",
        _ => "ReplicaLag",
    }
}

/// How far a standby trails at most by its lag metric, at `now_ms`: the
/// newest period's Maximum plus the time since that period began (the lag
/// grows at most a second per second); None without a datapoint.
pub fn lag_bound(m: &ManagedStore, now_ms: i64) -> Option<(f64, String)> {
    let max = m.lag_max_secs?;
    let since = (now_ms - m.lag_period_start_unix_ms).max(0) as f64 / 1000.0;
    let bound = max + since;
    Some((
        bound,
        format!(
            "at most {bound:.0} s by the {} metric (Maximum {max:.1} s in the period from {}, plus {since:.0} s since)",
            lag_metric(m),
            crate::model::clock::iso(m.lag_period_start_unix_ms)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str, source: &str) -> ManagedStore {
        ManagedStore {
            service: "rds".into(),
            instance: "orders-east".into(),
            arn: "arn:aws:rds:us-east-1:1:db:orders-east".into(),
            status: status.into(),
            source: source.into(),
            read_unix_ms: 1_000,
            ..Default::default()
        }
    }

    fn primary() -> ManagedStore {
        ManagedStore {
            instance: "orders-west".into(),
            arn: "arn:aws:rds:us-west-2:1:db:orders-west".into(),
            ..view("available", "")
        }
    }

    fn broken(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter_map(|f| match f {
                Finding::Broken(w) => Some(w.as_str()),
                Finding::Note(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_replica_of_the_primary_region_s_instance_is_fine() {
        let m = view("available", "arn:aws:rds:us-west-2:1:db:orders-west");
        assert_eq!(judge(&m, false, Some(&primary()), 2_000), vec![]);
    }

    #[test]
    fn a_replica_of_another_instance_or_of_none_is_broken() {
        let other = view("available", "arn:aws:rds:us-west-2:1:db:billing");
        let b = judge(&other, false, Some(&primary()), 2_000);
        assert!(
            broken(&b)[0].contains("not from the primary region's orders-west"),
            "{b:?}"
        );
        let none = view("available", "");
        assert!(
            broken(&judge(&none, false, Some(&primary()), 2_000))[0].contains("not a read replica")
        );
    }

    #[test]
    fn a_stopped_instance_is_broken_and_a_backing_up_one_is_noted() {
        assert!(!broken(&judge(&view("stopped", ""), true, None, 2_000)).is_empty());
        let f = judge(&view("backing-up", ""), true, None, 2_000);
        assert!(broken(&f).is_empty() && f.len() == 1, "{f:?}");
    }

    #[test]
    fn the_metric_s_bound_counts_the_time_since_its_period_began() {
        let m = ManagedStore {
            lag_max_secs: Some(2.5),
            lag_period_start_unix_ms: 10_000,
            ..view("available", "orders-west")
        };
        let (bound, words) = lag_bound(&m, 70_000).unwrap();
        assert_eq!(bound, 62.5);
        assert!(words.contains("Maximum 2.5 s"), "{words}");
        assert_eq!(lag_bound(&view("available", "x"), 70_000), None);
    }

    fn group(role: &str, group: &str) -> ManagedStore {
        ManagedStore {
            service: "elasticache".into(),
            instance: "sessions-east".into(),
            status: "available".into(),
            role: role.into(),
            group: group.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_elasticache_standby_must_be_a_secondary_of_the_primarys_global_datastore() {
        let primary = ManagedStore {
            instance: "sessions-west".into(),
            ..group("primary", "ldgnf-sessions")
        };
        let says = |m: &ManagedStore, primary_side: bool| {
            judge(m, primary_side, Some(&primary), 0)
                .into_iter()
                .map(|f| match f {
                    Finding::Broken(w) => format!("broken: {w}"),
                    Finding::Note(w) => format!("note: {w}"),
                })
                .collect::<Vec<_>>()
        };
        assert!(says(&group("secondary", "ldgnf-sessions"), false).is_empty());
        assert!(says(&primary, true).is_empty());
        for (m, want) in [
            (group("", ""), "is in no Global Datastore"),
            (
                group("primary", "ldgnf-sessions"),
                "is the primary of Global Datastore",
            ),
            (
                group("secondary", "other"),
                "not in the primary region's ldgnf-sessions",
            ),
        ] {
            let said = says(&m, false).join("; ");
            assert!(
                said.starts_with("broken: ") && said.contains(want),
                "{said}"
            );
        }
        let said = says(&group("secondary", "ldgnf-sessions"), true).join("; ");
        assert!(said.contains("takes no writes"), "{said}");
        let lagging = ManagedStore {
            lag_max_secs: Some(1.5),
            lag_period_start_unix_ms: 10_000,
            ..group("secondary", "ldgnf-sessions")
        };
        let (bound, words) = lag_bound(&lagging, 12_000).unwrap();
        assert_eq!(bound, 3.5);
        assert!(words.contains("GlobalDatastoreReplicationLag"), "{words}");
    }

    #[test]
    fn an_aurora_standby_must_be_a_secondary_of_the_primarys_global_cluster() {
        let member = |role: &str, group: &str| ManagedStore {
            service: "aurora".into(),
            instance: "orders-east".into(),
            status: "available".into(),
            role: role.into(),
            group: group.into(),
            ..Default::default()
        };
        let primary = ManagedStore {
            instance: "orders-west".into(),
            ..member("primary", "orders-global")
        };
        let broken = |m: &ManagedStore, primary_side: bool| {
            judge(m, primary_side, Some(&primary), 0)
                .into_iter()
                .filter_map(|f| match f {
                    Finding::Broken(w) => Some(w),
                    Finding::Note(_) => None,
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert_eq!(broken(&member("secondary", "orders-global"), false), "");
        assert_eq!(broken(&primary, true), "");
        let said = broken(&member("", ""), false);
        assert!(said.contains("is in no global cluster"), "{said}");
        let said = broken(&member("secondary", "orders-global"), true);
        assert!(said.contains("takes no writes"), "{said}");
        let lagging = ManagedStore {
            lag_max_secs: Some(2.5),
            lag_period_start_unix_ms: 0,
            ..member("secondary", "orders-global")
        };
        let (_, words) = lag_bound(&lagging, 1_000).unwrap();
        assert!(words.contains("AuroraGlobalDBReplicationLag"), "{words}");
    }
}
