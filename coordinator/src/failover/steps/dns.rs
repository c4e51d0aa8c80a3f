//! Pointing the service's DNS record at the new primary region.

use super::{done, skipped, StepDone, StepError};
use crate::failover::dns::{self as route53, DnsError};
use crate::model::failover::{DnsEvidence, Evidence, FailoverRecord};
use crate::model::topology::ServiceConfig;
use std::time::Duration;

/// How long a plain record's change may take to be INSYNC.
const INSYNC_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn run(
    service: &ServiceConfig,
    f: &FailoverRecord,
    attempts: u32,
) -> Result<StepDone, StepError> {
    let Some(d) = &service.dns else {
        return Ok(skipped("no [services.dns] for this service"));
    };
    let (Some(from), Some(to)) = (d.values.get(&f.from), d.values.get(&f.to)) else {
        return Err(StepError::Fatal(format!(
            "[services.dns.values] lacks {} or {}",
            f.from, f.to
        )));
    };
    let failed = |e: DnsError| {
        // A record someone else changed is not mended by waiting.
        if e.retryable() {
            StepError::Transient(format!("Route 53 (attempt {attempts}): {e}"))
        } else {
            StepError::Fatal(e.to_string())
        }
    };
    let client = route53::client(d).await.map_err(failed)?;
    let flipped = route53::flip(&client, d, from, to, INSYNC_WAIT)
        .await
        .map_err(failed)?;
    let change = flipped.change_id.clone().unwrap_or_default();
    let how = if d.style == "failover" {
        format!("the failover records of {} answer {to} ({change})", d.name)
    } else {
        format!(
            "{} {} now {to} (was {from}), change INSYNC",
            d.record_type, d.name
        )
    };
    Ok(done(
        if flipped.already {
            format!("already: {how}")
        } else {
            how
        },
        Evidence::Dns(DnsEvidence {
            value: flipped.value,
            change_id: flipped.change_id,
        }),
    ))
}
