//! `wal-stream`: WAL streamed by `pg_receivewal` over a replication slot
//! into a local staging directory, and from there into the archive: each
//! completed segment as soon as it closes, and the segment still being
//! written (`.partial`) every few seconds. Recovery uses the partial
//! segment when the full one is missing, so the RPO is those few seconds,
//! not a whole segment or `archive_timeout`.

use super::archive::WalArchive;
use super::tools::{tail, PgTools};
use super::walname::{WalKind, WalName};
use seawall_common::{Error, ErrorKind, Repository, Result};
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncReadExt;

/// How `wal-stream` runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Connection string (a replication connection is made from it).
    pub dsn: String,
    /// Local staging directory for pg_receivewal.
    pub dir: PathBuf,
    /// Replication slot, created if absent, so the server keeps WAL while we are away.
    pub slot: String,
    /// How often the segment being written is archived.
    pub partial_every: Duration,
    /// Where the PostgreSQL programs are.
    pub tools: PgTools,
}

/// Counters of a streaming run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStats {
    /// Completed segments archived.
    pub segments: u64,
    /// Partial uploads.
    pub partials: u64,
}

/// Streams WAL until `stop` resolves, then archives what is left and returns.
pub async fn stream_wal(
    repo: Arc<Repository>,
    opts: StreamOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<StreamStats> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&opts.dir)
        .map_err(|e| Error::io(opts.dir.display(), e))?;
    let mut create = opts.tools.async_command("pg_receivewal")?;
    super::conn::pass_dsn_async(&mut create, &opts.dsn);
    create
        .arg(format!("--slot={}", opts.slot))
        .args(["--create-slot", "--if-not-exists"]);
    super::tools::output(create, "pg_receivewal --create-slot").await?;

    let mut cmd = opts.tools.async_command("pg_receivewal")?;
    super::conn::pass_dsn_async(&mut cmd, &opts.dsn);
    cmd.arg(format!("--slot={}", opts.slot))
        .arg(format!("--directory={}", opts.dir.display()))
        .arg("--synchronous")
        .arg("--no-password")
        .stdout(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("starting pg_receivewal", e))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, "pg_receivewal has no stderr"))?;
    let said = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf).await;
        buf
    });
    let archive = WalArchive::new(repo);
    let mut stats = StreamStats::default();
    let mut shipped: HashMap<String, SystemTime> = HashMap::new();
    let mut last_partial = Instant::now();
    tokio::pin!(stop);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            status = child.wait() => {
                let status = status.map_err(|e| Error::io("waiting for pg_receivewal", e))?;
                let text = said.await.unwrap_or_default();
                // Archive what arrived before it stopped.
                let _ = ship(&archive, &opts.dir, &mut shipped, true, &mut stats).await;
                return Err(Error::new(
                    ErrorKind::Unreachable,
                    format!("pg_receivewal stopped ({status}): {}", tail(&text)),
                ));
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let partial = last_partial.elapsed() >= opts.partial_every;
        match ship(&archive, &opts.dir, &mut shipped, partial, &mut stats).await {
            Ok(()) => {
                failures = 0;
                if partial {
                    last_partial = Instant::now();
                }
            }
            Err(e) => {
                failures += 1;
                // Local files stay until archived; the slot keeps the rest on the server.
                tracing::error!(error = %e, failures, "cannot archive streamed WAL; will retry");
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(30)))).await;
            }
        }
    }
    // Graceful stop: pg_receivewal flushes on SIGTERM; then archive the rest.
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    ship(&archive, &opts.dir, &mut shipped, true, &mut stats).await?;
    Ok(stats)
}

/// Archives completed files (and, when asked, the partial one); keeps the
/// newest completed segment locally, which pg_receivewal uses to resume.
async fn ship(
    archive: &WalArchive,
    dir: &Path,
    shipped: &mut HashMap<String, SystemTime>,
    partial: bool,
    stats: &mut StreamStats,
) -> Result<()> {
    let mut files: Vec<(WalName, PathBuf, SystemTime)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
        let e = e.map_err(|e| Error::io(dir.display(), e))?;
        let Some(name) = e.file_name().to_str().and_then(|n| WalName::parse(n).ok()) else {
            continue;
        };
        let modified = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((name, e.path(), modified));
    }
    files.sort_by(|a, b| a.0.file.cmp(&b.0.file));
    let newest_complete = files
        .iter()
        .filter(|(n, _, _)| n.kind == WalKind::Segment)
        .map(|(n, _, _)| n.file.clone())
        .next_back();
    for (name, path, modified) in files {
        if name.kind == WalKind::Partial && !partial {
            continue;
        }
        if shipped.get(&name.file) == Some(&modified) {
            continue;
        }
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            // Renamed from .partial between listing and reading: next round.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        archive.push(&name, data).await?;
        match name.kind {
            WalKind::Segment => stats.segments += 1,
            WalKind::Partial => stats.partials += 1,
            _ => {}
        }
        if name.kind == WalKind::Segment && Some(&name.file) != newest_complete.as_ref() {
            let _ = std::fs::remove_file(&path);
            shipped.remove(&name.file);
        } else {
            shipped.insert(name.file.clone(), modified);
        }
        tracing::info!(file = %name, "streamed WAL archived");
    }
    Ok(())
}
