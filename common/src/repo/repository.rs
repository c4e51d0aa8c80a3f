//! [`Repository`]: an opened repository, with its key, config and the merged
//! index, and the operations every command shares.

use super::blob::{self, BlobType};
use super::config::RepoConfig;
use super::index::{BlobLocation, IndexFile, MasterIndex};
use super::sealed;
use super::snapshot::Snapshot;
use super::tree::Tree;
use crate::crypto::{KdfParams, KeyFile, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::storage::{FileKind, Storage};
use bytes::Bytes;
use std::sync::{Arc, RwLock};

/// AAD that binds a sealed file to its kind.
pub fn file_aad(kind: FileKind) -> &'static [u8] {
    match kind {
        FileKind::Index => b"seawall index",
        FileKind::Snapshot => b"seawall snapshot",
        FileKind::Lock => b"seawall lock",
        _ => b"seawall file",
    }
}

/// An opened repository.
pub struct Repository {
    storage: Arc<dyn Storage>,
    key: MasterKey,
    config: RepoConfig,
    index: RwLock<MasterIndex>,
    /// The key file the password opened.
    key_file: String,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.storage.location())
    }
}

/// Most key files an open reads (each a small read: all of them are read
/// before any is tried, so the cheapest is tried first wherever it lists).
const MAX_KEY_FILES: usize = 1000;
/// Largest key file read (Seawall's are under 1 KiB).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The most Argon2 work one open spends over all key files it tries: 32
/// keys of Seawall's default cost (64 MiB, 3 passes), about 8 s.
const KDF_BUDGET: u64 = 32 * 64 * 1024 * 3;

impl Repository {
    /// Creates a new repository; refuses a location that already holds one.
    pub async fn init(storage: Arc<dyn Storage>, password: &[u8]) -> Result<Repository> {
        Self::init_with_kdf(storage, password, KdfParams::default_fresh()).await
    }

    /// [`Repository::init`] with explicit key-derivation parameters.
    pub async fn init_with_kdf(
        storage: Arc<dyn Storage>,
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<Repository> {
        if storage.size(FileKind::Config, "").await?.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "a repository already exists at {}; use it, or choose an empty location",
                    storage.location()
                ),
            ));
        }
        if password.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the repository password must not be empty",
            ));
        }
        storage.create().await?;
        let key = MasterKey::generate();
        let config = RepoConfig::fresh();
        let key_file = KeyFile::wrap(&key, password, kdf)?;
        let key_json = serde_json::to_vec_pretty(&key_file)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("encoding key file: {e}")))?;
        let key_file = Id::of_file(&key_json).to_hex();
        storage
            .write(FileKind::Key, &key_file, Bytes::from(key_json))
            .await?;
        let config_json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("encoding config: {e}")))?;
        // Config last: a location is a repository only once its key is stored.
        storage
            .write(FileKind::Config, "", Bytes::from(config_json))
            .await?;
        Ok(Repository {
            storage,
            key,
            config,
            index: RwLock::new(MasterIndex::default()),
            key_file,
        })
    }

    /// Opens a repository with a password; the index is not loaded yet.
    pub async fn open(storage: Arc<dyn Storage>, password: &[u8]) -> Result<Repository> {
        let config_bytes = storage.read(FileKind::Config, "").await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no repository at {}: run `seawall init --repo {}` first, or fix --repo",
                        storage.location(),
                        storage.location()
                    ),
                )
            } else {
                e
            }
        })?;
        let config = RepoConfig::parse(&config_bytes)?;
        let keys = storage.list(FileKind::Key).await?;
        if keys.is_empty() {
            return Err(Error::corrupt(format!(
                "repository at {} has no key files; restore keys/ from a replica",
                storage.location()
            )));
        }
        // Cheapest first, within a count and a work budget: key files
        // planted in keys/ asking for the most memory and passes cannot
        // make an open take minutes or gigabytes.
        let mut last_err = None;
        let mut candidates = Vec::new();
        let listed_count = keys.len();
        for listed in keys.into_iter().take(MAX_KEY_FILES) {
            if listed.size > MAX_KEY_FILE_BYTES {
                last_err = Some(Error::corrupt(format!(
                    "key file {} is {} bytes, not a key file: move it out of keys/",
                    listed.name, listed.size
                )));
                continue;
            }
            let data = storage.read(FileKind::Key, &listed.name).await?;
            match serde_json::from_slice::<KeyFile>(&data) {
                Ok(f) => candidates.push((f.kdf.cost(), listed.name, f)),
                Err(e) => {
                    last_err = Some(Error::corrupt(format!(
                        "key file {} does not parse: {e}",
                        listed.name
                    )))
                }
            }
        }
        candidates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut spent = 0u64;
        let mut untried = listed_count.saturating_sub(MAX_KEY_FILES);
        for (i, (cost, name, file)) in candidates.iter().enumerate() {
            if spent.saturating_add(*cost) > KDF_BUDGET {
                untried += candidates.len() - i;
                break;
            }
            spent = spent.saturating_add(*cost);
            let (file, kdf_password) = (file.clone(), password.to_vec());
            let attempt = tokio::task::spawn_blocking(move || file.unwrap_key(&kdf_password))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("key derivation stopped: {e}")))?;
            match attempt {
                Ok(key) => {
                    return Ok(Repository {
                        storage,
                        key,
                        config,
                        index: RwLock::new(MasterIndex::default()),
                        key_file: name.clone(),
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        let err = last_err.unwrap_or_else(|| Error::new(ErrorKind::WrongKey, "wrong password"));
        if untried > 0 {
            return Err(Error::new(
                err.kind(),
                format!(
                    "{err}; {untried} key file(s) of {listed_count} were not tried (at most {MAX_KEY_FILES} read, tried cheapest first within 32 default keys' work): remove key files you do not know from keys/"
                ),
            ));
        }
        Err(err)
    }

    /// The name of the key file the password opened.
    pub fn key_file(&self) -> &str {
        &self.key_file
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The repository's keys.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The repository's config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Reads and decrypts a sealed JSON file.
    pub async fn read_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        kind: FileKind,
        name: &str,
    ) -> Result<T> {
        let data = self.storage.read(kind, name).await?;
        let what = format!("{} {}", kind.dir(), name);
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || sealed::open_json(&key, file_aad(kind), &data, &what))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("decoding stopped: {e}")))?
    }

    /// Encrypts and stores a JSON file named by its content hash; returns the id.
    pub async fn write_json<T: serde::Serialize>(
        &self,
        kind: FileKind,
        value: &T,
    ) -> Result<(Id, u64)> {
        let data = sealed::seal_json(&self.key, file_aad(kind), value)?;
        let id = Id::of_file(&data);
        let len = data.len() as u64;
        self.storage
            .write(kind, &id.to_hex(), Bytes::from(data))
            .await?;
        Ok((id, len))
    }

    /// Loads every index file into memory, skipping superseded ones.
    pub async fn load_index(&self) -> Result<()> {
        let files = self.read_index_files().await?;
        let mut merged = MasterIndex::default();
        for (_, file) in &files {
            for pack in &file.packs {
                merged.add_pack(pack);
            }
        }
        *self.index.write().map_err(|_| poisoned())? = merged;
        Ok(())
    }

    /// Reads every live index file (those not superseded), with their ids.
    pub async fn read_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let listed = self.storage.list(FileKind::Index).await?;
        let mut files = Vec::with_capacity(listed.len());
        for l in listed {
            let id: Id = l.name.parse().map_err(|_| {
                Error::corrupt(format!("index/{} is not named by an id; remove it", l.name))
            })?;
            let file: IndexFile = self.read_json(FileKind::Index, &l.name).await.map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    e
                } else {
                    e.context(format!(
                        "cannot use index/{} (run `seawall repair index` to rebuild the index from the packs)",
                        l.name
                    ))
                }
            })?;
            files.push((id, file));
        }
        let superseded: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        files.retain(|(id, _)| !superseded.contains(id));
        Ok(files)
    }

    /// A read view of the merged index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, MasterIndex> {
        // A panic while holding the lock leaves a usable map; recover it.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds freshly written packs to the in-memory index.
    pub fn index_add(&self, pack: &super::index::IndexPack) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add_pack(pack);
    }

    /// Where a blob is stored, or a NotFound error naming it.
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.index().get(id).copied().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("blob {} is missing from the index: the repository is damaged (run `seawall verify`)", id.short()),
            )
        })
    }

    /// Loads, decrypts and checks one blob.
    pub async fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let sealed = self
            .storage
            .read_range(
                FileKind::Pack,
                &loc.pack.to_hex(),
                loc.offset as u64,
                loc.length as u64,
            )
            .await?;
        let key = self.key.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || {
            blob::decode(&key, loc.kind, &id, &sealed, loc.raw_length)
                .map_err(|e| e.context(format!("pack {}", loc.pack.short())))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("decoding stopped: {e}")))?
    }

    /// Loads and parses a tree blob.
    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        let loc = self.locate(id)?;
        if loc.kind != BlobType::Tree {
            return Err(Error::corrupt(format!("blob {} is not a tree", id.short())));
        }
        Tree::from_bytes(&self.load_blob(id).await?)
    }

    /// Every snapshot, oldest first. A damaged manifest is an error naming it.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let listed = self.storage.list(FileKind::Snapshot).await?;
        let mut out = Vec::with_capacity(listed.len());
        for l in listed {
            let Ok(id) = l.name.parse::<Id>() else {
                continue;
            };
            let snap: Snapshot =
                self.read_json(FileKind::Snapshot, &l.name)
                    .await
                    .map_err(|e| {
                        e.context(format!(
                            "snapshot {} cannot be read (`seawall forget {}` removes it)",
                            id.short(),
                            id.short()
                        ))
                    })?;
            out.push((id, snap));
        }
        out.sort_by_key(|(_, s)| s.time);
        Ok(out)
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest` (optionally among a source's).
    pub async fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let mut all = self.snapshots().await?;
            return all.pop().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "repository {} has no snapshots yet",
                        self.storage.location()
                    ),
                )
            });
        }
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{spec:?} is not a snapshot id; give `latest` or at least 4 hex digits from `seawall snapshots`"),
            ));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let listed = self.storage.list(FileKind::Snapshot).await?;
        let matches: Vec<_> = listed
            .iter()
            .filter(|l| l.name.starts_with(&spec_lower))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no snapshot {spec} in {}; list them with `seawall snapshots`",
                    self.storage.location()
                ),
            )),
            [one] => {
                let id: Id = one.name.parse().map_err(|_| {
                    Error::corrupt(format!("snapshots/{} is not named by an id", one.name))
                })?;
                let snap = self
                    .read_json(FileKind::Snapshot, &one.name)
                    .await
                    .map_err(|e| e.context(format!("snapshot {}", id.short())))?;
                Ok((id, snap))
            }
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("snapshot id {spec} is ambiguous; give more digits"),
            )),
        }
    }
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Io, "index lock poisoned by an earlier panic")
}
