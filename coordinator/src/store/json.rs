//! JSON records in the store: one read with its revision, or every record
//! under a prefix.

/// A JSON record and its revision, `None` when the key is absent.
pub async fn load_json<T: serde::de::DeserializeOwned>(
    store: &dyn super::StateStore,
    key: &str,
) -> Result<Option<(T, i64)>, crate::model::error::ActError> {
    Ok(match store.get(key).await? {
        Some(e) => Some((serde_json::from_slice(&e.value)?, e.revision)),
        None => None,
    })
}

/// Every JSON record under `prefix` that reads, with its revision (one
/// written by a newer version that does not read is left out).
pub async fn list_json<T: serde::de::DeserializeOwned>(
    store: &dyn super::StateStore,
    prefix: &str,
) -> Result<Vec<(T, i64)>, crate::model::error::ActError> {
    Ok(store
        .list(prefix)
        .await?
        .iter()
        .filter_map(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision)))
        .collect())
}
