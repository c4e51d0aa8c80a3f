//! What an old primary holds that the new one lacks, kept before a
//! rebuild throws it away. Asked of the stopped data directory: `pg_rewind
//! --dry-run` says where the two timelines parted (or that they did not),
//! `pg_waldump` lists the commits written after that point and where the
//! WAL ends. When anything was committed there, the whole data directory
//! (stopped, so consistent) is backed up into the region's repository as
//! a files snapshot tagged `diverged` (source `<source>.diverged`, which
//! the source's retention does not touch), and only then is it rebuilt.
//! When the parting cannot be read, everything is kept all the same.

use super::server::{command, pg_rewind, Owner};
use crate::engine::operation::SourceSpec;
use crate::engine::postgres::tools::{tail, PgTools};
use crate::stores::diverged_copy::{keep_source, Keeper};
use seawall_common::Result;
use std::path::Path;

/// Where the timelines parted and what the old primary wrote after.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Divergence {
    /// Where they parted (the new primary's timeline begins here).
    pub at: String,
    /// The old primary's timeline.
    pub timeline: u32,
    /// Where the old primary's WAL ends, when read.
    pub end: Option<String>,
    /// Commits after the parting.
    pub commits: u64,
    /// The first and last commit's time, as the WAL says.
    pub first_commit: Option<String>,
    /// See `first_commit`.
    pub last_commit: Option<String>,
}

impl Divergence {
    /// As the action reply carries it.
    pub fn wire(&self) -> seawall_proto::v1::Divergence {
        let lsn = |s: &str| crate::engine::postgres::walname::parse_lsn(s).ok();
        let bytes = match (lsn(&self.at), self.end.as_deref().and_then(lsn)) {
            (Some(at), Some(end)) => end.saturating_sub(at),
            _ => 0,
        };
        seawall_proto::v1::Divergence {
            parted_at: self.at.clone(),
            end: self.end.clone().unwrap_or_default(),
            bytes,
            commits: self.commits,
            first_commit_unix_ms: self.first_commit.as_deref().and_then(commit_time_ms),
            last_commit_unix_ms: self.last_commit.as_deref().and_then(commit_time_ms),
            error: String::new(),
        }
    }

    /// In words, for the journal.
    pub fn describe(&self) -> String {
        let span = match (&self.first_commit, &self.last_commit) {
            (Some(a), Some(b)) if a == b => format!(" at {a}"),
            (Some(a), Some(b)) => format!(" from {a} to {b}"),
            _ => String::new(),
        };
        format!(
            "diverged from the new primary at {} (timeline {}): {} transaction(s) committed after it{span}, WAL to {}",
            self.at,
            self.timeline,
            self.commits,
            self.end.as_deref().unwrap_or("an end not read")
        )
    }
}

/// Reads `pg_rewind --dry-run`'s verdict: where the servers diverged and
/// on which timeline, None for "no rewind required".
pub fn parse_rewind(said: &str) -> std::result::Result<Option<(String, u32)>, String> {
    if said.contains("no rewind required") {
        return Ok(None);
    }
    let Some(rest) = said.split("servers diverged at WAL location ").nth(1) else {
        return Err(tail(said));
    };
    let mut words = rest.split_whitespace();
    let at = words.next().unwrap_or_default().to_string();
    let timeline = rest
        .split("on timeline ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| tail(said))?;
    Ok(Some((at, timeline)))
}

/// A commit time as `pg_waldump` prints it with TZ=UTC
/// ("2026-12-07 05:48:01.213386 UTC"), in unix ms.
pub fn commit_time_ms(text: &str) -> Option<i64> {
    let bare = text.trim().strip_suffix(" UTC")?;
    chrono::NaiveDateTime::parse_from_str(bare, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// What a demoted old primary, stopped, wrote after the new primary at
/// `new_primary` (host:port) began its timeline; None when it is not
/// stopped (a running standby already) or `new_primary` is not known.
pub async fn since_promotion(
    server: &super::server::Server,
    source: &str,
    new_primary: &str,
) -> Option<seawall_proto::v1::Divergence> {
    let (data_dir, tools) = super::server::locate(server, None).ok()?;
    if super::server::postmaster_running(&data_dir) {
        return None;
    }
    let failed = |error: String| seawall_proto::v1::Divergence {
        error,
        ..Default::default()
    };
    let super::peer::Peer {
        host,
        port,
        conninfo: source,
        password,
    } = match super::peer::peer(server, source, new_primary) {
        Ok(p) => p,
        Err(e) => return Some(failed(e.to_string())),
    };
    let owner = match super::server::owner_of(&data_dir) {
        Ok(o) => o,
        Err(e) => return Some(failed(e.to_string())),
    };
    // Until its first checkpoint after the promotion the new primary's
    // control file names the old timeline, and pg_rewind would find
    // nothing diverged.
    let mut conninfo = source.clone();
    if let Some(p) = &password {
        conninfo.push_str(&format!(
            " password={}",
            crate::engine::postgres::conn::conninfo_quote(p)
        ));
    }
    if let Err(e) = super::server::checkpoint(&conninfo, &host, port).await {
        return Some(failed(e.to_string()));
    }
    Some(
        match find(&tools, &data_dir, &source, password.as_deref(), owner).await {
            Ok(None) => seawall_proto::v1::Divergence::default(),
            Ok(Some(d)) => d.wire(),
            Err(why) => failed(why),
        },
    )
}

/// Counts the commits in `pg_waldump -r Transaction` output and finds
/// where the WAL ends (its "invalid record length at X" stop).
pub fn parse_waldump(out: &str, err: &str, into: &mut Divergence) {
    for line in out.lines() {
        if let Some(desc) = line.split("desc: COMMIT ").nth(1) {
            into.commits += 1;
            // "2026-12-07 05:48:01.213386 UTC; ..."
            let when: String = desc.split(';').next().unwrap_or(desc).trim().to_string();
            if into.first_commit.is_none() {
                into.first_commit = Some(when.clone());
            }
            into.last_commit = Some(when);
        }
    }
    into.end = wal_end(err);
}

/// Where `pg_waldump` found the WAL to end, from its closing complaint.
pub fn wal_end(err: &str) -> Option<String> {
    err.split("invalid record length at ")
        .nth(1)
        .or_else(|| err.split("could not find a valid record after ").nth(1))
        .and_then(|r| r.split([':', ' ', '\n']).next())
        .filter(|lsn| lsn.contains('/'))
        .map(str::to_string)
}

/// Whether the stopped server in `data_dir` diverged from the primary at
/// `source` (a conninfo): Ok(None) when it did not, Err(why) when that
/// cannot be told.
pub(super) async fn find(
    tools: &PgTools,
    data_dir: &Path,
    source: &str,
    password: Option<&str>,
    owner: Owner,
) -> std::result::Result<Option<Divergence>, String> {
    let program = tools.path("pg_rewind").map_err(|e| e.to_string())?;
    let mut cmd = pg_rewind(&program, data_dir, source, password, owner);
    cmd.arg("--dry-run");
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("running pg_rewind --dry-run: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tracing::debug!(said = %said, "pg_rewind --dry-run");
    let Some((at, timeline)) = parse_rewind(&said)? else {
        return Ok(None);
    };
    let mut found = Divergence {
        at: at.clone(),
        timeline,
        ..Divergence::default()
    };
    let waldump = tools.path("pg_waldump").map_err(|e| e.to_string())?;
    let mut cmd = command(&waldump, owner);
    cmd.arg("-p").arg(data_dir.join("pg_wal")).args([
        "-t",
        &timeline.to_string(),
        "-s",
        &at,
        "-r",
        "Transaction",
    ]);
    // Commit times in UTC, as commit_time_ms reads them.
    cmd.env("TZ", "UTC");
    let dump = cmd
        .output()
        .await
        .map_err(|e| format!("running pg_waldump: {e}"))?;
    parse_waldump(
        &String::from_utf8_lossy(&dump.stdout),
        &String::from_utf8_lossy(&dump.stderr),
        &mut found,
    );
    Ok(Some(found))
}

/// Backs `data_dir` up into the repository, tagged `diverged`; returns
/// the snapshot's id. Runs as a job does, in a child of this program.
pub async fn keep(keeper: &Keeper, data_dir: &Path, why: &str) -> Result<String> {
    let spec = SourceSpec::Files {
        paths: vec![data_dir.to_path_buf()],
        exclude: vec![],
    };
    keep_source(keeper, spec, why).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parting_and_the_commits_after_it_are_read_from_the_tools_words() {
        assert_eq!(parse_rewind("pg_rewind: no rewind required\n"), Ok(None));
        assert_eq!(
            parse_rewind("pg_rewind: servers diverged at WAL location 0/3000190 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n"),
            Ok(Some(("0/3000190".into(), 1)))
        );
        assert!(parse_rewind("pg_rewind: fatal: target server must be shut down cleanly").is_err());
        let mut d = Divergence::default();
        parse_waldump(
            "rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/030001C8, prev 0/03000190, desc: COMMIT 2026-12-07 05:48:01.213386 UTC\n\
             rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/03000200, prev 0/030001C8, desc: COMMIT 2026-12-07 05:48:02.5 UTC; inval msgs: catcache 7\n",
            "pg_waldump: error: error in WAL record at 0/3000220: invalid record length at 0/3000258: wanted 24, got 0\n",
            &mut d,
        );
        assert_eq!(d.commits, 2);
        assert_eq!(
            d.first_commit.as_deref(),
            Some("2026-12-07 05:48:01.213386 UTC")
        );
        assert_eq!(d.last_commit.as_deref(), Some("2026-12-07 05:48:02.5 UTC"));
        assert_eq!(d.end.as_deref(), Some("0/3000258"));
    }
}
