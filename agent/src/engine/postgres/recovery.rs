//! Point-in-time restore: check that the archived WAL reaches the target,
//! lay the base backup down, prove the files against the backup's own
//! manifest (`pg_verifybackup`), write the recovery settings, and optionally
//! start the server as an unprivileged user and wait for its promotion.

use super::archive::{reach, WalArchive, WalReach};
use super::physical::{PhysicalFacts, BASE_STREAM};
use super::tools::{absent_or_empty, output, tail, PgTools};
use super::walname::{format_lsn, segno_of};
use crate::engine::progress::Progress;
use crate::engine::stream::StreamReader;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Repository, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    Latest,
    /// Stop before the first commit after this time (PostgreSQL timestamp syntax).
    Time(String),
    /// Stop at this LSN.
    Lsn(u64),
    /// Stop as soon as the backup is consistent.
    Immediate,
}

/// How a physical restore runs.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    /// Data directory to create (absent or empty).
    pub datadir: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// The `restore_command` the server runs to fetch WAL.
    pub restore_command: String,
    /// Start the server and wait until it is promoted.
    pub start: bool,
    /// Owner of the data directory and the server process (when run as root).
    pub run_as: Option<String>,
    /// Port the restored server listens on.
    pub port: u16,
    /// Leave `archive_mode` as the backup had it.
    pub keep_archiving: bool,
    /// Go on even if the archive has a gap before the target.
    pub ignore_wal_gap: bool,
    /// Check the files against the backup manifest.
    pub verify_files: bool,
    /// How long to wait for promotion.
    pub timeout: Duration,
    /// Where the PostgreSQL programs are.
    pub tools: PgTools,
    /// More settings for the started server (name, value), after the
    /// backup's own: a drill's scratch server listens on loopback only and
    /// waits for no synchronous standby.
    pub settings: Vec<(String, String)>,
}

/// What a physical restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PitrReport {
    /// Bytes of the base backup laid down.
    pub bytes: u64,
    /// Last archived segment recovery can reach, and its timeline.
    pub wal_reach: Option<String>,
    /// Whether the files were checked with pg_verifybackup.
    pub files_verified: bool,
    /// Whether the server was started and promoted.
    pub promoted: bool,
    /// A connection string for the started server.
    pub dsn: Option<String>,
    /// The server's log while recovering.
    pub log: Option<PathBuf>,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// Checks that the archive can carry recovery from `facts` to `target`.
pub async fn check_wal(
    archive: &WalArchive,
    facts: &PhysicalFacts,
    target: &RecoveryTarget,
) -> Result<WalReach> {
    let seg = facts.segment_size;
    let names = archive.list().await?;
    if let Some(b) = archive.binding().await? {
        if b.system_identifier != facts.system_identifier {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the repository's WAL belongs to cluster {}, but this backup is of cluster {}: no archived WAL can be replayed on it (restore with --pg-immediate)",
                    b.system_identifier, facts.system_identifier
                ),
            ));
        }
    }
    let histories = archive.histories(&names).await?;
    let from = facts.wal_stop.segno(seg) + 1;
    let r = reach(&names, &histories, facts.timeline, from, seg);
    if let Some(gap) = &r.gap {
        let needed = match target {
            RecoveryTarget::Lsn(lsn) => gap.segno(seg) <= segno_of(*lsn, seg),
            RecoveryTarget::Immediate => false,
            _ => true,
        };
        if needed {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "WAL segment {gap} is missing from the repository, but newer segments are archived: recovery from this backup stops at {} (restore to an earlier --lsn/--time, or pass --ignore-wal-gap to let the server stop there)",
                    r.last
                ),
            ));
        }
    }
    Ok(r)
}

/// Restores a physical snapshot into `opts.datadir`.
pub async fn restore_physical(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: PitrOptions,
    progress: Arc<Progress>,
) -> Result<PitrReport> {
    let started = Instant::now();
    let facts = PhysicalFacts::of(snap)?;
    let dir =
        std::path::absolute(&opts.datadir).map_err(|e| Error::io(opts.datadir.display(), e))?;
    if !absent_or_empty(&dir)? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is not empty: a physical restore needs a new or empty data directory",
                dir.display()
            ),
        ));
    }
    if opts.start {
        opts.tools.path("pg_ctl")?;
    }
    let archive = WalArchive::new(repo.clone());
    let reached = if opts.target == RecoveryTarget::Immediate {
        None
    } else {
        match check_wal(&archive, &facts, &opts.target).await {
            Ok(r) => Some(r),
            Err(e) if opts.ignore_wal_gap && e.kind() == ErrorKind::NotFound => {
                tracing::warn!("{e}");
                None
            }
            Err(e) => return Err(e),
        }
    };
    repo.load_index().await?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir.display(), e))?;
    let laid = if snap.tree.is_some() {
        lay_down_files(repo.clone(), snap, &facts, &dir, progress).await?
    } else {
        lay_down_tar(repo.clone(), snap, &dir, &opts, progress).await?
    };
    write_recovery_settings(&dir, &opts, &laid.settings)?;
    if let Some(user) = &opts.run_as {
        let mut cmd = tokio::process::Command::new("chown");
        cmd.arg("-R").arg(format!("{user}:")).arg(&dir);
        output(cmd, "chown").await?;
    }
    let mut report = PitrReport {
        bytes: laid.bytes,
        wal_reach: reached.map(|r| format!("{} (timeline {})", r.last, r.timeline)),
        files_verified: laid.verified,
        promoted: false,
        dsn: None,
        log: None,
        duration_secs: 0.0,
    };
    if opts.start {
        let log = dir.join("seawall-recovery.log");
        start_and_wait(&dir, &log, &opts).await?;
        report.promoted = true;
        report.dsn = Some(format!("host={} port={}", dir.display(), opts.port));
        report.log = Some(log);
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What laying a base backup down wrote.
struct LaidDown {
    /// Bytes of the backup.
    bytes: u64,
    /// Whether every file was proved against what the backup recorded.
    verified: bool,
    /// Settings the restored directory needs to start.
    settings: Vec<(String, String)>,
}

/// Unpacks a `pg_basebackup` tar stream, checked against its manifest.
async fn lay_down_tar(
    repo: Arc<Repository>,
    snap: &Snapshot,
    dir: &Path,
    opts: &PitrOptions,
    progress: Arc<Progress>,
) -> Result<LaidDown> {
    let stream = snap
        .streams
        .iter()
        .find(|s| s.name == BASE_STREAM)
        .ok_or_else(|| Error::corrupt("physical snapshot has no base.tar stream"))?
        .clone();
    let reader = StreamReader::new(repo, stream.clone(), progress);
    let target_dir = dir.to_path_buf();
    let unpacked = tokio::task::spawn_blocking(move || {
        super::unpack::unpack_and_verify(reader, &target_dir).map_err(|e| {
            e.context(format!(
                "restoring the base backup into {}",
                target_dir.display()
            ))
        })
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("unpacking stopped: {e}")))??;
    let verified = if opts.verify_files && !unpacked.verified {
        // No manifest in the tar (an old server): let pg_verifybackup decide.
        let mut cmd = opts.tools.async_command("pg_verifybackup")?;
        cmd.arg("--quiet").arg(dir);
        output(cmd, "pg_verifybackup").await.map_err(|e| {
            e.context(format!(
                "the files restored into {} do not match the backup's own manifest",
                dir.display()
            ))
        })?;
        true
    } else {
        unpacked.verified
    };
    Ok(LaidDown {
        bytes: stream.size,
        verified,
        settings: vec![],
    })
}

/// Restores a file-level backup's tree: every blob is proved against its
/// keyed hash as it is written, which is what a manifest's checksums prove;
/// then the label and every WAL segment the backup needs must be there.
async fn lay_down_files(
    repo: Arc<Repository>,
    snap: &Snapshot,
    facts: &PhysicalFacts,
    dir: &Path,
    progress: Arc<Progress>,
) -> Result<LaidDown> {
    let threads = crate::engine::restore::default_threads();
    let opts = crate::engine::restore::RestoreOptions {
        target: dir.to_path_buf(),
        include: vec![],
        threads,
        fingerprint: false,
    };
    let summary = crate::engine::restore::restore(repo, snap, opts, progress).await?;
    for w in &summary.warnings {
        tracing::warn!("{w}");
    }
    if let Some(first) = summary.failed.first() {
        return Err(Error::corrupt(format!(
            "{} files of the backup could not be restored into {} (first: {first}); a data directory missing files must not be started",
            summary.failed.len(),
            dir.display()
        )));
    }
    let label = dir.join("backup_label");
    if !label.is_file() {
        return Err(Error::corrupt(format!(
            "the backup restored into {} has no backup_label; without it recovery would start from the wrong checkpoint",
            dir.display()
        )));
    }
    let seg = facts.segment_size;
    for segno in facts.wal_start.segno(seg)..=facts.wal_stop.segno(seg) {
        let name = super::walname::WalName::segment(facts.timeline, segno, seg).file;
        let path = dir.join("pg_wal").join(&name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == seg => {}
            _ => {
                return Err(Error::corrupt(format!(
                    "WAL segment {name}, which the backup needs to become consistent, is not in the restored pg_wal; the snapshot is incomplete"
                )))
            }
        }
    }
    // Tablespaces come back as directories inside pg_tblspc, never at
    // their original locations (which may be the live cluster's), and the
    // server refuses those unless told they are meant.
    let in_place = std::fs::read_dir(dir.join("pg_tblspc"))
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
        .unwrap_or(false);
    let settings = if in_place {
        vec![("allow_in_place_tablespaces".to_string(), "on".to_string())]
    } else {
        vec![]
    };
    Ok(LaidDown {
        bytes: summary.bytes,
        verified: true,
        settings,
    })
}

/// Quotes a value for postgresql.conf.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

fn write_recovery_settings(
    dir: &Path,
    opts: &PitrOptions,
    restored: &[(String, String)],
) -> Result<()> {
    let mut lines = vec![
        format!(
            "# Added by seawall restore at {}",
            chrono::Utc::now().to_rfc3339()
        ),
        format!("restore_command = {}", conf_quote(&opts.restore_command)),
        "recovery_target_timeline = 'latest'".to_string(),
        "recovery_target_action = 'promote'".to_string(),
    ];
    match &opts.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => lines.push(format!("recovery_target_time = {}", conf_quote(t))),
        RecoveryTarget::Lsn(l) => lines.push(format!(
            "recovery_target_lsn = {}",
            conf_quote(&format_lsn(*l))
        )),
        RecoveryTarget::Immediate => lines.push("recovery_target = 'immediate'".to_string()),
    }
    for (name, value) in restored {
        lines.push(format!("{name} = {}", conf_quote(value)));
    }
    if !opts.keep_archiving {
        // A restored copy must not archive a new timeline into the source's repository.
        lines.push("archive_mode = 'off'".to_string());
    }
    if opts.start {
        for (name, value) in &opts.settings {
            lines.push(format!("{name} = {}", conf_quote(value)));
        }
        lines.push(format!("port = {}", opts.port));
        lines.push(format!(
            "unix_socket_directories = {}",
            conf_quote(&dir.display().to_string())
        ));
    }
    let conf = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&conf)
        .map_err(|e| Error::io(conf.display(), e))?;
    writeln!(f, "\n{}", lines.join("\n")).map_err(|e| Error::io(conf.display(), e))?;
    f.sync_all().map_err(|e| Error::io(conf.display(), e))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io(signal.display(), e))?;
    Ok(())
}

/// A command run as `user` when given (through runuser), else as ourselves.
pub(crate) fn as_user(program: PathBuf, user: Option<&str>) -> tokio::process::Command {
    match user {
        Some(u) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// Gives `path` and everything under it to `user` (a server run as that
/// user must own its files); nothing when no user is named.
pub(crate) async fn chown_to(user: Option<&str>, path: &Path) -> Result<()> {
    if let Some(u) = user {
        let mut cmd = tokio::process::Command::new("chown");
        cmd.arg("-R").arg(format!("{u}:")).arg(path);
        super::tools::output(cmd, "chown").await?;
    }
    Ok(())
}

async fn start_and_wait(dir: &Path, log: &Path, opts: &PitrOptions) -> Result<()> {
    let mut cmd = as_user(opts.tools.path("pg_ctl")?, opts.run_as.as_deref());
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(log)
        .arg("-w")
        .arg("-t")
        .arg(opts.timeout.as_secs().max(1).to_string())
        .arg("start");
    // pg_ctl -w returns once the server accepts connections, or fails if it exits.
    output(cmd, "pg_ctl start").await.map_err(|e| {
        e.context(format!(
            "the restored server did not start; its log ({}) ends with: {}",
            log.display(),
            tail(&std::fs::read_to_string(log).unwrap_or_default())
        ))
    })?;
    let pid = dir.join("postmaster.pid");
    let signal = dir.join("recovery.signal");
    let deadline = Instant::now() + opts.timeout;
    let log_tail = || tail(&std::fs::read_to_string(log).unwrap_or_default());
    let launched = Instant::now();
    let mut seen_running = false;
    loop {
        let status = std::fs::read_to_string(&pid).ok();
        let running = status.is_some();
        seen_running |= running;
        // postmaster.pid's last line says "ready" once connections are accepted.
        let ready = status.is_some_and(|s| s.lines().last().map(str::trim) == Some("ready"));
        if ready && !signal.exists() && recovery_finished(dir, opts).await {
            return Ok(());
        }
        if !seen_running && launched.elapsed() > Duration::from_secs(30) {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the restored server did not start; its log ({}) says: {}",
                    log.display(),
                    log_tail()
                ),
            ));
        }
        if seen_running && !running {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the restored server stopped during recovery; its log ({}) ends with: {}",
                    log.display(),
                    log_tail()
                ),
            ));
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the restored server did not finish recovery within {:?} (it is still running; see {}): {}",
                    opts.timeout,
                    log.display(),
                    log_tail()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the started server says it left recovery (recovery.signal goes
/// a moment before `pg_is_in_recovery()` turns false). A server we cannot
/// query (authentication) counts as finished once the signal file is gone.
async fn recovery_finished(dir: &Path, opts: &PitrOptions) -> bool {
    let user = opts
        .run_as
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into());
    let dsn = format!(
        "host='{}' port={} user='{user}' dbname=postgres connect_timeout=5",
        dir.display(),
        opts.port
    );
    match super::conn::connect(&dsn).await {
        Ok(client) => client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map(|r| !r.get::<_, bool>(0))
            .unwrap_or(false),
        Err(e) => {
            tracing::debug!(error = %e, "cannot ask the restored server whether it is promoted");
            true
        }
    }
}
