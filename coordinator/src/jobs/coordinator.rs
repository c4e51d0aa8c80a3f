//! The coordinator replica's shared state: configuration, store, connected
//! agents, and while it leads, the leadership and the active jobs. Every
//! state change goes through here, fenced by the leadership's epoch.

use crate::fleet::auth::OperatorAuth;
use crate::fleet::registry::Registry;
use crate::model::clock::now_ms;
use crate::model::config::CoordinatorConfig;
use crate::model::error::{ActError, StoreError};
use crate::model::records::{AuditEntry, BackupRecord, JobRecord};
use crate::store::{Fence, LeaderInfo, Leadership, StateStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// What the leader holds while it leads.
pub struct Lead {
    /// The leadership; every action checks it first.
    pub leadership: Leadership,
    /// Jobs not yet final, with their store revisions.
    pub active: Mutex<HashMap<String, (JobRecord, i64)>>,
    /// This term's tasks (leader workers, agent sessions): cancelled and
    /// waited for when the lead is lost.
    pub tree: crate::fleet::workers::Tree,
    /// When this term began (unix ms): a new leader has heard no agent
    /// before it, so it counts their leases from here.
    pub since_ms: i64,
}

impl Lead {
    /// The write fence.
    pub fn fence(&self) -> &Fence {
        &self.leadership.fence
    }

    /// The epoch, as sent to agents.
    pub fn epoch(&self) -> u64 {
        self.leadership.fence.epoch.max(0) as u64
    }
}

/// One coordinator replica.
pub struct Coordinator {
    /// Its configuration.
    pub config: CoordinatorConfig,
    /// Where state lives.
    pub store: Arc<dyn StateStore>,
    /// This replica as the election knows it.
    pub me: LeaderInfo,
    /// Connected agents (while leading).
    pub registry: Registry,
    /// Operator credentials check.
    pub operator_auth: OperatorAuth,
    /// Wakes the dispatcher.
    pub wake: Notify,
    /// Wakes the failover worker (a failover started or aborted).
    pub failover_wake: Notify,
    /// Wakes the drill worker (a drill started, a drill's job settled).
    pub drill_wake: Notify,
    /// Cancelled when the replica shuts down; every term's tree hangs on it.
    pub root: tokio_util::sync::CancellationToken,
    /// The leader workers' health.
    pub workers: crate::fleet::workers::Board,
    /// Certificates refused however valid their signature.
    pub revoked: Arc<crate::fleet::revocation::Revocations>,
    /// Replication probes awaiting their agents' answers.
    pub probes: crate::fleet::pending::Pending<seawall_proto::v1::ProbeReply>,
    /// Failover actions awaiting their agents' answers.
    pub actions: crate::fleet::pending::Pending<seawall_proto::v1::ActionReply>,
    /// Results agents sent for jobs they were not given, per agent.
    pub offences: crate::fleet::offences::Offences,
    lead: RwLock<Option<Arc<Lead>>>,
}

impl Coordinator {
    /// A replica that does not lead yet.
    pub fn new(
        config: CoordinatorConfig,
        store: Arc<dyn StateStore>,
        token: Option<String>,
    ) -> Self {
        let me = LeaderInfo {
            id: config.id.clone(),
            address: config.advertised(),
            epoch: 0,
        };
        Coordinator {
            config,
            store,
            me,
            registry: Registry::default(),
            operator_auth: OperatorAuth::new(token),
            wake: Notify::new(),
            failover_wake: Notify::new(),
            drill_wake: Notify::new(),
            root: tokio_util::sync::CancellationToken::new(),
            workers: crate::fleet::workers::Board::default(),
            revoked: Arc::default(),
            probes: Default::default(),
            actions: Default::default(),
            offences: Default::default(),
            lead: RwLock::new(None),
        }
    }

    /// The lead, while it is valid.
    pub fn lead(&self) -> Option<Arc<Lead>> {
        let lead = self.lead.read().ok()?.clone()?;
        lead.leadership.is_valid().then_some(lead)
    }

    /// Starts leading: loads the active jobs.
    pub async fn take_lead(&self, leadership: Leadership) -> Result<Arc<Lead>, StoreError> {
        let mut active = HashMap::new();
        for e in self.store.list("jobs/").await? {
            if let Ok(job) = serde_json::from_slice::<JobRecord>(&e.value) {
                if !job.state.is_final() {
                    active.insert(job.job_id.clone(), (job, e.revision));
                }
            }
        }
        // The RPO gauge starts from the stored records, not from the next
        // success: an alert must not go blind because a leader changed.
        for e in self.store.list("backups/").await? {
            if let Ok(b) = serde_json::from_slice::<BackupRecord>(&e.value) {
                super::metrics::backup_seen(&b);
            }
        }
        self.workers.clear();
        let lead = Arc::new(Lead {
            leadership,
            active: Mutex::new(active),
            tree: crate::fleet::workers::Tree::child_of(&self.root),
            since_ms: crate::model::clock::now_ms(),
        });
        if let Ok(mut slot) = self.lead.write() {
            *slot = Some(lead.clone());
        }
        Ok(lead)
    }

    /// Stops leading: forgets the lead and drops every agent session.
    pub fn step_down(&self) {
        if let Ok(mut slot) = self.lead.write() {
            *slot = None;
        }
        self.registry.clear();
    }

    /// An audit line's key and value, to write alone or beside a change.
    pub(crate) fn audit_line(
        &self,
        lead: &Lead,
        actor: &str,
        event: String,
    ) -> Result<(String, Vec<u8>), ActError> {
        let entry = AuditEntry {
            at_ms: now_ms(),
            epoch: lead.fence().epoch,
            replica: self.me.id.clone(),
            actor: actor.to_string(),
            event,
        };
        let key = format!("audit/{:013}-{:08x}", entry.at_ms, rand::random::<u32>());
        Ok((key, serde_json::to_vec(&entry)?))
    }

    /// Appends to the audit log (best effort: a failure is logged).
    pub async fn audit(&self, lead: &Lead, actor: &str, event: String) {
        let written = match self.audit_line(lead, actor, event) {
            Ok((key, value)) => self
                .store
                .put(lead.fence(), &key, &value, Some(0))
                .await
                .map(|_| ())
                .map_err(ActError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// Records a certificate as revoked and applies it at once; false in
    /// the pair when it was revoked already.
    pub async fn revoke(
        &self,
        lead: &Lead,
        fingerprint: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(crate::fleet::revocation::Revocation, bool), ActError> {
        use crate::fleet::revocation::{key, Revocation};
        let key = key(fingerprint);
        if let Some(e) = self.store.get(&key).await? {
            if let Ok(r) = serde_json::from_slice::<Revocation>(&e.value) {
                self.revoked.insert(r.clone());
                return Ok((r, false));
            }
        }
        let r = Revocation {
            fingerprint: fingerprint.to_string(),
            reason: if reason.is_empty() {
                "no reason given".into()
            } else {
                reason.to_string()
            },
            by: actor.to_string(),
            at_ms: now_ms(),
        };
        self.store
            .put_bound(lead.fence(), &key, &serde_json::to_vec(&r)?)
            .await?;
        self.revoked.insert(r.clone());
        self.audit(
            lead,
            actor,
            format!("revoked certificate {fingerprint}: {}", r.reason),
        )
        .await;
        Ok((r, true))
    }
}
