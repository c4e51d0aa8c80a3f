//! A managed store Seawall checks but does not fail over (ElastiCache,
//! Aurora): its data side is the self-managed provider of its kind
//! (replication figures, canaries, the post-check), its control plane's
//! view rides beside it, and every failover action is refused with the
//! command that does it, so no step runs half of a failover it cannot
//! finish.

use super::{canary, Done, StoreControl};
use crate::cloud::view::View;
use async_trait::async_trait;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_report, FenceAction, ManagedStore, PostCheckAction, RebuildAction, RejoinAction,
    StorePosition,
};
use std::sync::Arc;
use std::time::Duration;

/// A checked-only store.
pub struct CheckedOnly {
    inner: Arc<dyn StoreControl>,
    view: Arc<View>,
    what: String,
    instead: String,
}

impl CheckedOnly {
    /// `inner` (the kind's own provider) with `view` beside it; `what`
    /// names the store ("ElastiCache replication group sessions-west"),
    /// `instead` what moves it ("aws elasticache failover-global-...").
    pub fn new(
        inner: Arc<dyn StoreControl>,
        view: Arc<View>,
        what: String,
        instead: String,
    ) -> CheckedOnly {
        CheckedOnly {
            inner,
            view,
            what,
            instead,
        }
    }

    fn refused(&self, action: &str) -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{action} of {} is not done by Seawall, which checks this store but does not fail it over: {}; keep it in a service of its own (docs/operations.md)",
                self.what, self.instead
            ),
        )
    }
}

#[async_trait]
impl StoreControl for CheckedOnly {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn replication(&self) -> Result<store_report::Replication> {
        self.inner.replication().await
    }

    fn managed(&self) -> Option<ManagedStore> {
        self.view.newest()
    }

    async fn write_canary(&self, service: &str, marker: canary::Marker) -> Result<()> {
        self.inner.write_canary(service, marker).await
    }

    async fn read_canary(&self, service: &str) -> Result<Option<canary::Marker>> {
        self.inner.read_canary(service).await
    }

    fn forget(&self) {
        self.inner.forget();
    }

    async fn fence(&self, _how: &FenceAction, _deadline: Duration) -> Result<Done> {
        Err(self.refused("the fence"))
    }

    async fn unfence(&self, _deadline: Duration) -> Result<Done> {
        Err(self.refused("lifting the fence"))
    }

    async fn catch_up(&self, _to: Option<&StorePosition>, _deadline: Duration) -> Result<Done> {
        Err(self.refused("the catch-up"))
    }

    async fn promote(&self, _deadline: Duration) -> Result<Done> {
        Err(self.refused("the promotion"))
    }

    async fn post_check(&self, check: &PostCheckAction, deadline: Duration) -> Result<Done> {
        self.inner.post_check(check, deadline).await
    }

    async fn demote(&self, _how: &RejoinAction, _deadline: Duration) -> Result<Done> {
        Err(self.refused("the demotion"))
    }

    async fn rebuild(
        &self,
        _how: &RebuildAction,
        _deadline: Duration,
        _tasks: &Tree,
    ) -> Result<Done> {
        Err(self.refused("the rebuild"))
    }
}
