//! Making an RDS instance a standby of the current primary: RDS makes a
//! read replica only as a new instance, so the old one is renamed first
//! (`<id>-diverged-<time>`, kept with whatever it wrote after the parting:
//! nothing acknowledged is deleted) and the replica is created under the
//! old name, which keeps its endpoint and so the source's DSN. Each part
//! is skipped when found done, so a repeated step goes on where the last
//! one stopped.

use crate::cloud::rds::api::Rds;
use crate::cloud::rds::config::RdsInstance;
use crate::engine::postgres::conn;
use crate::stores::{Done, POLL};
use seawall_common::aws::names_instance;
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// How often the wait asks RDS (its API is rate-limited).
const API_POLL: Duration = Duration::from_secs(1);
/// The longest DB instance identifier RDS takes.
const MAX_ID: usize = 63;

/// What a rebuild needs.
pub struct RebuildRds {
    /// The control plane of the instance's region.
    pub rds: Rds,
    /// The instance.
    pub instance: RdsInstance,
    /// Its DSN (the replica keeps the endpoint's name).
    pub dsn: String,
    /// The primary's instance ARN.
    pub primary: String,
    /// How long it may take.
    pub deadline: Duration,
}

/// The identifier the old instance is kept under.
pub fn kept_name(id: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let suffix = format!("-diverged-{}", now.format("%Y%m%d%H%M%S"));
    let room = MAX_ID - suffix.len();
    let stem: String = id.chars().take(room).collect();
    format!("{}{suffix}", stem.trim_end_matches('-'))
}

/// Whether the server at `dsn` is in recovery (None: it does not answer).
async fn in_recovery(dsn: &str) -> Option<bool> {
    let client = conn::connect(dsn).await.ok()?;
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .ok()
}

/// Rebuilds the instance as a read replica of the primary.
pub async fn rebuild(r: &RebuildRds) -> Result<Done> {
    let started = Instant::now();
    let id = r.instance.instance.as_str();
    let me = r.rds.describe_id(id).await?;
    let listed = me
        .as_ref()
        .and_then(|m| m.source.as_deref())
        .is_some_and(|s| names_instance(s, &r.primary));
    let recovering = in_recovery(&r.dsn).await;
    // A source alone does not make a replica: a promoted one may list its
    // old source for a while, and then its server takes writes. A listed
    // replica whose server does not answer yet is one being made.
    let replica_of_primary = listed && recovering != Some(false);
    if replica_of_primary && recovering == Some(true) {
        return Ok(Done {
            already: true,
            detail: format!("{id} is a read replica of {} already", r.primary),
            ..Done::default()
        });
    }
    let mut words = Vec::new();
    let class = me.as_ref().map(|m| m.class.clone()).unwrap_or_default();
    if let Some(old) = me.as_ref().filter(|_| !replica_of_primary) {
        let kept = kept_name(id, chrono::Utc::now());
        r.rds.rename(id, &kept).await?;
        words.push(format!(
            "the old {id} kept as {kept} with what it wrote (status was {:?}; delete it once reviewed: aws rds delete-db-instance --db-instance-identifier {kept} --region {})",
            old.status, r.instance.access.aws_region
        ));
        // The name is free only once the rename is done.
        while !gone(r.rds.describe_id(id).await)? {
            pause(r, started, "the rename to finish").await?;
        }
    }
    if !replica_of_primary {
        let tags = vec![
            ("seawall:rebuilt-by".to_string(), "failover".to_string()),
            ("seawall:replica-of".to_string(), r.primary.clone()),
        ];
        r.rds.create_replica(id, &r.primary, &class, &tags).await?;
        words.push(format!(
            "CreateDBInstanceReadReplica {id} of {}{}",
            r.primary,
            if class.is_empty() {
                String::new()
            } else {
                format!(" ({class})")
            }
        ));
    }
    loop {
        let status = match r.rds.describe_id(id).await {
            Ok(s) => s.map(|s| s.status).unwrap_or_default(),
            Err(e) if e.kind().is_retryable() => String::new(),
            Err(e) => return Err(e),
        };
        if status == "available" && in_recovery(&r.dsn).await == Some(true) {
            break;
        }
        let what =
            format!("the new read replica to be available (RDS says {status:?}) and replaying");
        pause(r, started, &what).await?;
    }
    words.push(format!(
        "available and replaying after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(Done {
        detail: words.join("; "),
        ..Done::default()
    })
}

/// Whether a describe call says the instance is gone (a call that may
/// succeed later says "not yet").
fn gone(answer: Result<Option<crate::cloud::rds::api::InstanceState>>) -> Result<bool> {
    match answer {
        Ok(state) => Ok(state.is_none()),
        Err(e) if e.kind().is_retryable() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits a poll's time, or fails naming `what` once the deadline passed.
async fn pause(r: &RebuildRds, started: Instant, what: &str) -> Result<()> {
    if started.elapsed() >= r.deadline {
        return Err(Error::new(
            ErrorKind::Unreachable,
            format!(
                "{} was not rebuilt within {:?}: waiting for {what} (the RDS console's events for it say why; the step goes on where it stopped when run again)",
                r.instance.instance, r.deadline
            ),
        ));
    }
    tokio::time::sleep(API_POLL.max(POLL)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_name_is_a_valid_identifier_however_long_the_old_one() {
        let at = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap();
        assert_eq!(
            kept_name("orders-west", at),
            "orders-west-diverged-20261130005320"
        );
        let long = "a".repeat(60);
        let kept = kept_name(&long, at);
        assert_eq!(kept.len(), MAX_ID);
        assert!(kept.ends_with("-diverged-20261130005320"));
        assert!(!kept_name(&format!("{}-b", "a".repeat(37)), at).contains("--"));
    }
}
