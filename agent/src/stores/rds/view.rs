//! What RDS and CloudWatch say of the instance, as the background view
//! (`cloud::view`) reads it: its status, the instance it replicates from,
//! and a replica's lag metric.

use crate::cloud::rds::api::Rds;
use crate::cloud::rds::config::RdsInstance;
use crate::cloud::view::{read_now, ControlPlane, LAG_WINDOW};
use async_trait::async_trait;
use seawall_proto::v1::ManagedStore;
use tokio::sync::OnceCell;

/// One instance's control plane.
pub struct RdsPlane {
    instance: RdsInstance,
    rds: OnceCell<Rds>,
}

impl RdsPlane {
    /// The control plane of `instance`, its clients made on first use.
    pub fn new(instance: &RdsInstance) -> RdsPlane {
        RdsPlane {
            instance: instance.clone(),
            rds: OnceCell::new(),
        }
    }

    /// The control-plane clients, made once.
    pub async fn rds(&self) -> seawall_common::Result<&Rds> {
        self.rds.get_or_try_init(|| Rds::open(&self.instance)).await
    }
}

#[async_trait]
impl ControlPlane for RdsPlane {
    fn blank(&self) -> ManagedStore {
        ManagedStore {
            service: "rds".into(),
            instance: self.instance.instance.clone(),
            ..ManagedStore::default()
        }
    }

    async fn read(&self) -> seawall_common::Result<ManagedStore> {
        let rds = self.rds().await?;
        let state = rds.describe().await?;
        // Only a replica has a lag; a primary's metric is absent or stale.
        let lag = match &state.source {
            Some(_) => rds.replica_lag(LAG_WINDOW).await?,
            None => None,
        };
        Ok(ManagedStore {
            instance: state.id,
            arn: state.arn,
            status: state.status,
            source: state.source.unwrap_or_default(),
            ..read_now("rds", lag)
        })
    }
}
