//! Failback's first half for PostgreSQL: a demoted primary becomes a
//! standby of the new primary. It is stopped cleanly, rewound with
//! `pg_rewind` onto the new primary's timeline (or, where a rewind cannot
//! work, replaced by a fresh base backup of it), given back its own
//! configuration files (a rewind copies the source's, ports and all),
//! started as a standby and waited for until it streams. One rebuild per
//! data directory at a time: a repeated request (a new leader) waits for
//! the running one and then finds the work done.

use super::server::{
    answering, command, facts, follows, give, locate, owner_of, pg_rewind, replay_position, start,
    start_options, stop, write_owned, Owner, Server,
};
use crate::engine::postgres::conn::{self, conninfo_quote};
use crate::engine::postgres::tools::{output, tail, PgTools};
use crate::stores::Done;
use seawall_common::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// What a rebuild needs.
pub struct RebuildOptions {
    /// The local server.
    pub server: Server,
    /// The new primary, as agent.toml lets the agent reach it.
    pub peer: super::peer::Peer,
    /// Never replace the data directory with a base backup.
    pub rewind_only: bool,
    /// How long the whole rebuild may take.
    pub deadline: Duration,
    /// Where what the old primary holds beyond the new one is kept first.
    pub keeper: crate::stores::diverged_copy::Keeper,
}

/// Configuration files a rewind or a base backup would replace with the
/// new primary's.
const OWN_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];
/// Settings of postgresql.auto.conf a rebuild writes itself.
const REPLACED_SETTINGS: [&str; 2] = ["primary_conninfo", "primary_slot_name"];
/// Where the data directory waits, while a base backup replaces it.
const SET_ASIDE: &str = "seawall-replaced";
/// Beside a data directory a base backup is still writing: only such a
/// directory is ever deleted by a later attempt.
const HALF_MADE: &str = "seawall-half-made";

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
    let (host, port) = (opts.peer.host.as_str(), opts.peer.port);
    let answer = answering(&server.dsn).await?;
    if let Some((client, _)) = answer.as_ref().filter(|(_, f)| follows(f, host, port)) {
        let (lsn, timeline) = replay_position(client).await?;
        return Ok(Done {
            already: true,
            detail: format!("already a standby of {host}:{port}, streaming (replayed up to {lsn}, timeline {timeline})"),
            position: Some(super::at(lsn, timeline)),
            divergence: None,
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

    let (source_info, password) = (opts.peer.conninfo.clone(), opts.peer.password.clone());
    let mut conninfo = source_info.clone();
    if let Some(p) = &password {
        conninfo.push_str(&format!(" password={}", conninfo_quote(p)));
    }
    super::server::checkpoint(&conninfo, host, port).await?;
    // Nothing acknowledged is thrown away: what this server holds beyond
    // the new primary is kept in the repository first (a base backup
    // already under way kept it before it set the directory aside).
    let diverged = if aside.is_dir() {
        None
    } else {
        Some(
            keep_diverged(
                opts,
                &tools,
                &data_dir,
                &source_info,
                password.as_deref(),
                owner,
            )
            .await?,
        )
    };
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
            "{}{how}; started as a standby of {host}:{port}, streaming (replayed up to {lsn}, timeline {timeline}) after {:.1} s",
            diverged.flatten().map(|k| format!("{k}; ")).unwrap_or_default(),
            started.elapsed().as_secs_f64()
        ),
        position: Some(super::at(lsn, timeline)),
        divergence: None,
    })
}

/// Finds whether the stopped server diverged from the new primary and, if
/// it committed anything the new one lacks (or that cannot be told), backs
/// its data directory up first; what was found, in words (None: it did not
/// diverge). A copy that cannot be made stops the rebuild: the server
/// stays stopped, so nothing is lost.
async fn keep_diverged(
    opts: &RebuildOptions,
    tools: &PgTools,
    data_dir: &Path,
    source: &str,
    password: Option<&str>,
    owner: Owner,
) -> Result<Option<String>> {
    let stop = |e: Error| {
        e.context(format!(
            "the rebuild of {} stopped before touching it, and it stays stopped: nothing is lost (free room in the repository, or copy the directory by hand, and run failback again)",
            data_dir.display()
        ))
    };
    match super::diverged::find(tools, data_dir, source, password, owner).await {
        Ok(None) => Ok(None),
        Ok(Some(d)) if d.commits == 0 => Ok(Some(format!(
            "{}: nothing acknowledged there, nothing kept",
            d.describe()
        ))),
        Ok(Some(d)) => {
            let id = super::diverged::keep(&opts.keeper, data_dir, "diverged")
                .await
                .map_err(stop)?;
            Ok(Some(format!(
                "{}: kept in snapshot {id} (tag diverged, source {}.diverged) before the rebuild",
                d.describe(),
                opts.keeper.source
            )))
        }
        Err(why) => {
            let id = super::diverged::keep(&opts.keeper, data_dir, "unknown")
                .await
                .map_err(stop)?;
            Ok(Some(format!(
                "whether it diverged from the new primary could not be told ({why}): kept whole in snapshot {id} (tag diverged, source {}.diverged) before the rebuild",
                opts.keeper.source
            )))
        }
    }
}

/// Removes a directory tree off the async runtime.
async fn remove_dir(dir: &Path, what: &str) -> Result<()> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: {e}")))?
        .map_err(|e| Error::io(format!("{what} ({})", dir.display()), e))
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
        let mut cmd = pg_rewind(&program, data_dir, source, password, owner);
        if fetch_wal {
            cmd.arg("--restore-target-wal");
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
    let half_made = PathBuf::from(format!("{}.{HALF_MADE}", data_dir.display()));
    if !aside.is_dir() {
        std::fs::rename(data_dir, aside).map_err(|e| {
            Error::io(
                format!("setting {} aside for a base backup", data_dir.display()),
                e,
            )
        })?;
    } else if data_dir.exists() && half_made.exists() {
        // What an interrupted attempt of ours left half-written.
        remove_dir(data_dir, "clearing a half-made data directory").await?;
    } else if data_dir.exists() {
        // A directory this rebuild did not make: never deleted, moved.
        let kept = PathBuf::from(format!(
            "{}.seawall-kept-{}",
            data_dir.display(),
            chrono::Utc::now().timestamp_millis()
        ));
        std::fs::rename(data_dir, &kept)
            .map_err(|e| Error::io(format!("moving {} out of the way", data_dir.display()), e))?;
        tracing::warn!(from = %data_dir.display(), to = %kept.display(), "a data directory beside a leftover set-aside one was moved, not deleted");
    }
    std::fs::write(&half_made, b"").map_err(|e| Error::io(half_made.display(), e))?;
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
        Ok(Ok(_)) => {
            std::fs::remove_file(&half_made).map_err(|e| Error::io(half_made.display(), e))
        }
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

/// Waits until the server is a standby streaming from the primary.
async fn wait_streaming(opts: &RebuildOptions, deadline: Duration) -> Result<(String, u32)> {
    let until = Instant::now() + deadline;
    let mut last;
    loop {
        match conn::connect(&opts.server.dsn).await {
            Ok(client) => match facts(&client).await {
                Ok(f) if follows(&f, &opts.peer.host, opts.peer.port) => {
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
                    opts.peer.host, opts.peer.port
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
