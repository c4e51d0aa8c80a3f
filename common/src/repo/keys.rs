//! Passwords of a repository: each is a key file wrapping the same master
//! key, so adding, removing or changing a password writes or deletes one
//! small file and rewrites no data.

use super::repository::Repository;
use crate::crypto::{KdfParams, KeyFile};
use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::storage::FileKind;
use bytes::Bytes;
use serde::Serialize;

/// One key file, as `key list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// The key file's name (the hash of its bytes).
    pub id: String,
    /// When it was added.
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// Host that added it.
    pub hostname: String,
    /// Whether the password in use opened this one.
    pub current: bool,
}

impl Repository {
    /// Every key file, oldest first; one that does not parse is listed
    /// with what can be known.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut keys = Vec::new();
        for listed in self.storage().list(FileKind::Key).await? {
            let data = self.storage().read(FileKind::Key, &listed.name).await?;
            let parsed = serde_json::from_slice::<KeyFile>(&data).ok();
            keys.push(KeyInfo {
                current: listed.name == self.key_file(),
                created: parsed.as_ref().map(|k| k.created),
                hostname: parsed
                    .map(|k| k.hostname)
                    .unwrap_or_else(|| "(unreadable)".into()),
                id: listed.name,
            });
        }
        keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Adds a password; returns its key file's name.
    pub async fn add_key(&self, password: &[u8]) -> Result<String> {
        if password.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the new password must not be empty",
            ));
        }
        let master = self.key().clone();
        let password = password.to_vec();
        let file = tokio::task::spawn_blocking(move || {
            KeyFile::wrap(&master, &password, KdfParams::default_fresh())
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("key derivation stopped: {e}")))??;
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("encoding key file: {e}")))?;
        let name = Id::of_file(&json).to_hex();
        self.storage()
            .write(FileKind::Key, &name, Bytes::from(json))
            .await?;
        Ok(name)
    }

    /// Removes the key file whose name starts with `prefix`. The key in use
    /// and the last key are refused: either would lock everyone out.
    pub async fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys().await?;
        let matching: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let key = match matching.as_slice() {
            [one] if prefix.len() >= 4 => *one,
            [] => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no key {prefix:?}: `seawall key list` shows them"),
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("key id {prefix:?} is ambiguous or too short: give at least 4 digits that name one key"),
                ))
            }
        };
        if keys.len() == 1 {
            return Err(Error::new(
                ErrorKind::Conflict,
                "that is the repository's last key: removing it would make the repository unreadable; add another first",
            ));
        }
        if key.current {
            return Err(Error::new(
                ErrorKind::Conflict,
                "that key is the one the given password opened: remove it with another password (or use `seawall key passwd`)",
            ));
        }
        self.storage().remove(FileKind::Key, &key.id).await?;
        Ok(key.id.clone())
    }

    /// Changes the password in use: adds the new one, then removes the key
    /// the old one opened. Returns the new key file's name.
    pub async fn change_password(&self, new_password: &[u8]) -> Result<String> {
        let added = self.add_key(new_password).await?;
        self.storage()
            .remove(FileKind::Key, self.key_file())
            .await?;
        Ok(added)
    }
}
