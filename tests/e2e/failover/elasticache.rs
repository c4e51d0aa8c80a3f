//! ElastiCache replication groups as checked stores, against moto's
//! ElastiCache and CloudWatch through the real SDK, each paired with a
//! local redis-server as its data plane. Moto keeps a group's place in a
//! Global Datastore but runs no Global Datastore API and publishes no
//! metrics: the harness publishes the `GlobalDatastoreReplicationLag`
//! datapoint ElastiCache would.

use super::world::*;
use crate::fleet_fixture::*;

/// Each region's replication group and AWS region.
pub(super) const WEST_GROUP: (&str, &str) = ("sessions-west", "us-west-2");
pub(super) const EAST_GROUP: (&str, &str) = ("sessions-east", "us-east-1");
/// The Global Datastore the east's group is a secondary of.
const GLOBAL: &str = "ldgnf-sessions";
/// The lag the harness publishes for the east's primary node.
const PUBLISHED_LAG_SECS: f64 = 2.5;

async fn elasticache(endpoint: &str, region: &str) -> aws_sdk_elasticache::Client {
    let creds =
        aws_sdk_elasticache::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_elasticache::config::Builder::new()
        .behavior_version(aws_sdk_elasticache::config::BehaviorVersion::latest())
        .region(aws_sdk_elasticache::config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_elasticache::Client::from_conf(conf)
}

/// The runbook's pair in moto: the west's group, and the east's as a
/// secondary of the Global Datastore.
pub(super) fn create_groups(endpoint: &str) {
    super::route53::rt().block_on(async {
        for (group, region, global) in [
            (WEST_GROUP.0, WEST_GROUP.1, None),
            (EAST_GROUP.0, EAST_GROUP.1, Some(GLOBAL)),
        ] {
            elasticache(endpoint, region)
                .await
                .create_replication_group()
                .replication_group_id(group)
                .replication_group_description("the shop's sessions")
                .engine("redis")
                .cache_node_type("cache.r6g.large")
                .num_cache_clusters(2)
                .set_global_replication_group_id(global.map(str::to_string))
                .send()
                .await
                .unwrap();
        }
    });
}

/// Publishes a `GlobalDatastoreReplicationLag` datapoint for the east's
/// primary node, as ElastiCache does every minute.
async fn publish_lag(endpoint: &str, secs: f64) {
    super::rds::publish_metric(
        endpoint,
        ("AWS/ElastiCache", "GlobalDatastoreReplicationLag"),
        ("CacheClusterId", &format!("{}-0001-001", EAST_GROUP.0)),
        secs,
        aws_sdk_cloudwatch::types::StandardUnit::Seconds,
    )
    .await;
}

/// The `sessions` service's redis store in `region`, as the replication report
/// has it.
fn store(w: &World, region: &str) -> Option<serde_json::Value> {
    super::rds::reported_store(w, "sessions", region, "redis")
}

#[test]
fn an_elasticache_secondary_is_checked_by_its_global_datastore_and_its_lag_metric_and_never_failed_over_blind(
) {
    let w = World::start_elasticache();
    let endpoint = w.route53.endpoint.clone();
    super::route53::rt().block_on(publish_lag(&endpoint, PUBLISHED_LAG_SECS));
    // ElastiCache's view beside Redis's: the east's group is a secondary of
    // the Global Datastore, and both serve.
    let seen = std::cell::RefCell::new(String::new());
    let shown = Shown(&seen);
    let east = eventually(30, "ElastiCache's view of the east's group", || {
        let east = store(&w, "east")?;
        *seen.borrow_mut() = east.to_string();
        (east["managed"]["role"] == "secondary" && east["verdict"] == "ok").then_some(east)
    });
    drop(shown);
    assert_eq!(east["managed"]["service"], "elasticache", "{east:#}");
    assert_eq!(east["managed"]["instance"], EAST_GROUP.0, "{east:#}");
    assert_eq!(east["managed"]["group"], GLOBAL, "{east:#}");
    assert_eq!(east["managed"]["status"], "available", "{east:#}");
    assert_eq!(east["verdict"], "ok", "{east:#}");
    let west = store(&w, "west").unwrap();
    assert_eq!(west["managed"]["instance"], WEST_GROUP.0, "{west:#}");

    // The east's endpoint stops answering: the metric still bounds its
    // lag, never below what was published.
    {
        let _frozen = Frozen::freeze(vec![w.replica.pid()]);
        let seen = std::cell::RefCell::new(String::new());
        let shown = Shown(&seen);
        let east = eventually(30, "the east's lag from the metric", || {
            let east = store(&w, "east")?;
            *seen.borrow_mut() = east.to_string();
            east["reasons"]
                .to_string()
                .contains("by the GlobalDatastoreReplicationLag metric")
                .then_some(east)
        });
        drop(shown);
        assert_eq!(east["verdict"], "broken", "{east:#}");
        assert!(
            east["lag_secs"].as_f64().unwrap() >= PUBLISHED_LAG_SECS,
            "{east:#}"
        );
    }

    // A failover would need FailoverGlobalReplicationGroup, which Seawall
    // does not call: the plan is refused before anything is fenced, naming
    // the command.
    let (_, f, err) = w.failover(&["run", "sessions", "--to", "east", "--switchover", "--wait"]);
    let said = format!("{err}\n{f}");
    eprintln!("the failover of an ElastiCache store: {said}");
    assert!(said.contains("failover-global-replication-group"), "{said}");
    assert_ne!(f["state"], "succeeded", "{f:#}");
}
