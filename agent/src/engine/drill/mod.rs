//! Restore drills: a source's recovery point restored from the agent's
//! repository into a scratch instance, checked, and torn down, each phase
//! timed. `pick.rs` chooses the snapshot a point names, `scratch.rs` owns
//! the scratch directory and servers, and one module per kind of source
//! restores and checks it. A drill never fails as a call: what failed is a
//! phase of its report, so the phases before it (and teardown) are still
//! reported.

mod files;
mod phases;
mod pick;
mod postgres;
pub mod rds_pitr;
mod redis;
pub mod scratch;
mod tree_removal;

use crate::engine::postgres::PgTools;
use crate::engine::progress::Progress;
pub use phases::Phase;
use phases::Phases;
use seawall_common::point::Point;
use seawall_common::{Error, Repository};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// What a restore drill restores and where it works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRequest {
    /// The source, as its snapshots are tagged (`source=NAME`).
    pub source: String,
    /// `latest`, `random-within DURATION` or an RFC 3339 time.
    pub point: String,
    /// PostgreSQL: a check file run in the restored server.
    pub check_file: Option<PathBuf>,
    /// The drill (names the scratch directory).
    pub drill_id: String,
    /// Where scratch directories are made.
    pub scratch_root: PathBuf,
    /// Directory of the PostgreSQL programs (`None`: PATH).
    pub pg_bin: Option<PathBuf>,
    /// The redis-server program.
    pub redis_server: PathBuf,
    /// PostgreSQL: exact row counts of every table and pg_amcheck, beside
    /// the check file (otherwise the catalog's row estimates).
    #[serde(default)]
    pub deep: bool,
}

/// What a restore drill did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The source.
    pub source: String,
    /// files | postgres-physical | postgres-logical | redis-rdb | redis-keys |
    /// rds-pitr
    pub source_kind: String,
    /// The snapshot restored.
    pub snapshot_id: String,
    /// When the restored data is from (ms since the epoch).
    pub recovery_point_unix_ms: i64,
    /// Each phase, in order.
    pub phases: Vec<Phase>,
    /// Scratch instances teardown could not remove.
    pub leftovers: Vec<String>,
}

impl DrillReport {
    /// The first failed phase's error, if any.
    pub fn failure(&self) -> Option<&Phase> {
        self.phases.iter().find(|p| p.state == phases::FAILED)
    }
}

/// The kind of drill a snapshot calls for.
fn kind_of(s: &seawall_common::repo::snapshot::Snapshot) -> Option<&'static str> {
    let mode = s.facts.get("mode").and_then(|m| m.as_str());
    match (s.source.as_str(), mode) {
        ("files", _) if s.tree.is_some() => Some("files"),
        ("postgres", Some("physical")) => Some("postgres-physical"),
        ("postgres", Some("logical")) => Some("postgres-logical"),
        ("redis", Some("keys")) => Some("redis-keys"),
        ("redis", _) => Some("redis-rdb"),
        _ => None,
    }
}

/// Runs a restore drill of `req.source` from `repo`.
pub async fn restore_drill(
    repo: Arc<Repository>,
    req: &DrillRequest,
    progress: Arc<Progress>,
) -> DrillReport {
    let mut report = DrillReport {
        source: req.source.clone(),
        ..DrillReport::default()
    };
    let mut phases = Phases::default();
    let point = match Point::parse(&req.point) {
        Ok(p) => p,
        Err(e) => {
            phases.failed_now(
                "choose",
                &Error::new(seawall_common::ErrorKind::InvalidInput, e),
            );
            report.phases = phases.into_vec();
            return report;
        }
    };
    let chosen = phases
        .run("choose", async {
            let (id, snap) = pick::choose(&repo, &req.source, &point).await?;
            let kind = kind_of(&snap).ok_or_else(|| {
                Error::new(
                    seawall_common::ErrorKind::InvalidInput,
                    format!(
                        "snapshot {} of {} holds nothing a drill can restore (source {:?})",
                        id.short(),
                        req.source,
                        snap.source
                    ),
                )
            })?;
            let evidence = [
                ("snapshot".to_string(), id.to_hex()),
                ("snapshot_time".to_string(), snap.end_time.to_rfc3339()),
                ("kind".to_string(), kind.to_string()),
            ];
            Ok((
                (id, snap, kind),
                format!("snapshot {} ({kind})", id.short()),
                evidence.into(),
            ))
        })
        .await;
    let Some((id, snap, kind)) = chosen else {
        report.phases = phases.into_vec();
        return report;
    };
    report.snapshot_id = id.to_hex();
    report.source_kind = kind.to_string();
    report.recovery_point_unix_ms = snap.end_time.timestamp_millis();
    let root = req.scratch_root.clone();
    let name = format!("{}-{}", req.drill_id, req.source);
    let scratch = phases
        .run("scratch", async {
            let swept = tokio::task::spawn_blocking({
                let root = root.clone();
                move || scratch::sweep(&root)
            })
            .await
            .unwrap_or_default();
            let s =
                scratch::Scratch::create(&root, &name).map_err(|e| scratch::unusable(&root, e))?;
            let mut evidence = std::collections::BTreeMap::new();
            evidence.insert("dir".to_string(), s.dir().display().to_string());
            if !swept.is_empty() {
                evidence.insert("swept".to_string(), swept.join(", "));
            }
            let detail = format!("scratch directory {}", s.dir().display());
            Ok((s, detail, evidence))
        })
        .await;
    let Some(mut scratch) = scratch else {
        report.phases = phases.into_vec();
        return report;
    };
    let tools = PgTools {
        bin_dir: req.pg_bin.clone(),
    };
    let ctx = Context {
        repo,
        snap: &snap,
        point: &point,
        tools,
        progress,
        req,
    };
    let recovered = match kind {
        "files" => files::drill(&ctx, &mut scratch, &mut phases).await,
        "postgres-physical" => postgres::physical(&ctx, &mut scratch, &mut phases).await,
        "postgres-logical" => postgres::logical(&ctx, &mut scratch, &mut phases).await,
        "redis-keys" => redis::keys(&ctx, &mut scratch, &mut phases).await,
        _ => redis::rdb(&ctx, &mut scratch, &mut phases).await,
    };
    if let Some(at) = recovered {
        report.recovery_point_unix_ms = at;
    }
    let started = chrono::Utc::now().timestamp_millis();
    let left = scratch.teardown().await;
    phases.push(Phase {
        name: "teardown".into(),
        started_unix_ms: started,
        ended_unix_ms: chrono::Utc::now().timestamp_millis(),
        state: if left.is_empty() {
            phases::DONE.into()
        } else {
            phases::FAILED.into()
        },
        detail: if left.is_empty() {
            "scratch servers stopped, directory removed, ports closed".into()
        } else {
            format!("left behind: {}", left.join("; "))
        },
        evidence: Default::default(),
    });
    report.leftovers = left;
    report.phases = phases.into_vec();
    report
}

/// What every kind's drill reads.
struct Context<'a> {
    repo: Arc<Repository>,
    snap: &'a seawall_common::repo::snapshot::Snapshot,
    point: &'a Point,
    tools: PgTools,
    progress: Arc<Progress>,
    req: &'a DrillRequest,
}
