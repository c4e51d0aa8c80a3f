//! An RDS instance's data carried into the cold region: a manual snapshot
//! taken now (`CreateDBSnapshot`: on a Multi-AZ instance it is read from
//! the standby, and it is as fresh as the job, where the newest automated
//! snapshot may be a day old), copied into the source's
//! `snapshot_copy_region` (`CopyDBSnapshot`, called there, naming the
//! snapshot by its ARN), the local snapshot deleted once the copy is
//! available, and only the newest `snapshot_copies_kept` copies kept there.
//! Every snapshot it makes is tagged with the instance and the job, so a
//! retried job picks up its own work and retention never touches a
//! snapshot Seawall did not make.

use crate::cloud::rds::api::{Rds, SnapshotState};
use crate::cloud::rds::config::{RdsInstance, SnapshotCopy};
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// Tag: the instance a snapshot (or copy) is of.
pub const COPY_OF: &str = "seawall:copy-of";
/// Tag: the job that made it.
pub const JOB: &str = "seawall:job";
/// Tag: when the data was taken (unix seconds), which orders copies.
pub const TAKEN: &str = "seawall:taken";

/// How long a snapshot or its copy may take to become available (a large
/// first copy across regions takes hours).
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The first pause between two looks; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(500);
/// ...
const POLL_MAX: Duration = Duration::from_secs(30);

/// What one run made.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CopyReport {
    /// The snapshot taken (deleted once copied).
    pub snapshot: String,
    /// Its copy.
    pub copy: String,
    /// The copy's region.
    pub region: String,
    /// When the data was taken (unix ms).
    pub snapshot_time_unix_ms: i64,
    /// Older copies deleted.
    pub deleted: Vec<String>,
}

/// Runs one snapshot copy of `instance` for job `job`.
pub async fn copy(instance: &RdsInstance, job: &str) -> Result<CopyReport> {
    let target = instance.snapshot_copy.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "RDS instance {} has no snapshot_copy_region in its source (agent.toml): name the cold region its snapshots go to",
                instance.instance
            ),
        )
    })?;
    let here = Rds::open(instance).await?;
    let there = Rds::open(&instance.in_region(&target.region)).await?;
    let id = snapshot_name(&instance.instance, job, chrono::Utc::now());
    // A retried job's snapshot is found by its tag, not made twice.
    let mine = here.snapshots_tagged(JOB, job).await?;
    let taken = match mine
        .into_iter()
        .find(|s| tag(s, COPY_OF) == Some(&instance.instance))
    {
        Some(s) => s,
        None => {
            let tags = tags(&instance.instance, job, chrono::Utc::now().timestamp());
            here.create_snapshot(&id, &tags).await?;
            here.snapshot(&id)
                .await?
                .ok_or_else(|| gone(&id, &instance.access.aws_region))?
        }
    };
    let taken = available(&here, &taken.id, &instance.access.aws_region).await?;
    if taken.encrypted && target.kms_key_id.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "RDS instance {} is encrypted: its snapshot's copy in {} needs a KMS key of that region; set snapshot_copy_kms_key_id in its source (agent.toml)",
                instance.instance, target.region
            ),
        ));
    }
    let copy_tags = tags(
        &instance.instance,
        job,
        taken.created_unix_ms.div_euclid(1000),
    );
    if there.snapshot(&taken.id).await?.is_none() {
        there
            .copy_snapshot(
                &taken.arn,
                &taken.id,
                target.kms_key_id.as_deref(),
                &copy_tags,
            )
            .await?;
    }
    let copied = available(&there, &taken.id, &target.region).await?;
    // The copy holds it now: the local one would only cost.
    here.delete_snapshot(&taken.id).await?;
    let deleted = prune(&there, instance, target, &copied.id).await?;
    Ok(CopyReport {
        snapshot: taken.id.clone(),
        copy: copied.id,
        region: target.region.clone(),
        snapshot_time_unix_ms: taken.created_unix_ms,
        deleted,
    })
}

/// Deletes the copies of `instance` in the target region beyond the newest
/// `kept` (never `just_made`); returns their identifiers.
async fn prune(
    there: &Rds,
    instance: &RdsInstance,
    target: &SnapshotCopy,
    just_made: &str,
) -> Result<Vec<String>> {
    let copies = there.snapshots_tagged(COPY_OF, &instance.instance).await?;
    let mut deleted = Vec::new();
    for id in beyond_kept(&copies, target.kept, just_made) {
        there.delete_snapshot(&id).await?;
        deleted.push(id);
    }
    Ok(deleted)
}

/// Of `copies`, the available ones older than the newest `kept` (ordered by
/// when their data was taken), never `keep_always`.
fn beyond_kept(copies: &[SnapshotState], kept: u32, keep_always: &str) -> Vec<String> {
    let mut done: Vec<&SnapshotState> = copies.iter().filter(|c| c.status == "available").collect();
    let taken = |c: &SnapshotState| {
        tag(c, TAKEN)
            .and_then(|t| t.parse::<i64>().ok())
            .map(|t| t * 1000)
            .unwrap_or(c.created_unix_ms)
    };
    done.sort_by_key(|c| std::cmp::Reverse((taken(c), c.id.clone())));
    done.into_iter()
        .skip(kept.max(1) as usize)
        .filter(|c| c.id != keep_always)
        .map(|c| c.id.clone())
        .collect()
}

/// Waits until snapshot `id` is available; an error for a failed one.
async fn available(rds: &Rds, id: &str, region: &str) -> Result<SnapshotState> {
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        let s = rds.snapshot(id).await?.ok_or_else(|| gone(id, region))?;
        match s.status.as_str() {
            "available" => return Ok(s),
            "failed" | "error" | "incompatible-restore" => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "RDS snapshot {id} in {region} is {}: its events say why (aws rds describe-events --region {region} --source-identifier {id} --source-type db-snapshot)",
                        s.status
                    ),
                ))
            }
            _ => {}
        }
        if started.elapsed() > AVAILABLE_TIMEOUT {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "RDS snapshot {id} in {region} is still {} after {}",
                    s.status,
                    humantime::format_duration(AVAILABLE_TIMEOUT)
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

fn gone(id: &str, region: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("RDS snapshot {id} in {region} is gone (deleted while the job ran?)"),
    )
}

fn tag<'a>(s: &'a SnapshotState, key: &str) -> Option<&'a str> {
    s.tags
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The tags of a snapshot (or copy) of `instance` made by `job`, whose data
/// is from `taken_secs`.
fn tags(instance: &str, job: &str, taken_secs: i64) -> Vec<(String, String)> {
    [
        (COPY_OF, instance.to_string()),
        (JOB, job.to_string()),
        (TAKEN, taken_secs.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec()
}

/// `seawall-<instance>-<UTC time>-<job hash>`: a valid snapshot identifier
/// (letters, digits, single hyphens, a letter first) that sorts by time and
/// differs for two jobs in the same second.
fn snapshot_name(instance: &str, job: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let hash = blake3::hash(job.as_bytes()).to_hex();
    let mut base = String::new();
    for c in instance.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
            base.push(c);
        }
    }
    let base: String = base.chars().take(200).collect();
    let base = base.trim_end_matches('-');
    format!(
        "seawall-{base}-{}-{}",
        at.format("%Y%m%d-%H%M%S"),
        &hash[..6]
    )
    .replace("--", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: &str, taken: i64, status: &str) -> SnapshotState {
        SnapshotState {
            id: id.into(),
            status: status.into(),
            tags: vec![(TAKEN.into(), taken.to_string())],
            ..SnapshotState::default()
        }
    }

    #[test]
    fn retention_keeps_the_newest_copies_and_never_the_one_just_made_or_one_in_flight() {
        let all = vec![
            copy("a", 100, "available"),
            copy("b", 300, "available"),
            copy("c", 200, "available"),
            copy("d", 50, "copying"),
            copy("e", 400, "available"),
        ];
        assert_eq!(beyond_kept(&all, 2, "e"), vec!["c", "a"]);
        // The one just made is kept even when its time says otherwise.
        assert_eq!(beyond_kept(&all, 1, "b"), vec!["c", "a"]);
        // Zero is read as one: a run never deletes everything.
        assert_eq!(beyond_kept(&all, 0, "e"), vec!["b", "c", "a"]);
    }

    #[test]
    fn snapshot_names_are_valid_identifiers_that_sort_by_time() {
        let at = chrono::DateTime::from_timestamp(1_796_700_000, 0).unwrap();
        let n = snapshot_name("Orders_West", "rds-copy-1796700000000", at);
        assert!(n.starts_with("seawall-orders-west-20261208-"), "{n}");
        assert!(!n.contains("--") && !n.ends_with('-'), "{n}");
        assert_ne!(
            n,
            snapshot_name("Orders_West", "rds-copy-1796700003000", at)
        );
    }
}
