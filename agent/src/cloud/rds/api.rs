//! The RDS and CloudWatch calls an `rds-postgres` store makes, each bounded
//! and retried on throttling (`seawall_common::aws`), each failure naming
//! the IAM action it needed.

use super::config::RdsInstance;
use crate::cloud::metric::{newest_maximum, MetricLag};
use seawall_common::aws::{call_failed, sdk_config};
use seawall_common::{Error, ErrorKind, Result};
use std::time::Duration;

/// What RDS says of one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceState {
    /// Its identifier.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// "available", "modifying", "stopped", ...
    pub status: String,
    /// The instance it replicates from (identifier or ARN), if any.
    pub source: Option<String>,
    /// Its class ("db.r6g.large").
    pub class: String,
    /// Its tags.
    pub tags: Vec<(String, String)>,
    /// Where its server answers (host, port), once RDS gave it one.
    pub endpoint: Option<(String, u16)>,
}

/// What RDS says of one DB snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotState {
    /// Its identifier.
    pub id: String,
    /// Its ARN (what a copy in another region names it by).
    pub arn: String,
    /// "creating", "copying", "available", "failed", ...
    pub status: String,
    /// When the snapshot was taken (unix ms; a copy keeps its source's).
    pub created_unix_ms: i64,
    /// Whether it is encrypted (a copy to another region needs a key there).
    pub encrypted: bool,
    /// Its tags.
    pub tags: Vec<(String, String)>,
}

/// The span an instance's automated backups can restore (unix ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestoreWindow {
    /// The oldest restorable time: the instance's creation or the
    /// retention period back from now, whichever is later.
    pub earliest_unix_ms: i64,
    /// RDS's `LatestRestorableTime`.
    pub latest_unix_ms: i64,
}

/// An instance's control plane: RDS and CloudWatch in its region.
#[derive(Clone)]
pub struct Rds {
    rds: aws_sdk_rds::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// The instance it was opened for.
    pub instance: RdsInstance,
}

impl Rds {
    /// Clients for `instance`'s region (its endpoint and keys, or the
    /// standard AWS chain).
    pub async fn open(instance: &RdsInstance) -> Result<Rds> {
        let shared = sdk_config(&instance.target()?).await;
        Ok(Rds {
            rds: aws_sdk_rds::Client::new(&shared),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&shared),
            instance: instance.clone(),
        })
    }

    /// The configured instance's state.
    pub async fn describe(&self) -> Result<InstanceState> {
        self.describe_id(&self.instance.instance)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "RDS has no DB instance {:?} in {}: check instance and aws_region in agent.toml",
                        self.instance.instance, self.instance.access.aws_region
                    ),
                )
            })
    }

    /// The state of instance `id` in this region (None: there is none).
    pub async fn describe_id(&self, id: &str) -> Result<Option<InstanceState>> {
        let out = self
            .rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(call_failed("rds:DescribeDBInstances", &self.arn_of(id), &e)),
        };
        Ok(out.db_instances().first().map(state))
    }

    /// The instances of this region carrying tag `key` (any value).
    pub async fn tagged(&self, key: &str) -> Result<Vec<InstanceState>> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .rds
                .describe_db_instances()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| call_failed("rds:DescribeDBInstances", "*", &e))?;
            found.extend(
                out.db_instances()
                    .iter()
                    .map(state)
                    .filter(|s| s.tags.iter().any(|(k, _)| k == key)),
            );
            marker = out.marker().map(str::to_string);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Asks RDS to promote the configured read replica, keeping
    /// `backup_retention_days` of automated backups on it.
    pub async fn promote(&self) -> Result<()> {
        self.rds
            .promote_read_replica()
            .db_instance_identifier(&self.instance.instance)
            .backup_retention_period(self.instance.backup_retention_days)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_failed("rds:PromoteReadReplica", &self.instance.arn(), &e))
    }

    /// Renames instance `id` to `to` at once (its data and endpoint's
    /// name go with it).
    pub async fn rename(&self, id: &str, to: &str) -> Result<()> {
        self.rds
            .modify_db_instance()
            .db_instance_identifier(id)
            .new_db_instance_identifier(to)
            .apply_immediately(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_failed("rds:ModifyDBInstance", &self.arn_of(id), &e))
    }

    /// Creates instance `id` as a read replica of `source` (an ARN: it may
    /// be in another region), of `class`, tagged with `tags`.
    pub async fn create_replica(
        &self,
        id: &str,
        source: &str,
        class: &str,
        tags: &[(String, String)],
    ) -> Result<()> {
        self.rds
            .create_db_instance_read_replica()
            .db_instance_identifier(id)
            .source_db_instance_identifier(source)
            .set_db_instance_class((!class.is_empty()).then(|| class.to_string()))
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                call_failed(
                    "rds:CreateDBInstanceReadReplica",
                    &format!(r#"["{}", "{source}"]"#, self.arn_of(id)),
                    &e,
                )
            })
    }

    /// The span the configured instance's automated backups can restore;
    /// an error naming the fix when it keeps none.
    pub async fn restore_window(&self) -> Result<RestoreWindow> {
        let out = self
            .rds
            .describe_db_instances()
            .db_instance_identifier(&self.instance.instance)
            .send()
            .await
            .map_err(|e| call_failed("rds:DescribeDBInstances", &self.instance.arn(), &e))?;
        let db = out.db_instances().first().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "RDS has no DB instance {:?} in {}: check instance and aws_region in agent.toml",
                    self.instance.instance, self.instance.access.aws_region
                ),
            )
        })?;
        let retention = db.backup_retention_period().unwrap_or(0);
        let latest = db.latest_restorable_time().and_then(|t| t.to_millis().ok());
        let (Some(latest), true) = (latest, retention > 0) else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "RDS instance {} keeps no automated backups (retention {retention} days), so it has no point to restore: set its backup retention (the runbook keeps 7 days), or drill it from Seawall's repository (drill = \"restore\")",
                    self.instance.instance
                ),
            ));
        };
        let created = db
            .instance_create_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or(i64::MIN);
        let kept_from = chrono::Utc::now().timestamp_millis() - i64::from(retention) * 86_400_000;
        Ok(RestoreWindow {
            earliest_unix_ms: created.max(kept_from).min(latest),
            latest_unix_ms: latest,
        })
    }

    /// Restores the configured instance's automated backups into a new
    /// instance `target` (single-AZ, not public), at `at` or at the latest
    /// restorable time, tagged with `tags`.
    pub async fn restore_to_point(
        &self,
        target: &str,
        at: Option<i64>,
        tags: &[(String, String)],
    ) -> Result<()> {
        let call = self
            .rds
            .restore_db_instance_to_point_in_time()
            .source_db_instance_identifier(&self.instance.instance)
            .target_db_instance_identifier(target)
            .multi_az(false)
            .publicly_accessible(false)
            .deletion_protection(false)
            .set_tags(Some(sdk_tags(tags)));
        let call = match at {
            Some(ms) => call.restore_time(aws_smithy_types::DateTime::from_millis(ms)),
            None => call.use_latest_restorable_time(true),
        };
        call.send().await.map(|_| ()).map_err(|e| {
            call_failed(
                "rds:RestoreDBInstanceToPointInTime",
                &format!(r#"["{}", "{}"]"#, self.instance.arn(), self.arn_of(target)),
                &e,
            )
        })
    }

    /// Takes a manual snapshot `id` of the configured instance, tagged.
    pub async fn create_snapshot(&self, id: &str, tags: &[(String, String)]) -> Result<()> {
        self.rds
            .create_db_snapshot()
            .db_instance_identifier(&self.instance.instance)
            .db_snapshot_identifier(id)
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                call_failed(
                    "rds:CreateDBSnapshot",
                    &format!(
                        r#"["{}", "{}"]"#,
                        self.instance.arn(),
                        self.snapshot_arn(id)
                    ),
                    &e,
                )
            })
    }

    /// Snapshot `id` of this region (None: there is none).
    pub async fn snapshot(&self, id: &str) -> Result<Option<SnapshotState>> {
        match self
            .rds
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_snapshots().first().map(snapshot_state)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(call_failed(
                "rds:DescribeDBSnapshots",
                &self.snapshot_arn(id),
                &e,
            )),
        }
    }

    /// The manual snapshots of this region whose tag `key` is `value`.
    pub async fn snapshots_tagged(&self, key: &str, value: &str) -> Result<Vec<SnapshotState>> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .rds
                .describe_db_snapshots()
                .snapshot_type("manual")
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| call_failed("rds:DescribeDBSnapshots", "*", &e))?;
            found.extend(
                out.db_snapshots()
                    .iter()
                    .map(snapshot_state)
                    .filter(|s| s.tags.iter().any(|(k, v)| k == key && v == value)),
            );
            marker = out.marker().map(str::to_string);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Copies snapshot `source_arn` (in another region) into this region
    /// as `id`, encrypted with `kms_key_id` when given, tagged.
    pub async fn copy_snapshot(
        &self,
        source_arn: &str,
        id: &str,
        kms_key_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<()> {
        self.rds
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(id)
            .set_kms_key_id(kms_key_id.map(str::to_string))
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                call_failed(
                    "rds:CopyDBSnapshot",
                    &format!(r#"["{source_arn}", "{}"]"#, self.snapshot_arn(id)),
                    &e,
                )
            })
    }

    /// Deletes snapshot `id`; one already gone is not an error.
    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        match self
            .rds
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
            {
                Ok(())
            }
            Err(e) => Err(call_failed(
                "rds:DeleteDBSnapshot",
                &self.snapshot_arn(id),
                &e,
            )),
        }
    }

    fn snapshot_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:rds:{}:*:snapshot:{id}",
            self.instance.access.aws_region
        )
    }

    /// Deletes instance `id` without a final snapshot (a scratch copy);
    /// an instance already gone is not an error.
    pub async fn delete_scratch(&self, id: &str) -> Result<()> {
        match self
            .rds
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
            {
                Ok(())
            }
            Err(e) => Err(call_failed("rds:DeleteDBInstance", &self.arn_of(id), &e)),
        }
    }

    /// The newest period of the instance's `ReplicaLag` metric within the
    /// last `window` (None: no datapoint).
    pub async fn replica_lag(&self, window: Duration) -> Result<Option<MetricLag>> {
        newest_maximum(
            &self.cloudwatch,
            "AWS/RDS",
            "ReplicaLag",
            &[("DBInstanceIdentifier", &self.instance.instance)],
            window,
        )
        .await
    }

    fn arn_of(&self, id: &str) -> String {
        format!("arn:aws:rds:{}:*:db:{id}", self.instance.access.aws_region)
    }
}

fn sdk_tags(tags: &[(String, String)]) -> Vec<aws_sdk_rds::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
        .collect()
}

fn pairs(tags: &[aws_sdk_rds::types::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn snapshot_state(s: &aws_sdk_rds::types::DbSnapshot) -> SnapshotState {
    SnapshotState {
        id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
        arn: s.db_snapshot_arn().unwrap_or_default().to_string(),
        status: s.status().unwrap_or_default().to_string(),
        created_unix_ms: s
            .original_snapshot_create_time()
            .or(s.snapshot_create_time())
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default(),
        encrypted: s.encrypted().unwrap_or(false),
        tags: pairs(s.tag_list()),
    }
}

fn state(db: &aws_sdk_rds::types::DbInstance) -> InstanceState {
    InstanceState {
        id: db.db_instance_identifier().unwrap_or_default().to_string(),
        arn: db.db_instance_arn().unwrap_or_default().to_string(),
        status: db.db_instance_status().unwrap_or_default().to_string(),
        class: db.db_instance_class().unwrap_or_default().to_string(),
        source: db
            .read_replica_source_db_instance_identifier()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: pairs(db.tag_list()),
        endpoint: db.endpoint().and_then(|e| {
            let port = u16::try_from(e.port()?).ok()?;
            Some((e.address()?.to_string(), port))
        }),
    }
}
