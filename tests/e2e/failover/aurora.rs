//! Aurora PostgreSQL clusters of a global cluster as checked stores,
//! against moto's RDS and CloudWatch through the real SDK, each paired with
//! a local PostgreSQL as its data plane. Moto keeps the global cluster's
//! members and which one writes, but has no switchover or failover of a
//! global cluster and publishes no metrics: the harness publishes the
//! `AuroraGlobalDBReplicationLag` datapoint Aurora would.

use super::world::*;
use crate::fleet_fixture::*;

/// The global cluster.
pub(super) const GLOBAL: &str = "shop-global";
/// The lag the harness publishes for the east's cluster (milliseconds, as
/// Aurora does).
const PUBLISHED_LAG_MS: f64 = 2500.0;

/// The global cluster in moto: the west's cluster its writer (created
/// first), the east's a secondary.
pub(super) fn create_clusters(endpoint: &str) {
    super::route53::rt().block_on(async {
        let west = super::rds::rds(endpoint, super::rds::WEST_DB.1).await;
        west.create_global_cluster()
            .global_cluster_identifier(GLOBAL)
            .engine("aurora-postgresql")
            .send()
            .await
            .unwrap();
        for (cluster, region) in [super::rds::WEST_DB, super::rds::EAST_DB] {
            super::rds::rds(endpoint, region)
                .await
                .create_db_cluster()
                .db_cluster_identifier(cluster)
                .engine("aurora-postgresql")
                .master_username("seawall")
                .master_user_password("not-used-by-the-test")
                .global_cluster_identifier(GLOBAL)
                .send()
                .await
                .unwrap();
        }
    });
}

/// Publishes an `AuroraGlobalDBReplicationLag` datapoint for the east's
/// cluster, as Aurora does every minute.
async fn publish_lag(endpoint: &str, ms: f64) {
    super::rds::publish_metric(
        endpoint,
        ("AWS/RDS", "AuroraGlobalDBReplicationLag"),
        ("DBClusterIdentifier", super::rds::EAST_DB.0),
        ms,
        aws_sdk_cloudwatch::types::StandardUnit::Milliseconds,
    )
    .await;
}

/// The `shop` service's postgres store in `region`, as the replication report
/// has it.
fn store(w: &World, region: &str) -> Option<serde_json::Value> {
    super::rds::reported_store(w, "shop", region, "postgres")
}

#[test]
fn an_aurora_secondary_is_checked_by_its_global_cluster_and_its_lag_metric_and_never_failed_over_blind(
) {
    let w = World::start_aurora();
    let endpoint = w.route53.endpoint.clone();
    super::route53::rt().block_on(publish_lag(&endpoint, PUBLISHED_LAG_MS));
    let seen = std::cell::RefCell::new(String::new());
    let shown = Shown(&seen);
    let east = eventually(30, "RDS's view of the east's cluster", || {
        let east = store(&w, "east")?;
        *seen.borrow_mut() = east.to_string();
        (east["managed"]["role"] == "secondary" && east["verdict"] == "ok").then_some(east)
    });
    let west = eventually(30, "RDS's view of the west's cluster", || {
        let west = store(&w, "west")?;
        *seen.borrow_mut() = west.to_string();
        (west["managed"]["role"] == "primary").then_some(west)
    });
    drop(shown);
    assert_eq!(east["managed"]["service"], "aurora", "{east:#}");
    assert_eq!(east["managed"]["group"], GLOBAL, "{east:#}");
    assert_eq!(
        west["managed"]["instance"],
        super::rds::WEST_DB.0,
        "{west:#}"
    );

    // The east's server stops answering: the metric (milliseconds, read as
    // seconds) still bounds its lag, never below what was published.
    {
        let _frozen = Frozen::freeze(Frozen::pids_of_postgres(&w.standby.root.join("data")));
        let seen = std::cell::RefCell::new(String::new());
        let shown = Shown(&seen);
        let east = eventually(30, "the east's lag from the metric", || {
            let east = store(&w, "east")?;
            *seen.borrow_mut() = east.to_string();
            east["reasons"]
                .to_string()
                .contains("by the AuroraGlobalDBReplicationLag metric")
                .then_some(east)
        });
        drop(shown);
        assert_eq!(east["verdict"], "broken", "{east:#}");
        assert!(
            east["lag_secs"].as_f64().unwrap() >= PUBLISHED_LAG_MS / 1000.0,
            "{east:#}"
        );
    }

    // Moving the writer needs SwitchoverGlobalCluster, which Seawall does
    // not call (and moto lacks): refused before anything is fenced.
    let (_, f, err) = w.failover(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    let said = format!("{err}\n{f}");
    assert!(
        said.contains("west's postgres is Aurora cluster shop-west")
            && said.contains("aws rds switchover-global-cluster"),
        "{said}"
    );
    assert_ne!(f["state"], "succeeded", "{f:#}");
    // The west still takes writes: nothing was fenced.
    w.primary
        .sql("postgres", "CREATE TABLE after_refusal (n int)");
}
