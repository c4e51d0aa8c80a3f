//! Where a managed store's control plane answers and as whom: the AWS
//! region, another endpoint, and static keys (else the standard AWS
//! chain), as every managed source in agent.toml names them.

use seawall_common::aws::AwsTarget;
use seawall_common::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A managed source's AWS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsAccess {
    /// The AWS region the store lives in.
    pub aws_region: String,
    /// Another endpoint for its control plane and CloudWatch (a VPC
    /// interface endpoint).
    pub endpoint: Option<String>,
    /// Static keys; otherwise the standard AWS chain.
    pub access_key_id: Option<String>,
    /// The file holding the secret key of `access_key_id` (mode 0600).
    pub secret_access_key_file: Option<PathBuf>,
}

impl AwsAccess {
    /// Where its control plane answers, as whom.
    pub fn target(&self) -> Result<AwsTarget> {
        AwsTarget::with_keys(
            &self.aws_region,
            self.endpoint.as_deref(),
            self.access_key_id.as_deref(),
            self.secret_access_key_file.as_deref(),
        )
    }

    /// What is wrong with the keys of `source` (None: nothing).
    pub fn keys_problem(&self, source: &str) -> Option<String> {
        (self.access_key_id.is_some() != self.secret_access_key_file.is_some()).then(|| {
            format!(
                "source {source:?}: access_key_id and secret_access_key_file go together: give both, or neither for the standard AWS chain"
            )
        })
    }
}
