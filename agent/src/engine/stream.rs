//! Byte streams (dumps, base backups, RDBs) into and out of the repository.
//! A stream is chunked, deduplicated and recorded with the SHA-256 of its
//! whole content; reading it back checks that hash, so a restore never
//! hands a database a stream that differs from what was backed up.

use crate::engine::pipeline::{Saver, SaverStats};
use crate::engine::progress::Progress;
use seawall_common::chunker::{chunks_pooled, ChunkerParams};
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::snapshot::{BackupSummary, BackupType, Origin, Snapshot, Stream};
use seawall_common::repo::BlobType;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Blobs fetched ahead of the one being written.
const PREFETCH: usize = 8;

/// Chunks `reader` into the repository through `saver` (call on a blocking thread).
pub fn save_stream<R: Read>(
    name: &str,
    reader: R,
    saver: &Saver,
    params: ChunkerParams,
    progress: &Progress,
) -> Result<Stream> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut content = Vec::new();
    for chunk in chunks_pooled(reader, params, saver.pool()) {
        let chunk = chunk.map_err(|e| Error::io(format!("reading stream {name}"), e))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        Progress::add(&progress.bytes_done, chunk.len() as u64);
        let id = saver.blob_id(&chunk);
        saver.save(BlobType::Data, id, chunk)?;
        content.push(id);
    }
    Ok(Stream {
        name: name.to_string(),
        size,
        sha256: String::new(),
        blake3: hasher.finalize().to_hex().to_string(),
        content,
    })
}

/// The whole-stream digest a stream was written with.
enum StreamDigest {
    Blake3(Box<blake3::Hasher>),
    Sha256(Sha256),
}

impl StreamDigest {
    /// The digest to check `stream` with, or why it has none.
    fn of(stream: &Stream) -> Result<(StreamDigest, &'static str, String)> {
        if !stream.blake3.is_empty() {
            Ok((
                StreamDigest::Blake3(Box::default()),
                "BLAKE3",
                stream.blake3.clone(),
            ))
        } else if !stream.sha256.is_empty() {
            Ok((
                StreamDigest::Sha256(Sha256::new()),
                "SHA-256",
                stream.sha256.clone(),
            ))
        } else {
            Err(Error::corrupt(format!(
                "stream {} records no digest: its snapshot manifest is damaged",
                stream.name
            )))
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            StreamDigest::Blake3(h) => {
                h.update(data);
            }
            StreamDigest::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            StreamDigest::Blake3(h) => h.finalize().to_hex().to_string(),
            StreamDigest::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Reads a stream's blobs in order, a few ahead, ending with an error if
/// the whole does not match its recorded digest.
pub fn open_stream(repo: Arc<Repository>, stream: Stream) -> mpsc::Receiver<Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let (mut hasher, algorithm, recorded) = match StreamDigest::of(&stream) {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut size = 0u64;
        let mut queue = VecDeque::new();
        let mut ids = stream.content.iter();
        loop {
            while queue.len() < PREFETCH {
                let Some(id) = ids.next() else { break };
                let (repo, id) = (repo.clone(), *id);
                queue.push_back(tokio::spawn(async move { repo.load_blob(&id).await }));
            }
            let Some(next) = queue.pop_front() else { break };
            let blob = match next.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    let _ = tx
                        .send(Err(e.context(format!("stream {}", stream.name))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Error::new(
                            ErrorKind::Io,
                            format!("blob load stopped: {e}"),
                        )))
                        .await;
                    return;
                }
            };
            hasher.update(&blob);
            size += blob.len() as u64;
            if tx.send(Ok(blob)).await.is_err() {
                return;
            }
        }
        let digest = hasher.finish();
        if size != stream.size || digest != recorded {
            let _ = tx
                .send(Err(Error::corrupt(format!(
                    "stream {} read back as {size} bytes with {algorithm} {digest}, but {} bytes with {recorded} were backed up: the repository is damaged (run `seawall verify --read-data`)",
                    stream.name, stream.size
                ))))
                .await;
        }
    });
    rx
}

/// Writes a whole stream to `out`; returns the bytes written.
pub async fn write_stream<W: AsyncWrite + Unpin>(
    repo: Arc<Repository>,
    stream: &Stream,
    out: &mut W,
    progress: &Progress,
) -> Result<u64> {
    let mut rx = open_stream(repo, stream.clone());
    let mut written = 0u64;
    while let Some(part) = rx.recv().await {
        let part = part?;
        out.write_all(&part)
            .await
            .map_err(|e| Error::io(format!("writing stream {}", stream.name), e))?;
        written += part.len() as u64;
        Progress::add(&progress.bytes_done, part.len() as u64);
    }
    out.flush()
        .await
        .map_err(|e| Error::io(format!("writing stream {}", stream.name), e))?;
    Ok(written)
}

/// Pieces arriving on a channel, read through the blocking [`Read`] API.
struct Pieces<E> {
    rx: mpsc::Receiver<std::result::Result<Vec<u8>, E>>,
    current: Vec<u8>,
    pos: usize,
}

impl<E: std::fmt::Display> Pieces<E> {
    fn new(rx: mpsc::Receiver<std::result::Result<Vec<u8>, E>>) -> Self {
        Pieces {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => {
                    self.current = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking [`Read`] over a stream, for consumers such as a tar reader
/// that run on their own thread.
pub struct StreamReader {
    pieces: Pieces<Error>,
    progress: Arc<Progress>,
}

impl StreamReader {
    /// Starts reading `stream` (call from within the runtime).
    pub fn new(repo: Arc<Repository>, stream: Stream, progress: Arc<Progress>) -> StreamReader {
        StreamReader {
            pieces: Pieces::new(open_stream(repo, stream)),
            progress,
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pieces.read(buf)?;
        Progress::add(&self.progress.bytes_done, n as u64);
        Ok(n)
    }
}

/// A backup made of streams: holds the shared lock and the saver until
/// [`StreamBackup::commit`] writes the manifest.
pub struct StreamBackup {
    repo: Arc<Repository>,
    lock: Option<RepoLock>,
    saver: Option<Arc<Saver>>,
    started: Instant,
    time: chrono::DateTime<chrono::Utc>,
    progress: Arc<Progress>,
    origin: Origin,
}

/// How a stream backup is stored.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Encoder threads.
    pub threads: usize,
    /// Packs uploaded at once.
    pub uploads: usize,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// The agent and region recorded in the manifest.
    pub origin: Origin,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            uploads: 4,
            compression_level: 1,
            lock_wait: Duration::from_secs(60),
            origin: Origin::default(),
        }
    }
}

/// What goes into the manifest besides the streams.
#[derive(Debug, Clone)]
pub struct StreamManifest {
    /// Source kind ("postgres", "redis").
    pub source: String,
    /// The source's identity (server, databases).
    pub paths: Vec<String>,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Facts about the source.
    pub facts: BTreeMap<String, serde_json::Value>,
}

impl StreamBackup {
    /// Takes the shared lock, loads the index and starts the saver.
    pub async fn begin(
        repo: Arc<Repository>,
        settings: StreamSettings,
        progress: Arc<Progress>,
    ) -> Result<StreamBackup> {
        let started = Instant::now();
        let time = chrono::Utc::now();
        let lock = RepoLock::acquire(repo.clone(), false, "backup", settings.lock_wait).await?;
        if let Err(e) = repo.load_index().await {
            let _ = lock.release().await;
            return Err(e);
        }
        let saver = Saver::start(
            repo.clone(),
            settings.threads,
            settings.uploads,
            settings.compression_level,
            progress.clone(),
            Handle::current(),
        );
        Ok(StreamBackup {
            repo,
            lock: Some(lock),
            saver: Some(Arc::new(saver)),
            started,
            time,
            progress,
            origin: settings.origin,
        })
    }

    /// The saver streams go through (hand it to blocking threads).
    pub fn saver(&self) -> Result<Arc<Saver>> {
        self.saver
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Io, "backup already committed"))
    }

    /// The repository's chunker settings.
    pub fn params(&self) -> ChunkerParams {
        self.repo.config().chunker
    }

    /// Shared progress counters.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Flushes every blob; only then writes the manifest. Any earlier
    /// failure (`outcome`) leaves no snapshot.
    pub async fn commit(
        mut self,
        outcome: Result<(Vec<Stream>, StreamManifest)>,
    ) -> Result<(Id, Snapshot)> {
        let saver = self.saver.take();
        let stats = tokio::task::spawn_blocking(move || match saver.map(Arc::try_unwrap) {
            Some(Ok(s)) => s.finish(),
            Some(Err(_)) => Err(Error::new(ErrorKind::Io, "saver still in use at commit")),
            None => Ok(SaverStats::default()),
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("saver stopped: {e}")));
        let result = self.write_manifest(outcome, stats).await;
        let released = match self.lock.take() {
            Some(l) => l.release().await,
            None => Ok(()),
        };
        let out = result?;
        released?;
        Ok(out)
    }

    async fn write_manifest(
        &self,
        outcome: Result<(Vec<Stream>, StreamManifest)>,
        stats: Result<Result<SaverStats>>,
    ) -> Result<(Id, Snapshot)> {
        let (streams, manifest) = outcome?;
        let stats = stats??;
        let bytes_total = streams.iter().map(|s| s.size).sum();
        let mut snapshot = Snapshot {
            time: self.time,
            end_time: chrono::Utc::now(),
            hostname: seawall_common::repo::hostname(),
            source: manifest.source,
            paths: manifest.paths,
            tags: manifest.tags,
            region: self.origin.region.clone(),
            agent: self.origin.agent.clone(),
            backup_type: BackupType::Full,
            parent: None,
            excludes: vec![],
            tree: None,
            streams,
            facts: manifest.facts,
            summary: BackupSummary {
                bytes_read: bytes_total,
                bytes_total,
                blobs_added: stats.blobs_added,
                bytes_added: stats.bytes_added,
                duration_secs: self.started.elapsed().as_secs_f64(),
                ..BackupSummary::default()
            },
        };
        // The commit point: only while the lock still protects the packs.
        if let Some(lock) = &self.lock {
            lock.check()?;
        }
        let (id, len) = self.repo.write_json(FileKind::Snapshot, &snapshot).await?;
        crate::engine::record_in_head(&self.repo, id, snapshot.time).await;
        snapshot.summary.bytes_added += len;
        Ok((id, snapshot))
    }
}

impl Drop for StreamBackup {
    fn drop(&mut self) {
        if self.lock.is_some() {
            tracing::debug!("stream backup dropped before commit; its lock expires on its own");
        }
    }
}

/// A blocking [`Read`] over an async reader, for the chunker's thread: a
/// task reads ahead in 1 MiB pieces through a small bounded channel.
pub struct BlockingReader {
    pieces: Pieces<std::io::Error>,
}

impl BlockingReader {
    /// Starts reading `reader` (call from within the runtime).
    pub fn new<R: tokio::io::AsyncRead + Unpin + Send + 'static>(mut reader: R) -> BlockingReader {
        use tokio::io::AsyncReadExt;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut filled = 0;
                // Fill the piece, so the chunker sees few large reads.
                while filled < buf.len() {
                    match reader.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                if tx.send(Ok(buf)).await.is_err() {
                    return;
                }
            }
        });
        BlockingReader {
            pieces: Pieces::new(rx),
        }
    }
}

impl Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.pieces.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(sha256: &str, blake3: &str) -> Stream {
        Stream {
            name: "db/app".into(),
            size: 3,
            sha256: sha256.into(),
            blake3: blake3.into(),
            content: vec![],
        }
    }

    #[test]
    fn a_stream_is_checked_with_the_digest_it_was_written_with() {
        // Written before BLAKE3: SHA-256 of "abc".
        let old = stream(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "",
        );
        let (mut d, algorithm, recorded) = StreamDigest::of(&old).unwrap();
        d.update(b"abc");
        assert_eq!((algorithm, d.finish()), ("SHA-256", recorded));

        let new = stream("", &blake3::hash(b"abc").to_hex());
        let (mut d, algorithm, recorded) = StreamDigest::of(&new).unwrap();
        d.update(b"ab");
        d.update(b"c");
        assert_eq!((algorithm, d.finish()), ("BLAKE3", recorded));

        let none = StreamDigest::of(&stream("", "")).err().unwrap();
        assert!(none.to_string().contains("records no digest"));
    }
}
