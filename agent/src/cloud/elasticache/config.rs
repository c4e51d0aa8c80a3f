//! What an `elasticache-redis` source names beyond its URL: the
//! replication group, and the AWS region and endpoint its control plane
//! answers at.

use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// An ElastiCache replication group under Seawall's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElastiCacheGroup {
    /// Its replication group id ("sessions-west").
    pub replication_group: String,
    /// The AWS region it lives in.
    pub aws_region: String,
    /// Another ElastiCache and CloudWatch endpoint (a VPC interface endpoint).
    pub endpoint: Option<String>,
    /// Static keys; otherwise the standard AWS chain.
    pub access_key_id: Option<String>,
    /// The file holding the secret key of `access_key_id` (mode 0600).
    pub secret_access_key_file: Option<PathBuf>,
}

impl ElastiCacheGroup {
    /// Where its control plane answers, as whom.
    pub fn target(&self) -> Result<AwsTarget> {
        AwsTarget::with_keys(
            &self.aws_region,
            self.endpoint.as_deref(),
            self.access_key_id.as_deref(),
            self.secret_access_key_file.as_deref(),
        )
    }

    /// What is wrong with it, each with its fix (empty: nothing).
    pub fn problems(&self, source: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.replication_group.is_empty() || self.aws_region.is_empty() {
            out.push(format!(
                "source {source:?}: an elasticache-redis source needs replication_group and aws_region"
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            out.push(format!(
                "source {source:?}: access_key_id and secret_access_key_file go together: give both, or neither for the standard AWS chain"
            ));
        }
        out
    }

    /// The group's ARN pattern for IAM statements (any account).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:elasticache:{}:*:replicationgroup:{}",
            self.aws_region, self.replication_group
        )
    }
}
