//! Route 53 alias records to each region's load balancer, as the runbook
//! has them, moved by the DNS step's own code against moto's server
//! through the real SDK: the plain style's compare-and-swap batch, and the
//! failover style with the runbook's HTTPS_STR_MATCH health check. Moto
//! evaluates nothing: what is asserted is what Seawall wrote.

use super::route53::*;
use crate::fixtures::{S3Kind, S3Server};
use aws_sdk_route53::types::*;
use seawall_coordinator::failover::dns::{self, DnsError};
use seawall_coordinator::model::topology::{AliasTarget, DnsConfig, DnsValue};
use std::time::Duration;

/// The hosted zone id AWS gives the load balancers of a region (the
/// target's, not the record's zone).
const LB_ZONE: &str = "Z1H1FL5HABSF5";

/// The load balancer of `region`.
fn lb(region: &str) -> DnsValue {
    DnsValue::Alias(AliasTarget {
        alias: format!("dualstack.shop-{region}.{region}.elb.amazonaws.com."),
        zone_id: LB_ZONE.into(),
        evaluate_target_health: true,
    })
}

/// moto's server with the service's zone; the zone's id.
fn route53_with_zone(tag: &str) -> (S3Server, String) {
    let server = S3Server::start(S3Kind::Moto);
    let zone = rt().block_on(async {
        route53(&server.endpoint)
            .await
            .create_hosted_zone()
            .name(ZONE)
            .caller_reference(format!("seawall-alias-{tag}-{}", std::process::id()))
            .send()
            .await
            .unwrap()
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string()
    });
    (server, zone)
}

/// `[services.dns]` with alias values for both regions.
fn config(endpoint: &str, zone: &str, style: &str, secret: &std::path::Path) -> DnsConfig {
    DnsConfig {
        zone_id: zone.into(),
        style: style.into(),
        name: RECORD.into(),
        record_type: "A".into(),
        ttl: 30,
        values: [
            ("west".to_string(), lb("west")),
            ("east".to_string(), lb("east")),
        ]
        .into_iter()
        .collect(),
        endpoint: Some(endpoint.into()),
        aws_region: "us-east-1".into(),
        access_key_id: Some("testing".into()),
        secret_access_key_file: Some(secret.to_path_buf()),
    }
}

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let secret = dir.join("route53.secret");
    std::fs::write(&secret, "testing").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    secret
}

/// The record's sets as (failover role, alias target name, evaluate
/// target health, TTL), as Route 53 holds them.
fn alias_sets(endpoint: &str, zone: &str) -> Vec<(Option<String>, String, bool, Option<i64>)> {
    record_sets(endpoint, zone)
        .iter()
        .map(|r| {
            let a = r.alias_target().expect("an alias record");
            (
                r.failover().map(|f| f.as_str().to_string()),
                a.dns_name().trim_end_matches('.').to_string(),
                a.evaluate_target_health(),
                // moto lists an alias without a TTL as TTL 0.
                r.ttl().filter(|t| *t != 0),
            )
        })
        .collect()
}

fn alias_set(value: &DnsValue) -> aws_sdk_route53::types::builders::ResourceRecordSetBuilder {
    let DnsValue::Alias(a) = value else {
        unreachable!("the test's values are aliases")
    };
    ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::A)
        .alias_target(
            aws_sdk_route53::types::AliasTarget::builder()
                .dns_name(&a.alias)
                .hosted_zone_id(&a.zone_id)
                .evaluate_target_health(a.evaluate_target_health)
                .build()
                .unwrap(),
        )
}

fn upsert(endpoint: &str, zone: &str, sets: Vec<ResourceRecordSet>) {
    rt().block_on(async {
        let mut batch = ChangeBatch::builder();
        for set in sets {
            batch = batch.changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(set)
                    .build()
                    .unwrap(),
            );
        }
        route53(endpoint)
            .await
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch.build().unwrap())
            .send()
            .await
            .unwrap();
    });
}

/// `region`'s alias as a topology's `[services.dns.values]` entry.
pub(super) fn alias_table(region: &str) -> toml::Value {
    let DnsValue::Alias(a) = lb(region) else {
        unreachable!()
    };
    toml::Value::Table(toml::Table::from_iter([
        ("alias".to_string(), a.alias.into()),
        ("zone_id".to_string(), a.zone_id.into()),
        (
            "evaluate_target_health".to_string(),
            a.evaluate_target_health.into(),
        ),
    ]))
}

/// The plain record, an alias to `region`'s load balancer.
pub(super) fn set_alias(endpoint: &str, zone: &str, region: &str) {
    upsert(
        endpoint,
        zone,
        vec![alias_set(&lb(region)).build().unwrap()],
    );
}

/// The load balancer the plain alias record points at, by region.
pub(super) fn alias_region(endpoint: &str, zone: &str) -> Vec<String> {
    alias_sets(endpoint, zone)
        .into_iter()
        .filter_map(|(_, name, _, _)| {
            ["west", "east"]
                .into_iter()
                .find(|r| name == name_of(r))
                .map(str::to_string)
        })
        .collect()
}

/// The DNS step's own flip of `d`'s record from region `from`'s value to `to`'s.
fn flip(d: &DnsConfig, from: &str, to: &str) -> Result<dns::Flipped, DnsError> {
    rt().block_on(async {
        let c = dns::client(d).await.unwrap();
        dns::flip(
            &c,
            d,
            &d.values[from],
            &d.values[to],
            Duration::from_secs(10),
        )
        .await
    })
}

fn name_of(region: &str) -> String {
    format!("dualstack.shop-{region}.{region}.elb.amazonaws.com")
}

#[test]
fn a_plain_alias_record_moves_to_the_other_regions_load_balancer_and_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, zone) = route53_with_zone("plain");
    let d = config(&server.endpoint, &zone, "plain", &secret_file(tmp.path()));
    upsert(
        &server.endpoint,
        &zone,
        vec![alias_set(&lb("west")).build().unwrap()],
    );
    let flip = |from: &str, to: &str| flip(&d, from, to);
    // One batch: the exact old alias deleted, the new one created.
    let moved = flip("west", "east").unwrap();
    assert!(!moved.already && moved.change_id.is_some(), "{moved:?}");
    assert_eq!(
        alias_sets(&server.endpoint, &zone),
        vec![(None, name_of("east"), true, None)]
    );
    assert!(moved.value.contains(&name_of("east")), "{moved:?}");
    // Again: nothing to do.
    assert!(flip("west", "east").unwrap().already);
    // Someone points it at another load balancer: Seawall does not
    // overwrite it, and says so.
    let other = DnsValue::Alias(AliasTarget {
        alias: "dualstack.maintenance.us-east-1.elb.amazonaws.com.".into(),
        zone_id: LB_ZONE.into(),
        evaluate_target_health: false,
    });
    upsert(
        &server.endpoint,
        &zone,
        vec![alias_set(&other).build().unwrap()],
    );
    match flip("east", "west") {
        Err(DnsError::ChangedByOthers(why)) => {
            assert!(why.contains("maintenance"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        alias_sets(&server.endpoint, &zone),
        vec![(
            None,
            "dualstack.maintenance.us-east-1.elb.amazonaws.com".to_string(),
            false,
            None
        )]
    );
}

#[test]
fn failover_alias_records_move_through_the_runbooks_https_string_match_health_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, zone) = route53_with_zone("failover");
    let d = config(
        &server.endpoint,
        &zone,
        "failover",
        &secret_file(tmp.path()),
    );
    // As the runbook provisions them: an HTTPS_STR_MATCH check on the
    // primary's load balancer, PRIMARY and SECONDARY alias records.
    let check = rt().block_on(async {
        route53(&server.endpoint)
            .await
            .create_health_check()
            .caller_reference(format!("seawall-alias-hc-{}", std::process::id()))
            .health_check_config(
                HealthCheckConfig::builder()
                    .r#type(HealthCheckType::HttpsStrMatch)
                    .fully_qualified_domain_name("shop-west.example.com")
                    .resource_path("/health")
                    .search_string("\"status\":\"ok\"")
                    .port(443)
                    .request_interval(10)
                    .failure_threshold(3)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .health_check()
            .unwrap()
            .id()
            .to_string()
    });
    upsert(
        &server.endpoint,
        &zone,
        vec![
            alias_set(&lb("west"))
                .set_identifier("west")
                .failover(ResourceRecordSetFailover::Primary)
                .health_check_id(&check)
                .build()
                .unwrap(),
            alias_set(&lb("east"))
                .set_identifier("east")
                .failover(ResourceRecordSetFailover::Secondary)
                .build()
                .unwrap(),
        ],
    );
    let before = alias_sets(&server.endpoint, &zone);
    assert_eq!(before.len(), 2, "{before:?}");
    let flip = |from: &str, to: &str| flip(&d, from, to);
    let moved = flip("west", "east").unwrap();
    assert!(!moved.already, "{moved:?}");
    assert_eq!(health_checks_inverted(&server.endpoint), vec![true]);
    assert_eq!(alias_sets(&server.endpoint, &zone), before);
    // The check is still the runbook's, only inverted.
    let kind = rt().block_on(async {
        route53(&server.endpoint)
            .await
            .get_health_check()
            .health_check_id(&check)
            .send()
            .await
            .unwrap()
            .health_check()
            .unwrap()
            .health_check_config()
            .unwrap()
            .r#type()
            .clone()
    });
    assert_eq!(kind, HealthCheckType::HttpsStrMatch);
    // Failback: the inversion cleared, the PRIMARY answered again.
    assert!(!flip("east", "west").unwrap().already);
    assert_eq!(health_checks_inverted(&server.endpoint), vec![false]);
    assert!(flip("east", "west").unwrap().already);
}

#[test]
fn a_switchover_under_load_moves_the_alias_record_to_the_new_regions_load_balancer() {
    let w = super::world::World::start_with_alias_record();
    assert_eq!(alias_region(&w.route53.endpoint, &w.zone_id), vec!["west"]);
    let pg_load = super::load::PgLoad::start(&w.primary);
    crate::fleet_fixture::eventually(30, "the load generator to be acknowledged", || {
        (pg_load.acked() > 100).then_some(())
    });
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    assert_eq!(alias_region(&w.route53.endpoint, &w.zone_id), vec!["east"]);
    let dns = super::world::step(&f, "dns").unwrap();
    assert!(
        dns["detail"].as_str().unwrap().contains(&name_of("east")),
        "{f:#}"
    );
    // Nothing acknowledged in the west is missing in the east.
    let acked = pg_load.acked();
    drop(pg_load);
    assert_eq!(w.rows_present(acked), acked, "{f:#}");
}
