//! Route 53 as a user provisions it ahead, through moto's server: the
//! service's record, or PRIMARY/SECONDARY failover records with a health
//! check.

pub(super) const ZONE: &str = "shop.example.com.";
pub(super) const RECORD: &str = "db.shop.example.com.";
pub(super) const WEST: &str = "db-west.example.com";
pub(super) const EAST: &str = "db-east.example.com";

pub(super) async fn route53(endpoint: &str) -> aws_sdk_route53::Client {
    let creds = aws_sdk_route53::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_route53::config::Builder::new()
        .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
        .region(aws_sdk_route53::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_route53::Client::from_conf(conf)
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The service record's sets as Route 53 holds them.
pub(super) fn record_sets(
    endpoint: &str,
    zone: &str,
) -> Vec<aws_sdk_route53::types::ResourceRecordSet> {
    rt().block_on(async {
        let out = route53(endpoint)
            .await
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap();
        out.resource_record_sets()
            .iter()
            .filter(|r| r.name() == RECORD)
            .cloned()
            .collect()
    })
}

/// The record's values as Route 53 holds them.
pub(super) fn record_values(endpoint: &str, zone: &str) -> Vec<String> {
    record_sets(endpoint, zone)
        .iter()
        .flat_map(|r| r.resource_records().iter().map(|v| v.value().to_string()))
        .collect()
}

/// The PRIMARY record (west, with a health check) and the SECONDARY
/// (east), as a user provisions them ahead.
pub(super) fn create_failover_records(endpoint: &str, zone: &str) {
    use aws_sdk_route53::types::*;
    rt().block_on(async {
        let c = route53(endpoint).await;
        let check = c
            .create_health_check()
            .caller_reference(format!("seawall-hc-{}", std::process::id()))
            .health_check_config(
                HealthCheckConfig::builder()
                    .r#type(HealthCheckType::Tcp)
                    .ip_address("192.0.2.10")
                    .port(5432)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let check_id = check.health_check().unwrap().id().to_string();
        let record = |value: &str, role: ResourceRecordSetFailover, id: &str| {
            let mut b = ResourceRecordSet::builder()
                .name(RECORD)
                .r#type(RrType::Cname)
                .ttl(30)
                .set_identifier(id)
                .failover(role)
                .resource_records(ResourceRecord::builder().value(value).build().unwrap());
            if id == "west" {
                b = b.health_check_id(&check_id);
            }
            b.build().unwrap()
        };
        c.change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(record(
                                WEST,
                                ResourceRecordSetFailover::Primary,
                                "west",
                            ))
                            .build()
                            .unwrap(),
                    )
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(record(
                                EAST,
                                ResourceRecordSetFailover::Secondary,
                                "east",
                            ))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}

/// Whether each health check of the zone's records is inverted.
pub(super) fn health_checks_inverted(endpoint: &str) -> Vec<bool> {
    rt().block_on(async {
        let c = route53(endpoint).await;
        let out = c.list_health_checks().send().await.unwrap();
        out.health_checks()
            .iter()
            .map(|h| {
                h.health_check_config()
                    .and_then(|c| c.inverted())
                    .unwrap_or(false)
            })
            .collect()
    })
}

/// Sets the record to `value` (UPSERT), as an operator by hand would.
pub(super) fn set_record(endpoint: &str, zone: &str, value: &str) {
    use aws_sdk_route53::types::*;
    rt().block_on(async {
        route53(endpoint)
            .await
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Upsert)
                            .resource_record_set(
                                ResourceRecordSet::builder()
                                    .name(RECORD)
                                    .r#type(RrType::Cname)
                                    .ttl(30)
                                    .resource_records(
                                        ResourceRecord::builder().value(value).build().unwrap(),
                                    )
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}
