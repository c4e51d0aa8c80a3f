//! Moving a service's DNS record in Route 53 to the new primary region, in
//! the style the user has:
//!
//! - a plain record whose value Seawall owns: one `ChangeResourceRecordSets`
//!   batch DELETEs the record exactly as Seawall expects to find it (the old
//!   region's value) and CREATEs the new one. Route 53 applies both or
//!   neither, so a record someone else changed makes the flip fail loudly
//!   instead of being overwritten. Then the change is waited for (INSYNC).
//! - PRIMARY/SECONDARY failover records with a health check on the PRIMARY
//!   (provisioned ahead): the records are not touched; the PRIMARY's health
//!   check is inverted, a data-plane change AWS recommends for a manual
//!   failover, so Route 53 answers the SECONDARY, and un-inverted to answer
//!   the PRIMARY again.

use crate::model::topology::{AliasTarget, DnsConfig, DnsValue};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet,
    ResourceRecordSetFailover, RrType,
};
use aws_sdk_route53::Client;
use std::time::{Duration, Instant};

/// Why Route 53 could not be read or changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DnsError {
    /// The client could not be made (a key file, the configuration):
    /// an operator must mend it.
    #[error("{0}")]
    Config(String),
    /// Route 53 did not answer or refused a call; another attempt may
    /// succeed (and a record or health check provisioned meanwhile counts).
    #[error("{0}")]
    Unavailable(String),
    /// The record holds a value Seawall did not write: waiting mends
    /// nothing, and Seawall never overwrites it.
    #[error("{0}")]
    ChangedByOthers(String),
}

impl DnsError {
    /// Whether another attempt, without an operator's change, can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, DnsError::Unavailable(_))
    }
}

/// What the flip did.
#[derive(Debug, Clone, PartialEq)]
pub struct Flipped {
    /// The record pointed at the new region already (a repeated step).
    pub already: bool,
    /// The change's id, when one was made.
    pub change_id: Option<String>,
    /// The value the record has now, in words.
    pub value: String,
}

/// A Route 53 client for `dns` (its endpoint, signing region and keys, or
/// the standard AWS chain).
pub async fn client(dns: &DnsConfig) -> Result<Client, DnsError> {
    // A Route 53 that does not answer must not hang the step: each call
    // gives up, and the step tries again with backoff.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(dns.aws_region.clone()))
        .timeout_config(timeouts);
    if let Some(endpoint) = &dns.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(file)) = (&dns.access_key_id, &dns.secret_access_key_file) {
        let secret = seawall_common::secret::read_secret_file(file, "Route 53 secret key")
            .map_err(|e| DnsError::Config(e.to_string()))?;
        let secret = String::from_utf8(secret)
            .map_err(|_| DnsError::Config(format!("{} is not UTF-8", file.display())))?;
        loader = loader.credentials_provider(aws_sdk_route53::config::Credentials::new(
            id.clone(),
            secret.trim().to_string(),
            None,
            None,
            "seawall-config",
        ));
    }
    Ok(Client::new(&loader.load().await))
}

fn record_type(dns: &DnsConfig) -> RrType {
    RrType::from(dns.record_type.as_str())
}

/// The name as Route 53 returns it (fully qualified, with the final dot).
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A failed Route 53 call of `action` on `resource`. A refused permission
/// names the IAM statement that allows it; it is still tried again, as
/// any failed call: the stores are promoted by then, and the step goes on
/// by itself once the policy is mended.
fn failed<E>(action: &str, resource: &str, what: String, e: E) -> DnsError
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + std::fmt::Display + std::fmt::Debug,
{
    let err = seawall_common::aws::call_failed(action, resource, &e);
    if err.kind() == seawall_common::ErrorKind::Denied {
        return DnsError::Unavailable(format!("{what}: {err}"));
    }
    DnsError::Unavailable(format!("{what}: {}", why(e)))
}

fn zone_arn(zone: &str) -> String {
    format!("arn:aws:route53:::hostedzone/{zone}")
}

fn why(e: impl std::fmt::Display + std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    // The SDK's Display is terse ("service error"); the Debug form carries
    // Route 53's own message.
    match text.find("message: Some(\"") {
        Some(i) => {
            let rest = &text[i + 15..];
            rest.split('"').next().unwrap_or(rest).to_string()
        }
        None => e.to_string(),
    }
}

/// The record sets of `dns`'s name and type (a plain record is one; a
/// failover pair is two).
async fn record_sets(client: &Client, dns: &DnsConfig) -> Result<Vec<ResourceRecordSet>, DnsError> {
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(&dns.zone_id)
        .start_record_name(fqdn(&dns.name))
        .start_record_type(record_type(dns))
        .max_items(10)
        .send()
        .await
        .map_err(|e| {
            failed(
                "route53:ListResourceRecordSets",
                &zone_arn(&dns.zone_id),
                format!("reading {} from Route 53 zone {}", dns.name, dns.zone_id),
                e,
            )
        })?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name() == fqdn(&dns.name) && r.r#type() == &record_type(dns))
        .cloned()
        .collect())
}

/// What a record set holds: its alias, or its values.
fn held(r: &ResourceRecordSet) -> Vec<DnsValue> {
    match r.alias_target() {
        Some(a) => vec![DnsValue::Alias(AliasTarget {
            alias: a.dns_name().to_string(),
            zone_id: a.hosted_zone_id().to_string(),
            evaluate_target_health: a.evaluate_target_health(),
        })],
        None => r
            .resource_records()
            .iter()
            .map(|v| DnsValue::Plain(v.value().to_string()))
            .collect(),
    }
}

fn record(dns: &DnsConfig, value: &DnsValue) -> Result<ResourceRecordSet, DnsError> {
    let set = ResourceRecordSet::builder()
        .name(fqdn(&dns.name))
        .r#type(record_type(dns));
    match value {
        DnsValue::Plain(v) => set
            .ttl(dns.ttl)
            .resource_records(ResourceRecord::builder().value(v).build().map_err(built)?),
        // An alias has no TTL of its own: Route 53 answers with the target's.
        DnsValue::Alias(a) => set.alias_target(
            aws_sdk_route53::types::AliasTarget::builder()
                .dns_name(&a.alias)
                .hosted_zone_id(&a.zone_id)
                .evaluate_target_health(a.evaluate_target_health)
                .build()
                .map_err(built)?,
        ),
    }
    .build()
    .map_err(built)
}

/// A request the SDK's builder refused (a field missing): a bug or a
/// configuration value Route 53 cannot take.
fn built(e: impl std::fmt::Display) -> DnsError {
    DnsError::Config(format!("a Route 53 request could not be built: {e}"))
}

/// Makes Route 53 answer `to`'s value instead of `from`'s, in the record
/// style `dns` names.
pub async fn flip(
    client: &Client,
    dns: &DnsConfig,
    from: &DnsValue,
    to: &DnsValue,
    wait: Duration,
) -> Result<Flipped, DnsError> {
    if dns.style == "failover" {
        return flip_failover_records(client, dns, to).await;
    }
    flip_plain(client, dns, from, to, wait).await
}

/// Failover records: inverts (or restores) the PRIMARY's health check so
/// Route 53 answers the record holding `to`.
async fn flip_failover_records(
    client: &Client,
    dns: &DnsConfig,
    to: &DnsValue,
) -> Result<Flipped, DnsError> {
    let sets = record_sets(client, dns).await?;
    let of = |which: ResourceRecordSetFailover| sets.iter().find(|r| r.failover() == Some(&which));
    let (Some(primary), Some(secondary)) = (
        of(ResourceRecordSetFailover::Primary),
        of(ResourceRecordSetFailover::Secondary),
    ) else {
        return Err(DnsError::Unavailable(format!(
            "{} {} has no PRIMARY and SECONDARY failover records: create them (docs/operations.md, Failover) or use style = \"plain\"",
            dns.record_type, dns.name
        )));
    };
    let holds = |r: &ResourceRecordSet| held(r).iter().any(|v| v.same(to));
    let invert = if holds(secondary) {
        true
    } else if holds(primary) {
        false
    } else {
        return Err(DnsError::ChangedByOthers(format!(
            "neither failover record of {} holds {to}: someone else changed them, so Seawall changes nothing",
            dns.name
        )));
    };
    let Some(check) = primary.health_check_id() else {
        return Err(DnsError::Unavailable(format!(
            "the PRIMARY record of {} has no health check: Seawall moves failover records through it, so attach one",
            dns.name
        )));
    };
    let now = client
        .get_health_check()
        .health_check_id(check)
        .send()
        .await
        .map_err(|e| {
            failed(
                "route53:GetHealthCheck",
                &format!("arn:aws:route53:::healthcheck/{check}"),
                format!("reading health check {check}"),
                e,
            )
        })?;
    let inverted = now
        .health_check()
        .and_then(|h| h.health_check_config())
        .and_then(|c| c.inverted())
        .unwrap_or(false);
    if inverted == invert {
        return Ok(Flipped {
            already: true,
            change_id: Some(format!("healthcheck/{check} inverted={invert}")),
            value: to.to_string(),
        });
    }
    client
        .update_health_check()
        .health_check_id(check)
        .inverted(invert)
        .send()
        .await
        .map_err(|e| {
            failed(
                "route53:UpdateHealthCheck",
                &format!("arn:aws:route53:::healthcheck/{check}"),
                format!("updating health check {check}"),
                e,
            )
        })?;
    Ok(Flipped {
        already: false,
        change_id: Some(format!("healthcheck/{check} inverted={invert}")),
        value: to.to_string(),
    })
}

/// Points the plain record from `from`'s value to `to`'s, failing when it
/// holds anything else, and waits for the change to be INSYNC (at most
/// `wait`).
async fn flip_plain(
    client: &Client,
    dns: &DnsConfig,
    from: &DnsValue,
    to: &DnsValue,
    wait: Duration,
) -> Result<Flipped, DnsError> {
    let sets = record_sets(client, dns).await?;
    let now = sets.first().map(held).unwrap_or_default();
    let only = |v: &DnsValue| sets.len() == 1 && now.len() == 1 && now[0].same(v);
    if only(to) {
        return Ok(Flipped {
            already: true,
            change_id: None,
            value: to.to_string(),
        });
    }
    if !only(from) {
        let now: Vec<String> = now.iter().map(|v| v.to_string()).collect();
        return Err(DnsError::ChangedByOthers(format!(
            "{} {} holds {now:?}, not the old primary's {from}: someone else changed it, so Seawall does not overwrite it; point it at {to} by hand or restore it and run the step again",
            dns.record_type,
            dns.name,
        )));
    }
    let batch = ChangeBatch::builder()
        .comment(format!("seawall failover: {from} -> {to}"))
        .changes(
            Change::builder()
                .action(ChangeAction::Delete)
                // Exactly as read (Route 53 deletes only an exact match): an
                // alias that matches `from` by name may differ in case or in
                // evaluate_target_health, and a change since the read still
                // makes the whole batch fail.
                .resource_record_set(sets[0].clone())
                .build()
                .map_err(built)?,
        )
        .changes(
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(record(dns, to)?)
                .build()
                .map_err(built)?,
        )
        .build()
        .map_err(built)?;
    let out = client
        .change_resource_record_sets()
        .hosted_zone_id(&dns.zone_id)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| {
            failed(
                "route53:ChangeResourceRecordSets",
                &zone_arn(&dns.zone_id),
                format!(
                    "Route 53 refused the change of {} (the record changed since it was read?)",
                    dns.name
                ),
                e,
            )
        })?;
    let id = out
        .change_info()
        .map(|c| c.id().to_string())
        .unwrap_or_default();
    let started = Instant::now();
    loop {
        let status = client.get_change().id(&id).send().await.map_err(|e| {
            failed(
                "route53:GetChange",
                "arn:aws:route53:::change/*",
                format!("reading change {id}"),
                e,
            )
        })?;
        if status.change_info().map(|c| c.status()) == Some(&ChangeStatus::Insync) {
            break;
        }
        if started.elapsed() > wait {
            return Err(DnsError::Unavailable(format!(
                "change {id} was not INSYNC within {wait:?}: Route 53 has it; the step waits again when resumed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Flipped {
        already: false,
        change_id: Some(id),
        value: to.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_route53::error::ErrorMetadata;
    use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;

    #[test]
    fn a_refused_permission_names_the_statement_and_is_tried_again() {
        let e = ChangeResourceRecordSetsError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform route53:ChangeResourceRecordSets")
                .build(),
        );
        let e = failed(
            "route53:ChangeResourceRecordSets",
            &zone_arn("Z1"),
            "changing db.shop.example.com".into(),
            e,
        );
        assert!(e.retryable());
        let text = e.to_string();
        assert!(
            text.contains(r#"{"Effect": "Allow", "Action": "route53:ChangeResourceRecordSets", "Resource": "arn:aws:route53:::hostedzone/Z1"}"#),
            "{text}"
        );
    }
}
