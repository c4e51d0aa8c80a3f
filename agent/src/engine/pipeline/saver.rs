//! [`Saver`]: the stage after chunking. Callers on blocking threads hand it
//! plaintext blobs with their ids; it returns at once for a known blob, or
//! queues the blob for encoding. Queues are bounded, so a fast reader waits
//! for the encoders and the uploads: memory stays flat whatever the input.

use crate::engine::progress::Progress;
use crossbeam_channel::{bounded, Receiver, Sender};
use seawall_common::chunker::BufferPool;
use seawall_common::repo::index::{IndexFile, IndexPack};
use seawall_common::repo::pack::{FinishedPack, PackBuilder};
use seawall_common::repo::{blob, BlobType};
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// What the saver added to the repository.
#[derive(Debug, Default, Clone, Copy)]
pub struct SaverStats {
    /// Blobs newly stored.
    pub blobs_added: u64,
    /// Bytes of packs and index files written.
    pub bytes_added: u64,
    /// Packs written.
    pub packs: u64,
}

/// zstd level for tree blobs.
const TREE_LEVEL: i32 = 12;

struct Job {
    kind: BlobType,
    id: Id,
    data: Vec<u8>,
}

struct Shared {
    repo: Arc<Repository>,
    pool: Arc<BufferPool>,
    /// Pack buffers not in use. There are as many as packs may be in
    /// memory at once (the open one, one finished and waiting, those being
    /// written): taking one is what makes encoders wait for the uploads.
    pack_buffers: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    pack_capacity: usize,
    pending: Mutex<HashSet<Id>>,
    open_pack: Mutex<PackBuilder>,
    failure: Mutex<Option<Error>>,
    stats: Mutex<SaverStats>,
    progress: Arc<Progress>,
    level: i32,
}

impl Shared {
    fn fail(&self, err: Error) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
    }

    /// A pack buffer, waiting until an upload frees one; `None` once the
    /// saver has failed (an upload that failed frees none to wait for).
    fn pack_buffer(&self) -> Option<Vec<u8>> {
        loop {
            match self.pack_buffers.1.recv_timeout(Duration::from_millis(200)) {
                Ok(mut buf) => {
                    buf.clear();
                    buf.reserve_exact(self.pack_capacity);
                    return Some(buf);
                }
                Err(_) if self.check().is_err() => return None,
                Err(_) => {}
            }
        }
    }

    /// Gives a written pack's buffer back for the next pack.
    fn return_pack_buffer(&self, buf: Vec<u8>) {
        let _ = self.pack_buffers.0.try_send(buf);
    }

    fn check(&self) -> Result<()> {
        let slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(e) => Err(Error::new(e.kind(), e.message().to_string())),
            None => Ok(()),
        }
    }
}

/// Deduplicates, encodes, packs and uploads blobs.
pub struct Saver {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    encoders: Vec<std::thread::JoinHandle<()>>,
    packs_tx: Option<mpsc::Sender<FinishedPack>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    handle: Handle,
}

impl Saver {
    /// Starts `threads` encoders and an uploader running `uploads` packs at once.
    pub fn start(
        repo: Arc<Repository>,
        threads: usize,
        uploads: usize,
        level: i32,
        progress: Arc<Progress>,
        handle: Handle,
    ) -> Saver {
        let pack_size = repo.config().pack_size as usize;
        let uploads = uploads.clamp(1, repo.storage().writes_at_once().max(1));
        let threads = threads.max(1);
        let chunker = repo.config().chunker;
        // Enough for every chunk a reader, the queue and an encoder hold;
        // a rare long chunk's buffer is freed rather than kept.
        let pool = Arc::new(BufferPool::new(
            threads + 1,
            chunker.min as usize + 4 * chunker.avg as usize,
        ));
        let packs_in_memory = uploads + 2;
        let pack_buffers = bounded(packs_in_memory);
        // Allocated when first taken; the open pack takes the first.
        for _ in 1..packs_in_memory {
            let _ = pack_buffers.0.try_send(Vec::new());
        }
        let shared = Arc::new(Shared {
            repo,
            pool,
            pack_buffers,
            pack_capacity: pack_buffer(pack_size),
            pending: Mutex::new(HashSet::new()),
            open_pack: Mutex::new(PackBuilder::with_capacity(pack_buffer(pack_size))),
            failure: Mutex::new(None),
            stats: Mutex::new(SaverStats::default()),
            progress,
            level,
        });
        let (jobs_tx, jobs_rx) = bounded::<Job>(threads * 2);
        // The pack buffers bound how many packs wait; the queue never fills.
        let (packs_tx, packs_rx) = mpsc::channel::<FinishedPack>(packs_in_memory);
        let encoders = (0..threads)
            .map(|i| {
                let shared = shared.clone();
                let rx = jobs_rx.clone();
                let tx = packs_tx.clone();
                std::thread::Builder::new()
                    .name(format!("encode-{i}"))
                    .spawn(move || encode_loop(shared, rx, tx, pack_size))
            })
            .filter_map(|r| {
                r.map_err(|e| tracing::error!(error = %e, "cannot start encoder thread"))
                    .ok()
            })
            .collect();
        let uploader = handle.spawn(upload_loop(shared.clone(), packs_rx, uploads));
        Saver {
            shared,
            jobs: Some(jobs_tx),
            encoders,
            packs_tx: Some(packs_tx),
            uploader: Some(uploader),
            handle,
        }
    }

    /// Where chunk buffers come from and go back to.
    pub fn pool(&self) -> Arc<BufferPool> {
        self.shared.pool.clone()
    }

    /// The key that names blobs.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.shared.repo.key().blob_id(data)
    }

    /// Stores a blob unless the repository has it or it is already queued.
    /// Returns whether it was new. Blocks while the queues are full.
    pub fn save(&self, kind: BlobType, id: Id, data: Vec<u8>) -> Result<bool> {
        self.shared.check()?;
        if self.shared.repo.index().contains(&id)
            || !self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
        {
            self.shared.pool.give(data);
            return Ok(false);
        }
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Io, "saver already finished"))?;
        jobs.send(Job { kind, id, data }).map_err(|_| {
            self.shared
                .check()
                .err()
                .unwrap_or_else(|| Error::new(ErrorKind::Io, "encoder threads stopped"))
        })?;
        Ok(true)
    }

    /// Whether the repository or this run already holds a blob.
    pub fn has(&self, id: &Id) -> bool {
        self.shared.repo.index().contains(id)
            || self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id)
    }

    /// Flushes the last pack, waits for every upload and writes the final index.
    /// Call from a blocking thread.
    pub fn finish(mut self) -> Result<SaverStats> {
        drop(self.jobs.take());
        for t in self.encoders.drain(..) {
            let _ = t.join();
        }
        let last = std::mem::take(
            &mut *self
                .shared
                .open_pack
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if let Some(tx) = self.packs_tx.take() {
            if !last.is_empty() && self.shared.check().is_ok() {
                let finished = last.finish(self.shared.repo.key());
                let _ = tx.blocking_send(finished);
            }
        }
        if let Some(uploader) = self.uploader.take() {
            let _ = self.handle.block_on(uploader);
        }
        self.shared.check()?;
        Ok(*self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        drop(self.jobs.take());
        drop(self.packs_tx.take());
    }
}

/// Room for a pack (its last blob may overshoot the size by a chunk) and
/// never less than 33 MiB: glibc's allocator serves a block above 32 MiB
/// from its own mapping and unmaps it when freed, where a smaller one,
/// once freed, raises its threshold and is kept in a thread's arena. Only
/// the bytes written take memory.
fn pack_buffer(pack_size: usize) -> usize {
    (pack_size + pack_size / 4).max(33 << 20)
}

fn encode_loop(
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    packs: mpsc::Sender<FinishedPack>,
    pack_size: usize,
) {
    let key = shared.repo.key().clone();
    let mut scratch = blob::EncodeScratch::default();
    for job in jobs {
        // Trees are small and rewritten on every change below them: squeeze them harder.
        let level = match job.kind {
            BlobType::Tree => shared.level.max(TREE_LEVEL),
            BlobType::Data => shared.level,
        };
        let sealed = blob::encode_into(&key, job.kind, &job.id, &job.data, level, &mut scratch);
        let raw_length = job.data.len() as u32;
        let full = {
            let mut open = shared.open_pack.lock().unwrap_or_else(|p| p.into_inner());
            open.add(job.kind, job.id, sealed, raw_length);
            if open.len() >= pack_size {
                // Waits, holding the full pack, until an upload frees a
                // buffer: the other encoders wait on the lock meanwhile.
                let Some(buf) = shared.pack_buffer() else {
                    return;
                };
                Some(std::mem::replace(&mut *open, PackBuilder::in_buffer(buf)))
            } else {
                None
            }
        };
        shared.pool.give(job.data);
        if let Some(pack) = full {
            let finished = pack.finish(&key);
            if packs.blocking_send(finished).is_err() {
                shared.fail(Error::new(ErrorKind::Io, "pack uploader stopped"));
                return;
            }
        }
    }
}

/// Index records of uploaded packs, written out every few packs so that an
/// interrupted backup's packs are found and reused by the next run.
struct IndexBatch {
    packs: Vec<IndexPack>,
    since: Instant,
}

const INDEX_EVERY_PACKS: usize = 8;
const INDEX_EVERY: Duration = Duration::from_secs(10);

async fn upload_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<FinishedPack>, uploads: usize) {
    let mut running = tokio::task::JoinSet::new();
    let mut batch = IndexBatch {
        packs: Vec::new(),
        since: Instant::now(),
    };
    loop {
        tokio::select! {
            next = rx.recv(), if running.len() < uploads => match next {
                Some(pack) => {
                    let shared = shared.clone();
                    running.spawn(async move { upload_one(&shared, pack).await });
                }
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                record(&shared, &mut batch, done).await;
            }
        }
    }
    while let Some(done) = running.join_next().await {
        record(&shared, &mut batch, done).await;
    }
    if !batch.packs.is_empty() {
        flush_index(&shared, &mut batch).await;
    }
}

async fn upload_one(shared: &Shared, pack: FinishedPack) -> Result<IndexPack> {
    let size = pack.bytes.len() as u64;
    let record = IndexPack::from_entries(pack.id, size, &pack.entries);
    let bytes = bytes::Bytes::from(pack.bytes);
    let written = shared
        .repo
        .storage()
        .write(FileKind::Pack, &pack.id.to_hex(), bytes.clone())
        .await;
    // The buffer goes back whatever happened, so no encoder waits for it
    // in vain; if storage still holds a reference, a new one is made.
    shared.return_pack_buffer(bytes.try_into_mut().map(Vec::from).unwrap_or_default());
    written.map_err(|e| e.context(format!("uploading pack {}", pack.id.short())))?;
    Ok(record)
}

async fn record(
    shared: &Shared,
    batch: &mut IndexBatch,
    done: std::result::Result<Result<IndexPack>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok(pack)) => {
            shared.repo.index_add(&pack);
            {
                let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                for b in &pack.blobs {
                    pending.remove(&b.id);
                }
            }
            {
                let mut stats = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
                stats.blobs_added += pack.blobs.len() as u64;
                stats.bytes_added += pack.size;
                stats.packs += 1;
            }
            Progress::add(&shared.progress.bytes_added, pack.size);
            batch.packs.push(pack);
            if batch.packs.len() >= INDEX_EVERY_PACKS || batch.since.elapsed() >= INDEX_EVERY {
                flush_index(shared, batch).await;
            }
        }
        Ok(Err(e)) => shared.fail(e),
        Err(e) => shared.fail(Error::new(
            ErrorKind::Io,
            format!("upload task failed: {e}"),
        )),
    }
}

async fn flush_index(shared: &Shared, batch: &mut IndexBatch) {
    let file = IndexFile {
        supersedes: vec![],
        packs: std::mem::take(&mut batch.packs),
    };
    batch.since = Instant::now();
    match shared.repo.write_json(FileKind::Index, &file).await {
        Ok((_, len)) => {
            shared
                .stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .bytes_added += len;
            Progress::add(&shared.progress.bytes_added, len);
        }
        Err(e) => shared.fail(e.context("writing index")),
    }
}
