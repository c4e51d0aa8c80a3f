//! What an `aurora-postgres` source names beyond its DSN: the DB cluster,
//! the global cluster it belongs to, and the AWS region and endpoint its
//! control plane answers at.

use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// An Aurora PostgreSQL cluster under Seawall's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuroraCluster {
    /// Its DB cluster identifier ("orders-west").
    pub cluster: String,
    /// The global cluster (Aurora Global Database) it is a member of.
    pub global_cluster: Option<String>,
    /// The AWS region it lives in.
    pub aws_region: String,
    /// Another RDS and CloudWatch endpoint (a VPC interface endpoint).
    pub endpoint: Option<String>,
    /// Static keys; otherwise the standard AWS chain.
    pub access_key_id: Option<String>,
    /// The file holding the secret key of `access_key_id` (mode 0600).
    pub secret_access_key_file: Option<PathBuf>,
}

impl AuroraCluster {
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
        if self.cluster.is_empty() || self.aws_region.is_empty() {
            out.push(format!(
                "source {source:?}: an aurora-postgres source needs cluster (the DB cluster identifier) and aws_region"
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            out.push(format!(
                "source {source:?}: access_key_id and secret_access_key_file go together: give both, or neither for the standard AWS chain"
            ));
        }
        out
    }

    /// The cluster's ARN pattern for IAM statements (any account).
    pub fn arn(&self) -> String {
        format!("arn:aws:rds:{}:*:cluster:{}", self.aws_region, self.cluster)
    }
}
