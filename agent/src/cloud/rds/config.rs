//! What an `rds-postgres` source names beyond its DSN: the RDS instance,
//! the AWS region and endpoint its control plane answers at, and the
//! application roles the fence locks out.

use crate::cloud::access::AwsAccess;
use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};

/// The runbook's automated backup retention, kept on a promoted replica
/// (a cross-region read replica has none of its own).
pub const DEFAULT_BACKUP_RETENTION_DAYS: i32 = 7;

/// How many copies a snapshot-copy job keeps in the cold region: a week
/// of daily copies, as the runbook keeps backups.
pub const DEFAULT_SNAPSHOT_COPIES_KEPT: u32 = 7;

/// Where the instance's snapshots are copied (the cold region), and how
/// many copies are kept there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCopy {
    /// The AWS region the copies go to ("eu-west-1").
    pub region: String,
    /// The KMS key, in that region, an encrypted instance's copies are
    /// encrypted with (a key belongs to one region).
    pub kms_key_id: Option<String>,
    /// How many copies are kept; older ones are deleted.
    pub kept: u32,
}

/// An RDS for PostgreSQL instance under failover control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdsInstance {
    /// Its DB instance identifier ("orders-west").
    pub instance: String,
    /// Its region ("us-west-2"), endpoint and keys (without keys: the
    /// standard AWS chain, such as the instance profile).
    #[serde(flatten)]
    pub access: AwsAccess,
    /// The roles applications log in with: the fence takes LOGIN from each
    /// and ends their sessions (RDS refuses `ALTER SYSTEM` and a stop, and
    /// a read-only parameter is advisory: a client can set it back).
    pub app_roles: Vec<String>,
    /// Automated backup retention set when it is promoted (days).
    pub backup_retention_days: i32,
    /// Where snapshot-copy jobs copy its snapshots, if anywhere.
    #[serde(default)]
    pub snapshot_copy: Option<SnapshotCopy>,
}

impl RdsInstance {
    /// Where its control plane answers, as whom.
    pub fn target(&self) -> Result<AwsTarget> {
        self.access.target()
    }

    /// What is wrong with it, each with its fix (empty: nothing), given
    /// the user of the source's DSN.
    pub fn problems(&self, source: &str, dsn_user: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        if self.instance.is_empty() || self.access.aws_region.is_empty() {
            out.push(format!(
                "source {source:?}: an rds-postgres source needs instance (the DB instance identifier) and aws_region"
            ));
        }
        if self.app_roles.is_empty() {
            out.push(format!(
                "source {source:?}: app_roles is empty: list the roles applications log in with, or the fence locks out no one"
            ));
        }
        if let Some(user) = dsn_user {
            if self.app_roles.iter().any(|r| r == user) {
                out.push(format!(
                    "source {source:?}: app_roles lists {user:?}, the user of its dsn: the fence would lock Seawall out of the instance it must promote or check; give Seawall a role of its own"
                ));
            }
        }
        out.extend(self.access.keys_problem(source));
        if let Some(c) = &self.snapshot_copy {
            if c.region == self.access.aws_region {
                out.push(format!(
                    "source {source:?}: snapshot_copy_region is the instance's own region ({}): copies guard against losing a region, so name another (the cold region)",
                    c.region
                ));
            }
            if c.kept == 0 {
                out.push(format!(
                    "source {source:?}: snapshot_copies_kept = 0 would delete every copy it makes: keep at least 1 (default 7)"
                ));
            }
        }
        if !(0..=35).contains(&self.backup_retention_days) {
            out.push(format!(
                "source {source:?}: backup_retention_days must be 0 to 35 (RDS's range); the runbook keeps 7"
            ));
        }
        out
    }

    /// The same instance seen from `region` (where its snapshots' copies
    /// live), through the same endpoint and keys.
    pub fn in_region(&self, region: &str) -> RdsInstance {
        RdsInstance {
            access: AwsAccess {
                aws_region: region.to_string(),
                ..self.access.clone()
            },
            ..self.clone()
        }
    }

    /// The instance's ARN pattern for IAM statements (any account).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:rds:{}:*:db:{}",
            self.access.aws_region, self.instance
        )
    }
}
