//! The drill journal: one record per drill (`drills/<id>`) in the store,
//! written fenced by the leader's epoch with an audit line at its start
//! and end, read by any replica.

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::records::AuditEntry;
use seawall_proto::v1::Drill;

/// Store prefix of the records.
pub const PREFIX: &str = "drills/";

/// A drill that has not finished.
pub const RUNNING: &str = "running";
/// A drill with its verdict.
pub const FINISHED: &str = "finished";

/// The key of drill `id`.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// Loads drill `id` with its revision.
pub async fn load(coord: &Coordinator, id: &str) -> Result<Option<(Drill, i64)>, ActError> {
    crate::store::json::load_json(coord.store.as_ref(), &key(id)).await
}

/// Every drill with its revision, newest first.
pub async fn all_with_revisions(coord: &Coordinator) -> Result<Vec<(Drill, i64)>, ActError> {
    let mut out: Vec<(Drill, i64)> =
        crate::store::json::list_json(coord.store.as_ref(), PREFIX).await?;
    out.sort_by_key(|(d, _)| std::cmp::Reverse(d.started_unix_ms));
    Ok(out)
}

/// Every drill, newest first.
pub async fn all(coord: &Coordinator) -> Result<Vec<Drill>, ActError> {
    Ok(all_with_revisions(coord)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect())
}

/// Writes `d` if it is still at `rev` (0: only if absent), with an audit
/// line when `event` is given; the new revision.
pub async fn save(
    coord: &Coordinator,
    lead: &Lead,
    d: &Drill,
    rev: i64,
    event: Option<String>,
) -> Result<i64, ActError> {
    let mut extra = Vec::new();
    if let Some(event) = event {
        let entry = AuditEntry {
            at_ms: now_ms(),
            epoch: lead.fence().epoch,
            replica: coord.me.id.clone(),
            actor: "drill".into(),
            event,
        };
        extra.push((
            format!("audit/{:013}-{:08x}", entry.at_ms, rand::random::<u32>()),
            serde_json::to_vec(&entry)?,
        ));
    }
    let value = serde_json::to_vec(d)?;
    Ok(coord
        .store
        .put_with(lead.fence(), &key(&d.id), &value, Some(rev), &extra)
        .await?)
}
