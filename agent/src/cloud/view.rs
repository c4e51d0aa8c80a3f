//! What a managed store's control plane says of it, read in the background:
//! a probe must answer within its second, and a control-plane call may take
//! longer (and is rate-limited), so a probe sends the newest view and asks
//! for a fresh one when it is older than [`REFRESH`].

use crate::cloud::metric::MetricLag;
use async_trait::async_trait;
use seawall_proto::v1::ManagedStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a view may be before a probe asks for a fresh one.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How far back lag metrics are looked for (published each minute).
pub const LAG_WINDOW: Duration = Duration::from_secs(300);

/// A view read now from `service`, with a standby's lag metric (its
/// newest period) when there is one; the caller fills in what it read.
pub fn read_now(service: &str, lag: Option<MetricLag>) -> ManagedStore {
    ManagedStore {
        service: service.into(),
        lag_max_secs: lag.map(|l| l.max_secs),
        lag_period_start_unix_ms: lag.map(|l| l.period_start_unix_ms).unwrap_or(0),
        read_unix_ms: chrono::Utc::now().timestamp_millis(),
        ..ManagedStore::default()
    }
}

/// One managed store's control plane, as a view reads it.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The view to send when nothing could be read yet (service and id).
    fn blank(&self) -> ManagedStore;
    /// Reads it now.
    async fn read(&self) -> seawall_common::Result<ManagedStore>;
}

/// The newest control-plane view of one store.
pub struct View {
    plane: Arc<dyn ControlPlane>,
    last: Mutex<Option<(Instant, ManagedStore)>>,
    refreshing: AtomicBool,
}

impl View {
    /// A view of `plane`, empty until first read.
    pub fn new(plane: Arc<dyn ControlPlane>) -> Arc<View> {
        Arc::new(View {
            plane,
            last: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        })
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

    /// Reads the control plane now and keeps what it said; a failed read
    /// keeps the view before it, with the error.
    pub async fn refresh(&self) -> ManagedStore {
        let before = self.last.lock().ok().and_then(|l| l.clone()).map(|l| l.1);
        let view = match self.plane.read().await {
            Ok(view) => view,
            Err(e) => ManagedStore {
                error: e.to_string(),
                ..before.unwrap_or_else(|| self.plane.blank())
            },
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), view.clone()));
        }
        view
    }
}
