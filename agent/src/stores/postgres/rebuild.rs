//! Failback's first half for PostgreSQL: a demoted primary becomes a
//! standby of the new primary. It is stopped cleanly, rewound with
//! `pg_rewind` onto the new primary's timeline (or, where a rewind cannot
//! work, replaced by a fresh base backup of it), given back its own
//! configuration files (a rewind copies the source's, ports and all),
//! started as a standby and waited for until it streams. One rebuild per
//! data directory at a time: a repeated request (a new leader) waits for
//! the running one and then finds the work done.

use crate::engine::postgres::conn::{self, conninfo_quote, query_error};
use crate::engine::postgres::tools::{output, tail, PgTools};
use crate::stores::Done;
use seawall_common::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How the agent stops and starts the server (failback only).
#[derive(Debug, Clone, Default)]
pub struct ServerControl {
    /// The data directory, when the server cannot be asked (it is down).
    pub data_dir: Option<PathBuf>,
    /// Stops the server (default: `pg_ctl stop -m fast`), for a server a
    /// service manager owns.
    pub stop_command: Vec<String>,
    /// Starts it (default: `pg_ctl start` with the options it last ran with).
    pub start_command: Vec<String>,
}

/// The local server and how the agent handles it.
#[derive(Debug, Clone)]
pub struct Server {
    /// The server, as the source's DSN reaches it.
    pub dsn: String,
    /// How to stop and start it.
    pub control: ServerControl,
    /// The PostgreSQL programs (else the server's own BINDIR).
    pub tools: PgTools,
    /// Where the agent remembers its data directory and programs (a
    /// stopped server cannot be asked).
    pub memory: PathBuf,
}

/// What a rebuild needs.
pub struct RebuildOptions {
    /// The local server.
    pub server: Server,
    /// The new primary.
    pub primary_host: String,
    /// Its port.
    pub primary_port: u16,
    /// Never replace the data directory with a base backup.
    pub rewind_only: bool,
    /// How long the whole rebuild may take.
    pub deadline: Duration,
}

/// What the agent remembers of a server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Remembered {
    data_dir: PathBuf,
    bin_dir: Option<PathBuf>,
}

/// The file under the agent's state directory that remembers `source`'s server.
pub fn memory_path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir.join(format!("postgres-server-{source}.json"))
}

fn remember(path: &Path, f: &Facts) {
    let r = Remembered {
        data_dir: f.data_dir.clone(),
        bin_dir: f.bin_dir.clone(),
    };
    let written = serde_json::to_vec(&r)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, bytes)
        });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "the server's data directory is not remembered");
    }
}

fn recall(path: &Path) -> Option<Remembered> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The data directory and programs of a server that may be down: asked of
/// it when it answers (and remembered), else configured, else remembered.
fn locate(server: &Server, running: Option<&Facts>) -> Result<(PathBuf, PgTools)> {
    if let Some(f) = running {
        remember(&server.memory, f);
    }
    let memory = recall(&server.memory);
    let data_dir = running
        .map(|f| f.data_dir.clone())
        .or_else(|| server.control.data_dir.clone())
        .or_else(|| memory.as_ref().map(|m| m.data_dir.clone()))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "the server does not answer and this source names no data_dir: set data_dir in its [[sources]] table, or start the server, and try again",
            )
        })?;
    let found = running
        .and_then(|f| f.bin_dir.clone())
        .or_else(|| memory.and_then(|m| m.bin_dir));
    let tools = match (&server.tools.bin_dir, found) {
        (None, Some(found)) => PgTools {
            bin_dir: Some(found),
        },
        _ => server.tools.clone(),
    };
    Ok((data_dir, tools))
}

/// Stops the server (a fence by stopping); what was done.
pub async fn stop_server(server: &Server, deadline: Duration) -> Result<String> {
    let running = answering(&server.dsn).await?.map(|(_, f)| f);
    let (data_dir, tools) = locate(server, running.as_ref())?;
    if running.is_none() && !data_dir.join("postmaster.pid").exists() {
        return Ok("stopped already".into());
    }
    let owner = owner_of(&data_dir)?;
    stop(&tools, &server.control, &data_dir, owner, deadline).await?;
    Ok(if server.control.stop_command.is_empty() {
        "stopped (pg_ctl stop -m fast)".into()
    } else {
        "stopped (stop_command)".into()
    })
}

/// Whether the server was stopped by the agent and is still down (a
/// fence by stopping, which only failback or an unfence ends).
pub fn stopped_by_fence(server: &Server) -> bool {
    recall(&server.memory).is_some_and(|m| !m.data_dir.join("postmaster.pid").exists())
}

/// Starts a server a fence stopped, with the options it last ran with.
pub async fn start_server(server: &Server, deadline: Duration) -> Result<()> {
    let (data_dir, tools) = locate(server, None)?;
    let owner = owner_of(&data_dir)?;
    let options = start_options(&data_dir);
    start(
        &tools,
        &server.control,
        &data_dir,
        &options,
        owner,
        deadline,
    )
    .await
}

/// Configuration files a rewind or a base backup would replace with the
/// new primary's.
const OWN_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];
/// Settings of postgresql.auto.conf a rebuild writes itself.
const REPLACED_SETTINGS: [&str; 2] = ["primary_conninfo", "primary_slot_name"];
/// Where the data directory waits, while a base backup replaces it.
const SET_ASIDE: &str = "seawall-replaced";

/// One lock per data directory (or source DSN before it is known).
static RUNNING: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

fn lock_for(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.to_string())
        .or_default()
        .clone()
}

/// What the running server says about itself.
struct Facts {
    in_recovery: bool,
    data_dir: PathBuf,
    bin_dir: Option<PathBuf>,
    /// Host and port of the server it streams from, and the receiver's status.
    sender: Option<(String, i32, String)>,
}

async fn facts(client: &tokio_postgres::Client) -> Result<Facts> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('data_directory'),
                    (SELECT setting FROM pg_config WHERE name = 'BINDIR'),
                    (SELECT sender_host FROM pg_stat_wal_receiver),
                    (SELECT sender_port FROM pg_stat_wal_receiver),
                    (SELECT status FROM pg_stat_wal_receiver)",
            &[],
        )
        .await
        .map_err(|e| {
            query_error(
                "reading the server's data directory (the source's role needs superuser)",
                e,
            )
        })?;
    let host: Option<String> = row.get(3);
    let port: Option<i32> = row.get(4);
    let status: Option<String> = row.get(5);
    Ok(Facts {
        in_recovery: row.get(0),
        data_dir: PathBuf::from(row.get::<_, String>(1)),
        bin_dir: row.get::<_, Option<String>>(2).map(PathBuf::from),
        sender: host
            .zip(port)
            .map(|(h, p)| (h, p, status.unwrap_or_default())),
    })
}

/// The server's client and what it says about itself, or None when it
/// does not answer (stopped, or down).
async fn answering(dsn: &str) -> Result<Option<(tokio_postgres::Client, Facts)>> {
    match conn::connect(dsn).await {
        Ok(client) => {
            let f = facts(&client).await?;
            Ok(Some((client, f)))
        }
        Err(e) => {
            tracing::info!(error = %e, "the server does not answer; its data directory is used");
            Ok(None)
        }
    }
}

/// Whether the server streams from the primary already.
fn follows(f: &Facts, host: &str, port: u16) -> bool {
    f.in_recovery
        && f.sender.as_ref().is_some_and(|(h, p, status)| {
            h == host && *p == i32::from(port) && matches!(status.as_str(), "streaming" | "catchup")
        })
}

/// The user programs run as: the data directory's owner when the agent is
/// root (the server refuses root), else the agent itself, which must then
/// own the directory.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    switch: bool,
}

fn owner_of(data_dir: &Path) -> Result<Owner> {
    let meta = std::fs::metadata(data_dir).map_err(|e| {
        Error::io(
            format!("the data directory {} (data_dir)", data_dir.display()),
            e,
        )
    })?;
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && me != meta.uid() {
        return Err(Error::new(
            ErrorKind::Denied,
            format!(
                "the agent runs as uid {me} but {} belongs to uid {}: run the agent as that user or as root to rebuild the server",
                data_dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
        switch: me == 0 && meta.uid() != 0,
    })
}

fn command(program: &Path, owner: Owner) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if owner.switch {
        cmd.uid(owner.uid).gid(owner.gid);
    }
    cmd
}

fn configured(argv: &[String], owner: Owner) -> tokio::process::Command {
    let mut cmd = command(Path::new(&argv[0]), owner);
    cmd.args(&argv[1..]);
    cmd
}

fn give(path: &Path, owner: Owner) -> Result<()> {
    if owner.switch {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

fn write_owned(path: &Path, text: &[u8], owner: Owner) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Error::io(path.display(), e))?;
    give(path, owner)
}

/// The server's last command-line options (postmaster.opts, which neither
/// a rewind nor pg_ctl rewrites), without the program and its `-D`.
fn start_options(data_dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.opts")) else {
        return Vec::new();
    };
    let mut args = Vec::new();
    let mut rest = text.trim();
    // The program's path comes first, unquoted.
    rest = rest.split_once(" \"").map(|(_, r)| r).unwrap_or("");
    for piece in rest.split("\" \"") {
        args.push(piece.trim_end_matches('"').to_string());
    }
    let mut out = Vec::new();
    let mut skip = false;
    for a in args.into_iter().filter(|a| !a.is_empty()) {
        if skip {
            skip = false;
        } else if a == "-D" {
            skip = true;
        } else {
            out.push(a);
        }
    }
    out
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// postgresql.auto.conf as kept, without the settings a rebuild writes.
fn auto_conf(kept: &str, primary_conninfo: &str) -> String {
    let mut out: Vec<&str> = kept
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !REPLACED_SETTINGS.contains(&key)
        })
        .collect();
    let line = format!(
        "primary_conninfo = '{}'",
        primary_conninfo.replace('\\', "\\\\").replace('\'', "''")
    );
    out.push("# Written by seawall failback: a standby of the current primary.");
    let mut text = out.join("\n");
    text.push('\n');
    text.push_str(&line);
    text.push('\n');
    text
}

/// Makes the local server a standby of the primary; see the module doc.
pub async fn pg_rebuild(opts: &RebuildOptions) -> Result<Done> {
    let server = &opts.server;
    let lock = lock_for(&server.dsn);
    let _held = lock.lock().await;
    let started = Instant::now();
    let (host, port) = (opts.primary_host.as_str(), opts.primary_port);
    let answer = answering(&server.dsn).await?;
    if let Some((client, _)) = answer.as_ref().filter(|(_, f)| follows(f, host, port)) {
        let (lsn, timeline) = replay_position(client).await?;
        return Ok(Done {
            already: true,
            detail: format!("already a standby of {host}:{port}, streaming (replayed up to {lsn}, timeline {timeline})"),
            position: Some(super::at(lsn, timeline)),
        });
    }
    let running = answer.map(|(_, f)| f);
    let (data_dir, tools) = locate(server, running.as_ref())?;
    let aside = PathBuf::from(format!("{}.{SET_ASIDE}", data_dir.display()));
    // A base backup interrupted earlier left the original aside: its
    // files are the ones to keep.
    let own_dir = if aside.is_dir() { &aside } else { &data_dir };
    let owner = owner_of(own_dir)?;
    let options = start_options(own_dir);
    let mut kept = Vec::new();
    for name in OWN_FILES {
        match std::fs::read(own_dir.join(name)) {
            Ok(bytes) => kept.push((name, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(own_dir.join(name).display(), e)),
        }
    }
    let auto_kept =
        std::fs::read_to_string(own_dir.join("postgresql.auto.conf")).unwrap_or_default();

    let remaining = |what: &str| {
        opts.deadline.checked_sub(started.elapsed()).ok_or_else(|| {
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the rebuild ran out of its {:?} before {what}",
                    opts.deadline
                ),
            )
        })
    };
    stop(
        &tools,
        &server.control,
        &data_dir,
        owner,
        remaining("stopping")?,
    )
    .await?;

    let (source_info, password) = conn::elsewhere(&server.dsn, host, port)?;
    let mut conninfo = source_info.clone();
    if let Some(p) = &password {
        conninfo.push_str(&format!(" password={}", conninfo_quote(p)));
    }
    checkpoint(&conninfo, host, port).await?;
    let rewound = if aside.is_dir() {
        Err("a base backup was under way".to_string())
    } else {
        rewind(&tools, &data_dir, &source_info, password.as_deref(), owner).await
    };
    let how = match rewound {
        Ok(said) => said,
        Err(why) if opts.rewind_only => {
            return Err(Error::new(
                ErrorKind::Io,
                format!("pg_rewind could not make {} follow {host}:{port}: {why}; the server is stopped. Rebuild it by hand (docs/operations.md, Failback) or run failback without rewind_only", data_dir.display()),
            ));
        }
        Err(why) => {
            base_backup(
                &tools,
                &data_dir,
                &aside,
                &source_info,
                password.as_deref(),
                owner,
                remaining("the base backup")?,
            )
            .await?;
            format!(
                "pg_rewind could not be used ({why}); replaced by a base backup of {host}:{port}"
            )
        }
    };
    for (name, bytes) in &kept {
        write_owned(&data_dir.join(name), bytes, owner)?;
    }
    write_owned(
        &data_dir.join("postgresql.auto.conf"),
        auto_conf(&auto_kept, &conninfo).as_bytes(),
        owner,
    )?;
    let _ = std::fs::remove_file(data_dir.join("recovery.signal"));
    write_owned(&data_dir.join("standby.signal"), b"", owner)?;
    start(
        &tools,
        &server.control,
        &data_dir,
        &options,
        owner,
        remaining("starting")?,
    )
    .await?;
    let (lsn, timeline) = wait_streaming(opts, remaining("streaming")?).await?;
    if aside.is_dir() {
        remove_dir(&aside, "removing the old data directory").await?;
    }
    Ok(Done {
        already: false,
        detail: format!(
            "{how}; started as a standby of {host}:{port}, streaming (replayed up to {lsn}, timeline {timeline}) after {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        position: Some(super::at(lsn, timeline)),
    })
}

/// A checkpoint on the new primary: until its first one after the
/// promotion its control file still names the old timeline, and pg_rewind
/// (before PostgreSQL 16) would then find "no rewind required" for a
/// target that has diverged.
async fn checkpoint(conninfo: &str, host: &str, port: u16) -> Result<()> {
    let client = conn::connect(conninfo).await.map_err(|e| {
        e.context(format!(
            "reaching the primary {host}:{port} to copy from it"
        ))
    })?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(|e| query_error(&format!("a checkpoint on the primary {host}:{port} (the role needs superuser or pg_checkpoint)"), e))
}

/// Removes a directory tree off the async runtime.
async fn remove_dir(dir: &Path, what: &str) -> Result<()> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: {e}")))?
        .map_err(|e| Error::io(format!("{what} ({})", dir.display()), e))
}

async fn replay_position(client: &tokio_postgres::Client) -> Result<(String, u32)> {
    let row = client
        .query_one(
            "SELECT coalesce(pg_last_wal_replay_lsn()::text, ''),
                    coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0)::int8",
            &[],
        )
        .await
        .map_err(|e| query_error("reading the replay position", e))?;
    Ok((row.get(0), row.get::<_, i64>(1) as u32))
}

async fn stop(
    tools: &PgTools,
    control: &ServerControl,
    data_dir: &Path,
    owner: Owner,
    deadline: Duration,
) -> Result<()> {
    if !control.stop_command.is_empty() {
        output(configured(&control.stop_command, owner), "stop_command").await?;
        return Ok(());
    }
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut cmd = command(&tools.path("pg_ctl")?, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", "fast", "-w", "-t"])
        .arg(deadline.as_secs().max(1).to_string())
        .arg("stop");
    output(cmd, "pg_ctl stop").await.map(|_| ())
}

/// Runs pg_rewind; what it said, or why it cannot be used.
async fn rewind(
    tools: &PgTools,
    data_dir: &Path,
    source: &str,
    password: Option<&str>,
    owner: Owner,
) -> std::result::Result<String, String> {
    let program = tools.path("pg_rewind").map_err(|e| e.to_string())?;
    let run = |fetch_wal: bool| {
        let mut cmd = command(&program, owner);
        cmd.arg("-D")
            .arg(data_dir)
            .arg(format!("--source-server={source}"));
        if fetch_wal {
            cmd.arg("--restore-target-wal");
        }
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        async move {
            let out = cmd
                .output()
                .await
                .map_err(|e| format!("running pg_rewind: {e}"))?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, String>((out.status.success(), said))
        }
    };
    let (mut ok, mut said) = run(false).await?;
    if !ok && said.contains("could not open file") {
        // The target recycled WAL back to the last common checkpoint: its
        // restore_command (the WAL archive) may still have it.
        let (again, said_again) = run(true).await?;
        if again {
            (ok, said) = (again, said_again);
        } else {
            said = format!(
                "{}; with --restore-target-wal: {}",
                tail(&said),
                tail(&said_again)
            );
        }
    }
    if !ok {
        return Err(format!("pg_rewind failed: {}", tail(&said)));
    }
    Ok(if said.contains("no rewind required") {
        "no rewind needed (pg_rewind)".to_string()
    } else {
        "rewound onto the new primary's timeline with pg_rewind".to_string()
    })
}

/// Replaces the data directory with a base backup of the primary; the old
/// one waits aside until the new one streams.
async fn base_backup(
    tools: &PgTools,
    data_dir: &Path,
    aside: &Path,
    source: &str,
    password: Option<&str>,
    owner: Owner,
    deadline: Duration,
) -> Result<()> {
    if !aside.is_dir() {
        std::fs::rename(data_dir, aside).map_err(|e| {
            Error::io(
                format!("setting {} aside for a base backup", data_dir.display()),
                e,
            )
        })?;
    } else if data_dir.exists() {
        // What an interrupted attempt left half-written.
        remove_dir(data_dir, "clearing a half-made data directory").await?;
    }
    std::fs::create_dir(data_dir).map_err(|e| Error::io(data_dir.display(), e))?;
    std::fs::set_permissions(
        data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| Error::io(data_dir.display(), e))?;
    give(data_dir, owner)?;
    let mut cmd = command(&tools.path("pg_basebackup")?, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-X", "stream", "-c", "fast"])
        .arg(format!("--dbname={source}"));
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    match tokio::time::timeout(deadline, output(cmd, "pg_basebackup")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.context(format!(
            "the base backup of the new primary failed; the old data directory waits at {} (a repeated failback starts the base backup again)",
            aside.display()
        ))),
        Err(_) => Err(Error::new(
            ErrorKind::Unreachable,
            format!(
                "the base backup did not finish within {deadline:?}; the old data directory waits at {}",
                aside.display()
            ),
        )),
    }
}

async fn start(
    tools: &PgTools,
    control: &ServerControl,
    data_dir: &Path,
    options: &[String],
    owner: Owner,
    deadline: Duration,
) -> Result<()> {
    if !control.start_command.is_empty() {
        output(configured(&control.start_command, owner), "start_command").await?;
        return Ok(());
    }
    let log = data_dir.join("seawall-failback.log");
    let mut cmd = command(&tools.path("pg_ctl")?, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t"])
        .arg(deadline.as_secs().max(1).to_string());
    if !options.is_empty() {
        let joined: Vec<String> = options.iter().map(|o| shell_quote(o)).collect();
        cmd.arg("-o").arg(joined.join(" "));
    }
    cmd.arg("start");
    output(cmd, "pg_ctl start").await.map_err(|e| {
        e.context(format!(
            "the rebuilt standby did not start; its log ({}) ends with: {}",
            log.display(),
            tail(&std::fs::read_to_string(&log).unwrap_or_default())
        ))
    })?;
    Ok(())
}

/// Waits until the server is a standby streaming from the primary.
async fn wait_streaming(opts: &RebuildOptions, deadline: Duration) -> Result<(String, u32)> {
    let until = Instant::now() + deadline;
    let mut last;
    loop {
        match conn::connect(&opts.server.dsn).await {
            Ok(client) => match facts(&client).await {
                Ok(f) if follows(&f, &opts.primary_host, opts.primary_port) => {
                    return replay_position(&client).await
                }
                Ok(f) => {
                    last = match f.sender {
                        Some((h, p, s)) => format!("its WAL receiver is {s} from {h}:{p}"),
                        None if f.in_recovery => "it has no WAL receiver yet".into(),
                        None => "it is not in recovery".into(),
                    }
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= until {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the rebuilt standby does not stream from {}:{} ({last}): does pg_hba.conf there allow replication from this host, and does the primary still hold the WAL (wal_keep_size)?",
                    opts.primary_host, opts.primary_port
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_last_options_are_read_without_its_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("postmaster.opts"),
            "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/var/lib/pg data\" \"-p\" \"5433\"\n",
        )
        .unwrap();
        assert_eq!(start_options(dir.path()), ["-p", "5433"]);
        std::fs::write(
            dir.path().join("postmaster.opts"),
            "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/x\"\n",
        )
        .unwrap();
        assert!(start_options(dir.path()).is_empty());
        assert!(start_options(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn the_kept_auto_conf_loses_only_the_settings_a_rebuild_writes() {
        let text = auto_conf(
            "# Do not edit\ndefault_transaction_read_only = 'on'\nprimary_conninfo = 'host=old'\nprimary_slot_name = 's'\n",
            "host='b' port=1 password='it''s'",
        );
        assert!(text.contains("default_transaction_read_only = 'on'"));
        assert!(!text.contains("host=old"));
        assert!(!text.contains("primary_slot_name"));
        assert!(text.ends_with("primary_conninfo = 'host=''b'' port=1 password=''it''''s'''\n"));
    }
}
