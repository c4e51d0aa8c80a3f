//! Failover records in the store: read, listed, and written fenced by the
//! leader's epoch with an audit line.

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::failover::{key, FailoverRecord, PREFIX};

/// Loads failover `id` with its revision.
pub async fn load(
    coord: &Coordinator,
    id: &str,
) -> Result<Option<(FailoverRecord, i64)>, ActError> {
    crate::store::json::load_json(coord.store.as_ref(), &key(id)).await
}

/// Every failover, newest first.
pub async fn all(coord: &Coordinator) -> Result<Vec<FailoverRecord>, ActError> {
    let mut out: Vec<FailoverRecord> = crate::store::json::list_json(coord.store.as_ref(), PREFIX)
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    out.sort_by_key(|f| std::cmp::Reverse(f.started_unix_ms));
    Ok(out)
}

/// Writes `f` if it is still at `rev`, with an audit line and `extra`
/// keys in the same transaction; the new revision.
pub async fn save(
    coord: &Coordinator,
    lead: &Lead,
    f: &FailoverRecord,
    rev: i64,
    event: Option<String>,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<i64, ActError> {
    let mut extra = extra;
    if let Some(event) = event {
        let entry = crate::model::records::AuditEntry {
            at_ms: now_ms(),
            epoch: lead.fence().epoch,
            replica: coord.me.id.clone(),
            actor: "failover".into(),
            event,
        };
        extra.push((
            format!("audit/{:013}-{:08x}", entry.at_ms, rand::random::<u32>()),
            serde_json::to_vec(&entry)?,
        ));
    }
    let value = serde_json::to_vec(f)?;
    Ok(coord
        .store
        .put_with(lead.fence(), &key(&f.id), &value, Some(rev), &extra)
        .await?)
}
