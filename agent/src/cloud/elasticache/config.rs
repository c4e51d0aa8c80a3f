//! What an `elasticache-redis` source names beyond its URL: the
//! replication group, and where its control plane answers.

use crate::cloud::access::AwsAccess;
use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};

/// An ElastiCache replication group under Seawall's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElastiCacheGroup {
    /// Its replication group id ("sessions-west").
    pub replication_group: String,
    /// Its region, endpoint and keys.
    #[serde(flatten)]
    pub access: AwsAccess,
}

impl ElastiCacheGroup {
    /// Where its control plane answers, as whom.
    pub fn target(&self) -> Result<AwsTarget> {
        self.access.target()
    }

    /// What is wrong with it, each with its fix (empty: nothing).
    pub fn problems(&self, source: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.replication_group.is_empty() || self.access.aws_region.is_empty() {
            out.push(format!(
                "source {source:?}: an elasticache-redis source needs replication_group and aws_region"
            ));
        }
        out.extend(self.access.keys_problem(source));
        out
    }

    /// The group's ARN pattern for IAM statements (any account).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:elasticache:{}:*:replicationgroup:{}",
            self.access.aws_region, self.replication_group
        )
    }
}
