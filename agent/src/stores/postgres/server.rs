//! The local PostgreSQL server as the agent handles it on its host: where
//! its data directory is (asked of it while it answers, remembered for
//! when it does not), who owns it, and how it is stopped and started. A
//! fence, an unfence and a rebuild all go through here.

use crate::engine::postgres::conn::{self, query_error};
use crate::engine::postgres::tools::{output, tail, PgTools};
use seawall_common::{Error, ErrorKind, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The other regions' servers (host:port) a failback may rebuild this
    /// one from: a coordinator naming any other is refused.
    pub rebuild_from: Vec<String>,
    /// How to log in to the server it is rebuilt from (a replication role,
    /// TLS settings; host and port come from `rebuild_from`); default: the
    /// source's dsn.
    pub rebuild_dsn: Option<String>,
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

/// Keeps where a running server's data and programs are, for when it is down.
pub(super) fn remember(path: &Path, f: &Facts) {
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
pub(super) fn locate(server: &Server, running: Option<&Facts>) -> Result<(PathBuf, PgTools)> {
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

/// What the running server says about itself.
pub(super) struct Facts {
    pub(super) in_recovery: bool,
    pub(super) data_dir: PathBuf,
    pub(super) bin_dir: Option<PathBuf>,
    /// Host and port of the server it streams from, and the receiver's status.
    pub(super) sender: Option<(String, i32, String)>,
}

pub(super) async fn facts(client: &tokio_postgres::Client) -> Result<Facts> {
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
pub(super) async fn answering(dsn: &str) -> Result<Option<(tokio_postgres::Client, Facts)>> {
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
pub(super) fn follows(f: &Facts, host: &str, port: u16) -> bool {
    f.in_recovery
        && f.sender.as_ref().is_some_and(|(h, p, status)| {
            h == host && *p == i32::from(port) && matches!(status.as_str(), "streaming" | "catchup")
        })
}

/// The user programs run as: the data directory's owner when the agent is
/// root (the server refuses root), else the agent itself, which must then
/// own the directory.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    uid: u32,
    gid: u32,
    switch: bool,
}

pub(super) fn owner_of(data_dir: &Path) -> Result<Owner> {
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

pub(super) fn command(program: &Path, owner: Owner) -> tokio::process::Command {
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

pub(super) fn configured(argv: &[String], owner: Owner) -> tokio::process::Command {
    let mut cmd = command(Path::new(&argv[0]), owner);
    cmd.args(&argv[1..]);
    cmd
}

pub(super) fn give(path: &Path, owner: Owner) -> Result<()> {
    if owner.switch {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

pub(super) fn write_owned(path: &Path, text: &[u8], owner: Owner) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Error::io(path.display(), e))?;
    give(path, owner)
}

/// The server's last command-line options (postmaster.opts, which neither
/// a rewind nor pg_ctl rewrites), without the program and its `-D`.
pub(super) fn start_options(data_dir: &Path) -> Vec<String> {
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

pub(super) async fn replay_position(client: &tokio_postgres::Client) -> Result<(String, u32)> {
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

/// `pg_rewind -D DATA --source-server=SOURCE` as `owner`, the password
/// (if any) in its environment, never on its command line.
pub(super) fn pg_rewind(
    program: &Path,
    data_dir: &Path,
    source: &str,
    password: Option<&str>,
    owner: Owner,
) -> tokio::process::Command {
    let mut cmd = command(program, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .arg(format!("--source-server={source}"));
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd
}

/// The data directory configured or remembered, without asking the server.
pub(super) fn known_data_dir(server: &Server) -> Option<PathBuf> {
    server
        .control
        .data_dir
        .clone()
        .or_else(|| recall(&server.memory).map(|m| m.data_dir))
}

/// Tells the postmaster of `data_dir` to shut down fast (SIGINT: every
/// session ends at once) without waiting; whether the signal was sent.
pub(super) fn shut_down_fast(data_dir: &Path) -> bool {
    let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    match pid {
        Some(pid) if pid > 0 => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .is_ok(),
        _ => false,
    }
}

/// Whether a postmaster runs for `data_dir`: its pid file names a live
/// process. A server killed with -9 leaves the file behind, and pg_ctl
/// then fails to stop what is not running.
pub(super) fn postmaster_running(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    match text
        .lines()
        .next()
        .map(str::trim)
        .and_then(|l| l.parse::<u32>().ok())
    {
        Some(pid) => Path::new("/proc").join(pid.to_string()).exists(),
        // A pid file being written: a postmaster is starting.
        None => true,
    }
}

pub(super) async fn stop(
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
    if !postmaster_running(data_dir) {
        return Ok(());
    }
    let mut cmd = command(&tools.path("pg_ctl")?, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", "fast", "-w", "-t"])
        .arg(deadline.as_secs().max(1).to_string())
        .arg("stop");
    match output(cmd, "pg_ctl stop").await {
        Ok(_) => Ok(()),
        // It finished stopping between the check and pg_ctl (a fast
        // shutdown the fence asked for already): stopped is stopped.
        Err(_) if !postmaster_running(data_dir) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) async fn start(
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

/// A checkpoint on the new primary: until its first one after the
/// promotion its control file still names the old timeline, and pg_rewind
/// (before PostgreSQL 16) would then find "no rewind required" for a
/// target that has diverged.
pub(super) async fn checkpoint(conninfo: &str, host: &str, port: u16) -> Result<()> {
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
}
