//! PostgreSQL's fence: a primary that no client can make take writes
//! again, also after a restart. `standby.signal` goes into its data
//! directory first (whoever starts it next starts a standby), then it is
//! stopped fast: every session ends at once, its last WAL is sent to the
//! standbys, and its position is the shutdown checkpoint's, read from the
//! control file. A standby refuses every write, `BEGIN READ WRITE` and a
//! `default_transaction_read_only` set by `PGOPTIONS` included; only a
//! promotion ends it. The service's fence mode says whether the demotion
//! starts it again as a standby (`standby`, reads go on) or leaves it down
//! (`stop`).

use super::server::{
    answering, command, locate, owner_of, postmaster_running, start_server, stop, write_owned,
    Owner, Server,
};
use crate::engine::postgres::tools::{output, PgTools};
use crate::stores::Done;
use seawall_common::{Error, ErrorKind, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// The file that makes a starting server a standby.
const STANDBY_SIGNAL: &str = "standby.signal";
/// How long a fast stop may take before it is made immediate: a WAL sender
/// waiting for a standby that no longer answers holds a fast stop until
/// `wal_sender_timeout`, and a fence must not wait that long.
const FAST_STOP: Duration = Duration::from_secs(5);

/// What the control file says of a stopped server.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Control {
    /// "shut down", "shut down in recovery", "in production", ...
    pub state: String,
    /// Where its last checkpoint (a clean stop's shutdown checkpoint) is.
    pub checkpoint_lsn: String,
    /// That checkpoint's timeline.
    pub timeline: u32,
}

/// Reads the fields the fence needs from `pg_controldata`'s output.
pub(super) fn parse_control(text: &str) -> Option<Control> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    Some(Control {
        state: field("Database cluster state")?,
        checkpoint_lsn: field("Latest checkpoint location")?,
        timeline: field("Latest checkpoint's TimeLineID")?.parse().ok()?,
    })
}

async fn control_of(tools: &PgTools, data_dir: &Path) -> Result<Control> {
    let mut cmd = tokio::process::Command::new(tools.path("pg_controldata")?);
    cmd.arg(data_dir)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let text = output(cmd, "pg_controldata").await?;
    parse_control(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "pg_controldata {} did not name the cluster state, the latest checkpoint and its timeline",
                data_dir.display()
            ),
        )
    })
}

/// Whether a server in `data_dir` would start as a standby.
pub fn signalled(data_dir: &Path) -> bool {
    data_dir.join(STANDBY_SIGNAL).exists()
}

fn write_signal(data_dir: &Path, owner: Owner) -> Result<()> {
    write_owned(&data_dir.join(STANDBY_SIGNAL), b"", owner)?;
    // Durable before the stop: a crash right after must not lose it.
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(data_dir.display(), e))
}

/// Stops a primary's writes for good; see the module doc. Idempotent: a
/// standby, or a stopped server with its signal in place, is fenced already.
pub async fn fence(server: &Server, deadline: Duration) -> Result<Done> {
    let started = Instant::now();
    // Whether this fence told the postmaster to stop (it may be gone by the
    // time the stop below looks: that stop is still this fence's).
    let mut stopped_early = false;
    // A primary whose directory is known stops taking writes first, before
    // anything that costs a connection or a process (a region resuming
    // from a freeze has clients writing again within milliseconds): its
    // signal file, then the postmaster told to shut down fast. A server
    // with the file in place is a standby, or fenced already.
    if server.control.stop_command.is_empty() {
        if let Some(dir) = super::server::known_data_dir(server) {
            if !signalled(&dir) && postmaster_running(&dir) {
                if let Ok(owner) = owner_of(&dir) {
                    write_signal(&dir, owner)?;
                    super::server::shut_down_fast(&dir);
                    stopped_early = true;
                }
            }
        }
    }
    let answer = answering(&server.dsn).await?;
    let running = answer.as_ref().map(|(_, f)| f);
    let (data_dir, tools) = locate(server, running)?;
    if let Some((client, facts)) = answer.as_ref() {
        if facts.in_recovery {
            let (lsn, timeline) = super::server::replay_position(client).await?;
            return Ok(Done {
                already: true,
                detail: format!("a standby already (replayed up to {lsn}): it refuses every write"),
                position: Some(super::at(lsn, timeline)),
                divergence: None,
            });
        }
    }
    let owner = owner_of(&data_dir)?;
    let was_signalled = signalled(&data_dir) && !stopped_early;
    write_signal(&data_dir, owner)?;
    drop(answer);
    let how = if postmaster_running(&data_dir) {
        let fast = deadline.min(FAST_STOP);
        match stop(&tools, &server.control, &data_dir, owner, fast).await {
            Ok(()) => "stopped (fast)".to_string(),
            Err(e) if server.control.stop_command.is_empty() => {
                tracing::warn!(error = %e, "a fast stop did not finish; stopping immediately");
                stop_immediately(&tools, &data_dir, owner).await?;
                format!("stopped immediately (a fast stop did not end within {fast:?}: {e})")
            }
            Err(e) => return Err(e),
        }
    } else if stopped_early {
        "stopped (fast)".to_string()
    } else {
        "down already".to_string()
    };
    let control = control_of(&tools, &data_dir).await?;
    let clean = control.state.starts_with("shut down");
    // A clean stop's last record is its shutdown checkpoint. After a crash
    // or an immediate stop, commits may follow the last checkpoint (and
    // the position read before the stop): the end of the WAL on disk is
    // the position, since every acknowledged commit was flushed there.
    // Reporting less would make the RPO claim a loss of 0 that was not.
    let (lsn, said) = if clean {
        (
            Some(control.checkpoint_lsn.clone()),
            "its shutdown checkpoint".to_string(),
        )
    } else {
        match end_of_wal(&tools, &data_dir, &control, owner).await {
            Ok(end) => (
                Some(end),
                format!("the end of its WAL on disk (it was {})", control.state),
            ),
            Err(why) => (None, format!("unknown: it was {} and {why}", control.state)),
        }
    };
    Ok(Done {
        already: was_signalled && how == "down already",
        detail: format!(
            "{how} with {STANDBY_SIGNAL} in place: no client can write to it, and it starts as a standby if started again; WAL ends at {} ({said}, timeline {}) after {:.2} s",
            lsn.as_deref().unwrap_or("?"),
            control.timeline,
            started.elapsed().as_secs_f64()
        ),
        position: lsn.map(|l| super::at(l, control.timeline)),
        divergence: None,
    })
}

/// Where the WAL of a server that did not stop cleanly ends: `pg_waldump`
/// read from its last checkpoint until the first record that is not there.
async fn end_of_wal(
    tools: &PgTools,
    data_dir: &Path,
    control: &Control,
    owner: Owner,
) -> std::result::Result<String, String> {
    let waldump = tools.path("pg_waldump").map_err(|e| e.to_string())?;
    let mut cmd = command(&waldump, owner);
    cmd.arg("--quiet")
        .arg("-p")
        .arg(data_dir.join("pg_wal"))
        .args([
            "-t",
            &control.timeline.to_string(),
            "-s",
            &control.checkpoint_lsn,
        ])
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("pg_waldump could not run: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    super::diverged::wal_end(&err).ok_or_else(|| {
        format!(
            "pg_waldump did not say where its WAL ends: {}",
            err.trim().chars().take(300).collect::<String>()
        )
    })
}

async fn stop_immediately(
    tools: &PgTools,
    data_dir: &Path,
    owner: super::server::Owner,
) -> Result<()> {
    let mut cmd = command(&tools.path("pg_ctl")?, owner);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "stop"]);
    match output(cmd, "pg_ctl stop -m immediate").await {
        Ok(_) => Ok(()),
        Err(_) if !postmaster_running(data_dir) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts a fenced server as a standby (its signal in place), for reads;
/// a running one is left as it is.
pub async fn start_standby(server: &Server, deadline: Duration) -> Result<Done> {
    // A running standby stays as it is; a primary is stopped first.
    let fenced = fence(server, deadline).await?;
    if answering(&server.dsn).await?.is_some() {
        return Ok(fenced);
    }
    start_server(server, deadline).await?;
    let (data_dir, tools) = locate(server, None)?;
    let control = control_of(&tools, &data_dir).await.ok();
    Ok(Done {
        detail: format!("{}; started as a standby (reads only)", fenced.detail),
        position: control.map(|c| super::at(c.checkpoint_lsn, c.timeline)),
        ..Done::default()
    })
}

/// Lifts a fence before anything was promoted: a stopped server starts
/// again as the primary it was (its signal removed); a running standby is
/// left for the caller to promote.
pub async fn lift(server: &Server, deadline: Duration) -> Result<()> {
    if answering(&server.dsn).await?.is_some() {
        return Ok(());
    }
    let (data_dir, _) = locate(server, None)?;
    match std::fs::remove_file(data_dir.join(STANDBY_SIGNAL)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(data_dir.join(STANDBY_SIGNAL).display(), e)),
    }
    start_server(server, deadline).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_file_fields_are_read_from_pg_controldata() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/3000028\n\
                    Latest checkpoint's REDO location:    0/3000028\n\
                    Latest checkpoint's TimeLineID:       2\n";
        assert_eq!(
            parse_control(text),
            Some(Control {
                state: "shut down".into(),
                checkpoint_lsn: "0/3000028".into(),
                timeline: 2
            })
        );
        assert_eq!(
            parse_control("Database cluster state: in production\n"),
            None
        );
    }
}
