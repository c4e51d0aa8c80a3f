//! What RDS and CloudWatch say of the instance, read in the background:
//! a probe must answer within its second, and a control-plane call may
//! take longer (and is rate-limited), so a probe sends the newest view
//! and asks for a fresh one when it is older than [`REFRESH`].

use crate::cloud::rds::api::Rds;
use crate::cloud::rds::config::RdsInstance;
use seawall_proto::v1::ManagedStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How old a view may be before a probe asks for a fresh one.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How far back the lag metric is looked for (RDS publishes it each minute).
const LAG_WINDOW: Duration = Duration::from_secs(300);

/// The newest control-plane view of one instance.
pub struct View {
    instance: RdsInstance,
    rds: OnceCell<Rds>,
    last: Mutex<Option<(Instant, ManagedStore)>>,
    refreshing: AtomicBool,
}

impl View {
    /// A view of `instance`, empty until first read.
    pub fn new(instance: &RdsInstance) -> Arc<View> {
        Arc::new(View {
            instance: instance.clone(),
            rds: OnceCell::new(),
            last: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The control-plane clients, made once.
    pub async fn rds(&self) -> seawall_common::Result<&Rds> {
        self.rds.get_or_try_init(|| Rds::open(&self.instance)).await
    }

    /// The newest view (None before the first read); a stale one starts a
    /// read in the background.
    pub fn newest(self: &Arc<View>) -> Option<ManagedStore> {
        let (age, view) = match self.last.lock().ok().and_then(|l| l.clone()) {
            Some((at, view)) => (Some(at.elapsed()), Some(view)),
            None => (None, None),
        };
        if age.is_none_or(|a| a >= REFRESH) && !self.refreshing.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                me.refresh().await;
                me.refreshing.store(false, Ordering::Release);
            });
        }
        view
    }

    /// Reads the control plane now and keeps what it said.
    pub async fn refresh(&self) -> ManagedStore {
        let before = self.last.lock().ok().and_then(|l| l.clone()).map(|l| l.1);
        let view = match self.read().await {
            Ok(view) => view,
            Err(e) => ManagedStore {
                error: e.to_string(),
                ..before.unwrap_or_else(|| ManagedStore {
                    service: "rds".into(),
                    instance: self.instance.instance.clone(),
                    ..ManagedStore::default()
                })
            },
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), view.clone()));
        }
        view
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
            service: "rds".into(),
            instance: state.id,
            arn: state.arn,
            status: state.status,
            source: state.source.unwrap_or_default(),
            lag_max_secs: lag.map(|l| l.max_secs),
            lag_period_start_unix_ms: lag.map(|l| l.period_start_unix_ms).unwrap_or(0),
            read_unix_ms: chrono::Utc::now().timestamp_millis(),
            error: String::new(),
        })
    }
}
