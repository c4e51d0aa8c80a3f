//! `wal-push` (PostgreSQL's `archive_command`) and `wal-fetch` (its
//! `restore_command`). Each call is a new process, so the costly part,
//! opening the repository, is shared: a push also archives the other
//! segments PostgreSQL has marked ready, and a fetch also fetches the next
//! segments; the spool remembers both. A push reports success only after
//! the file is stored, so a failure leaves the segment with PostgreSQL.

use super::archive::{PushOutcome, WalArchive};
use super::spool::Spool;
use super::walname::{WalKind, WalName};
use seawall_common::{Error, ErrorKind, Repository, Result};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tuning of `wal-push`.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Spool root.
    pub spool: PathBuf,
    /// Most files archived per call, the asked one included.
    pub batch: usize,
    /// Files archived at once.
    pub parallel: usize,
}

/// What a push call did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    /// The asked file was archived by an earlier batch.
    pub from_spool: bool,
    /// Files stored now.
    pub stored: Vec<String>,
    /// Files that were already archived with the same content.
    pub already: Vec<String>,
    /// Ready files that could not be archived ahead (PostgreSQL will ask again).
    pub deferred: Vec<String>,
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} does not name a WAL file", path.display()),
            )
        })
}

/// Archives the WAL file at `path` (as `%p` gives it), and other ready ones.
pub async fn wal_push<F, Fut>(open: F, path: &Path, opts: &PushOptions) -> Result<PushReport>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<Repository>>>,
{
    let file = file_name(path)?;
    let name = WalName::parse(&file)?;
    let wal_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let spool = Spool::open(&opts.spool, &wal_dir)?;
    let mut report = PushReport::default();
    if spool.take_pushed(&file) {
        report.from_spool = true;
        return Ok(report);
    }
    let result = push_batch(open, &name, path, &wal_dir, &spool, opts, &mut report).await;
    spool.record(
        &file,
        result.as_ref().err().map(|e| e.to_string()).as_deref(),
    );
    spool.tidy("");
    result.map(|_| report)
}

async fn push_batch<F, Fut>(
    open: F,
    name: &WalName,
    path: &Path,
    wal_dir: &Path,
    spool: &Spool,
    opts: &PushOptions,
    report: &mut PushReport,
) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<Repository>>>,
{
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let archive = Arc::new(WalArchive::new(open().await?));
    match archive.push(name, data).await? {
        PushOutcome::Stored => report.stored.push(name.file.clone()),
        PushOutcome::AlreadyStored => report.already.push(name.file.clone()),
    }
    let ahead = ready_files(wal_dir, &name.file, opts.batch.saturating_sub(1));
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = ahead.into_iter();
    loop {
        while tasks.len() < opts.parallel.max(1) {
            let Some(next) = pending.next() else { break };
            let archive = archive.clone();
            let file_path = wal_dir.join(&next.file);
            tasks.spawn(async move {
                let result = match tokio::fs::read(&file_path).await {
                    Ok(data) => archive.push(&next, data).await,
                    Err(e) => Err(Error::io(file_path.display(), e)),
                };
                (next, result)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let Ok((next, result)) = done else { continue };
        match result {
            Ok(outcome) => {
                if spool.mark_pushed(&next.file).is_ok() {
                    match outcome {
                        PushOutcome::Stored => report.stored.push(next.file),
                        PushOutcome::AlreadyStored => report.already.push(next.file),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(file = %next, error = %e, "could not archive ahead; PostgreSQL will ask again");
                report.deferred.push(next.file);
            }
        }
    }
    Ok(())
}

/// Files PostgreSQL has marked ready for archiving, oldest first, except `skip`.
fn ready_files(wal_dir: &Path, skip: &str, most: usize) -> Vec<WalName> {
    let Ok(entries) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return vec![];
    };
    let mut names: Vec<WalName> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            (n != skip).then(|| WalName::parse(&n).ok()).flatten()
        })
        .collect();
    // History files first: recovery needs them before the segments of their timeline.
    names.sort_by(|a, b| {
        (a.kind != WalKind::History, &a.file).cmp(&(b.kind != WalKind::History, &b.file))
    });
    names.truncate(most);
    names
}

/// Tuning of `wal-fetch`.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Spool root.
    pub spool: PathBuf,
    /// Segments fetched ahead.
    pub prefetch: usize,
}

/// Fetches archived WAL file `file` (as `%f` gives it) to `dest` (`%p`).
/// Returns false when the archive does not have it.
pub async fn wal_fetch<F, Fut>(
    open: F,
    file: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<bool>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<Repository>>>,
{
    let name = WalName::parse(file)?;
    let wal_dir = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let spool = Spool::open(&opts.spool, &wal_dir)?;
    spool.tidy(file);
    if let Some(data) = spool.take_prefetched(file)? {
        write_atomic(dest, &data)?;
        return Ok(true);
    }
    let archive = Arc::new(WalArchive::new(open().await?));
    let mut ahead = tokio::task::JoinSet::new();
    if name.kind == WalKind::Segment && opts.prefetch > 0 {
        let seg_size = archive
            .binding()
            .await?
            .map(|b| b.segment_size)
            .unwrap_or(16 * 1024 * 1024);
        let segno = name.segno(seg_size);
        for i in 1..=opts.prefetch as u64 {
            let next = WalName::segment(name.timeline, segno + i, seg_size);
            if spool.has_prefetched(&next.file) {
                continue;
            }
            let archive = archive.clone();
            ahead.spawn(async move {
                let data = archive.fetch(&next).await;
                (next, data)
            });
        }
    }
    let mut found = archive.fetch(&name).await?;
    if found.is_none() && name.kind == WalKind::Segment {
        // Streamed WAL: the segment still being written when the source was
        // lost. Recovery replays its valid records, then ends there.
        let partial = WalName::parse(&format!("{file}.partial"))?;
        found = archive.fetch(&partial).await?;
    }
    while let Some(done) = ahead.join_next().await {
        if let Ok((next, Ok(Some(data)))) = done {
            let _ = spool.store_prefetched(&next.file, &data);
        }
    }
    match found {
        Some(data) => {
            write_atomic(dest, &data)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".seawall-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
    f.write_all(data).map_err(|e| Error::io(tmp.display(), e))?;
    f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest.display(), e))
}
