//! What an `aurora-postgres` source names beyond its DSN: the DB cluster,
//! the global cluster it belongs to, and where its control plane answers.

use crate::cloud::access::AwsAccess;
use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};

/// An Aurora PostgreSQL cluster under Seawall's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuroraCluster {
    /// Its DB cluster identifier ("orders-west").
    pub cluster: String,
    /// The global cluster (Aurora Global Database) it is a member of.
    pub global_cluster: Option<String>,
    /// Its region, endpoint and keys.
    #[serde(flatten)]
    pub access: AwsAccess,
}

impl AuroraCluster {
    /// Where its control plane answers, as whom.
    pub fn target(&self) -> Result<AwsTarget> {
        self.access.target()
    }

    /// What is wrong with it, each with its fix (empty: nothing).
    pub fn problems(&self, source: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster.is_empty() || self.access.aws_region.is_empty() {
            out.push(format!(
                "source {source:?}: an aurora-postgres source needs cluster (the DB cluster identifier) and aws_region"
            ));
        }
        out.extend(self.access.keys_problem(source));
        out
    }

    /// The cluster's ARN pattern for IAM statements (any account).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:rds:{}:*:cluster:{}",
            self.access.aws_region, self.cluster
        )
    }
}
