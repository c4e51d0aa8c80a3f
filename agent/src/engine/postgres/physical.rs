//! Physical backups: `pg_basebackup` in tar format to stdout, with the WAL
//! the backup needs fetched into it (so every base backup restores on its
//! own), streamed through the chunker. The manifest records what recovery
//! needs: system identifier, timeline, start and stop LSN, WAL range.

use super::conn;
use super::tools::{PgTools, Running};
use super::walname::{format_lsn, parse_lsn, segno_of, WalName};
use crate::engine::progress::Progress;
use crate::engine::stream::{save_stream, StreamBackup, StreamManifest, StreamSettings};
use seawall_common::repo::snapshot::{Snapshot, Stream};
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Stream name of the base backup tar.
pub const BASE_STREAM: &str = "base.tar";

/// What a physical backup reads.
#[derive(Debug, Clone)]
pub struct PhysicalOptions {
    /// Connection string (a replication connection is made from it).
    pub dsn: String,
    /// Start with an immediate checkpoint rather than a spread one.
    pub fast_checkpoint: bool,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Where the PostgreSQL programs are.
    pub tools: PgTools,
    /// Storage settings.
    pub settings: StreamSettings,
}

/// The WAL positions `pg_basebackup -v` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupPositions {
    /// Where replay starts.
    pub start_lsn: u64,
    /// Where the backup becomes consistent.
    pub stop_lsn: u64,
    /// Timeline at the start.
    pub timeline: u32,
}

/// Reads the start and end points from `pg_basebackup -v` output.
pub fn parse_positions(stderr: &str) -> Result<BackupPositions> {
    let mut start = None;
    let mut stop = None;
    for line in stderr.lines() {
        if let Some(rest) = line.split("write-ahead log start point: ").nth(1) {
            let mut parts = rest.split(" on timeline ");
            let lsn = parts.next().map(parse_lsn).transpose()?;
            let tl = parts.next().and_then(|t| t.trim().parse::<u32>().ok());
            if let (Some(lsn), Some(tl)) = (lsn, tl) {
                start = Some((lsn, tl));
            }
        } else if let Some(rest) = line.split("write-ahead log end point: ").nth(1) {
            stop = Some(parse_lsn(rest.trim())?);
        }
    }
    match (start, stop) {
        (Some((start_lsn, timeline)), Some(stop_lsn)) => Ok(BackupPositions {
            start_lsn,
            stop_lsn,
            timeline,
        }),
        _ => Err(Error::new(
            ErrorKind::Io,
            format!(
                "pg_basebackup did not report its WAL start and end points; it said: {}",
                super::tools::tail(stderr)
            ),
        )),
    }
}

/// The facts every physical snapshot records for recovery: the server,
/// the backup's WAL positions and the segments it includes.
pub fn recovery_facts(
    facts: &conn::ServerFacts,
    pos: &BackupPositions,
) -> BTreeMap<String, serde_json::Value> {
    let seg = facts.wal_segment_size;
    let first = WalName::segment(pos.timeline, segno_of(pos.start_lsn, seg), seg);
    let last = WalName::segment(pos.timeline, segno_of(pos.stop_lsn, seg), seg);
    let mut f = facts.snapshot_facts("physical");
    f.insert("timeline".into(), pos.timeline.into());
    f.insert("start_lsn".into(), format_lsn(pos.start_lsn).into());
    f.insert("stop_lsn".into(), format_lsn(pos.stop_lsn).into());
    f.insert("wal_segment_size".into(), seg.into());
    f.insert("wal_start".into(), first.file.into());
    f.insert("wal_stop".into(), last.file.into());
    f.insert("wal_included".into(), true.into());
    f
}

/// Takes a base backup into one snapshot.
pub async fn backup_physical(
    repo: Arc<Repository>,
    opts: PhysicalOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    let client = conn::connect(&opts.dsn).await?;
    let facts = conn::server_facts(&client).await?;
    drop(client);
    let mut cmd = opts.tools.command("pg_basebackup")?;
    conn::pass_dsn(&mut cmd, &opts.dsn);
    cmd.args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--verbose",
    ])
    .arg("--label=seawall")
    .arg(format!(
        "--checkpoint={}",
        if opts.fast_checkpoint {
            "fast"
        } else {
            "spread"
        }
    ));
    let backup = StreamBackup::begin(repo, opts.settings.clone(), progress).await?;
    let saver = backup.saver();
    let params = backup.params();
    let prog = backup.progress().clone();
    let taken = match saver {
        Ok(saver) => tokio::task::spawn_blocking(move || -> Result<(Stream, String)> {
            let mut child = Running::spawn(cmd, "pg_basebackup")?;
            let stdout = child.stdout()?;
            match save_stream(BASE_STREAM, stdout, &saver, params, &prog) {
                Ok(stream) => Ok((stream, child.wait()?)),
                Err(e) => {
                    child.kill();
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("base backup stopped: {e}")))
        .and_then(|r| r),
        Err(e) => Err(e),
    };
    let outcome = taken.and_then(|(stream, stderr)| {
        let pos = parse_positions(&stderr)?;
        let f = recovery_facts(&facts, &pos);
        Ok((
            vec![stream],
            StreamManifest {
                source: "postgres".into(),
                paths: vec![conn::describe(&opts.dsn)?],
                tags: opts.tags.clone(),
                facts: f,
            },
        ))
    });
    backup.commit(outcome).await
}

/// The recovery facts of a physical snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalFacts {
    /// Cluster system identifier.
    pub system_identifier: String,
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// Bytes per WAL segment.
    pub segment_size: u64,
    /// First WAL segment the backup needs.
    pub wal_start: WalName,
    /// Last WAL segment the backup needs (included in it).
    pub wal_stop: WalName,
    /// Where the backup becomes consistent.
    pub stop_lsn: u64,
}

impl PhysicalFacts {
    /// Reads them from a snapshot, or says why they are not there.
    pub fn of(snap: &Snapshot) -> Result<PhysicalFacts> {
        let f = &snap.facts;
        let not_physical = || {
            Error::new(
                ErrorKind::InvalidInput,
                "this snapshot is not a physical PostgreSQL backup (take one with `seawall backup postgres --physical`)",
            )
        };
        if snap.source != "postgres" || f.get("mode").and_then(|m| m.as_str()) != Some("physical") {
            return Err(not_physical());
        }
        let text = |k: &str| {
            f.get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| Error::corrupt(format!("physical snapshot lacks fact {k}")))
        };
        let num = |k: &str| {
            f.get(k)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| Error::corrupt(format!("physical snapshot lacks fact {k}")))
        };
        Ok(PhysicalFacts {
            system_identifier: text("system_identifier")?.to_string(),
            timeline: u32::try_from(num("timeline")?)
                .map_err(|_| Error::corrupt("physical snapshot has an invalid timeline"))?,
            segment_size: num("wal_segment_size")?,
            wal_start: WalName::parse(text("wal_start")?)?,
            wal_stop: WalName::parse(text("wal_stop")?)?,
            stop_lsn: parse_lsn(text("stop_lsn")?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_pg_basebackup_output() {
        let out = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                   pg_basebackup: write-ahead log end point: 0/2000100\n\
                   pg_basebackup: base backup completed\n";
        assert_eq!(
            parse_positions(out).unwrap(),
            BackupPositions {
                start_lsn: 0x200_0028,
                stop_lsn: 0x200_0100,
                timeline: 1
            }
        );
        assert!(parse_positions("pg_basebackup: error: connection refused").is_err());
    }
}
