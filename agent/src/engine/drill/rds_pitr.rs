//! An RDS for PostgreSQL source drilled through RDS itself: its automated
//! backups restored to the drill's point (`RestoreDBInstanceToPointInTime`)
//! into a scratch instance Seawall names and tags, waited for until RDS
//! reports it available (that wait, RDS's own work, is its own phase),
//! checked by SQL with the service's check file at the scratch instance's
//! endpoint (the source DSN's user, database and TLS settings; a restored
//! copy has the source's roles), and deleted without a final snapshot. A
//! scratch instance whose drill was killed is deleted by the agent's sweep
//! (its tags name the agent and the job, `cloud::rds::scratch`).

use super::phases::{evidence, Phase, Phases, DONE, FAILED};
use super::postgres::{check_evidence, describe, judged};
use super::{DrillReport, DrillRequest};
use crate::cloud::rds::api::{Rds, RestoreWindow};
use crate::cloud::rds::config::RdsInstance;
use crate::cloud::rds::scratch;
use crate::engine::postgres::check::{check_postgres, ChecksFile, Depth};
use crate::engine::postgres::conn::{self, conninfo_quote, with_database};
use crate::engine::postgres::PgTools;
use seawall_common::point::Point;
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// How long RDS may take to make the scratch instance available (a
/// large instance's restore takes hours) before the drill calls it failed.
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How long past that a scratch instance may live whatever happens: any
/// sweep deletes it from then on.
const EXPIRES_AFTER: Duration = Duration::from_secs(8 * 3600);
/// The first wait between two looks at the restoring instance; it doubles
/// up to [`POLL_MAX`] (RDS's API is rate-limited, a restore takes minutes).
const POLL_FIRST: Duration = Duration::from_millis(500);
/// ...
const POLL_MAX: Duration = Duration::from_secs(15);
/// How long the check keeps trying to connect once RDS calls the scratch
/// instance available: a new endpoint's name can take a while to resolve.
const CONNECT_GRACE: Duration = Duration::from_secs(300);
/// ...and how long it waits between two tries.
const CONNECT_RETRY: Duration = Duration::from_secs(1);
/// The source kind the report names.
pub const KIND: &str = "rds-pitr";

/// What the drill needs beyond the request: the source's instance and the
/// DSN that reaches it, and the agent and job the scratch copy is tagged
/// with.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The source's RDS instance.
    pub instance: &'a RdsInstance,
    /// The source's DSN (its host is replaced by the scratch endpoint).
    pub dsn: &'a str,
    /// The agent running the drill.
    pub agent: &'a str,
    /// Its job.
    pub job: &'a str,
}

/// Runs the drill; like every drill, a failure is a phase of the report,
/// and teardown runs whenever a scratch instance was asked for.
pub async fn drill(req: &DrillRequest, t: &Target<'_>) -> DrillReport {
    let mut report = DrillReport {
        source: req.source.clone(),
        source_kind: KIND.into(),
        ..DrillReport::default()
    };
    let mut phases = Phases::default();
    let rds = match Rds::open(t.instance).await {
        Ok(r) => r,
        Err(e) => {
            phases.failed_now("choose", &e);
            report.phases = phases.into_vec();
            return report;
        }
    };
    let chosen = phases
        .run("choose", async {
            let point =
                Point::parse(&req.point).map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
            let window = rds.restore_window().await?;
            let at = restore_time(&point, &window, rand_fraction())?;
            let shown = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            };
            let recovery = at.unwrap_or(window.latest_unix_ms);
            let detail = match at {
                None => format!(
                    "{}'s latest restorable time ({}, at least)",
                    t.instance.instance,
                    shown(recovery)
                ),
                Some(ms) => format!("{} as of {}", t.instance.instance, shown(ms)),
            };
            let ev = evidence([
                ("instance", t.instance.instance.clone()),
                ("earliest_restorable_time", shown(window.earliest_unix_ms)),
                ("latest_restorable_time", shown(window.latest_unix_ms)),
                (
                    "restore_time",
                    at.map(shown)
                        .unwrap_or_else(|| "latest restorable".to_string()),
                ),
            ]);
            Ok(((at, recovery), detail, ev))
        })
        .await;
    let Some((at, recovery)) = chosen else {
        report.phases = phases.into_vec();
        return report;
    };
    // The latest restorable time read before the restore: RDS restores at
    // least that much, so the drill's RPO from it is a bound, never less.
    report.recovery_point_unix_ms = recovery;
    let scratch_id = scratch_name(&req.drill_id, &req.source, rand::random());
    let expires = chrono::Utc::now().timestamp()
        + i64::try_from((AVAILABLE_TIMEOUT + EXPIRES_AFTER).as_secs()).unwrap_or(i64::MAX / 2);
    let asked = phases
        .run("restore", async {
            rds.restore_to_point(&scratch_id, at, &scratch::tags(t.agent, t.job, expires))
                .await?;
            Ok((
                (),
                format!(
                    "RestoreDBInstanceToPointInTime of {} into {scratch_id} accepted",
                    t.instance.instance
                ),
                evidence([
                    ("scratch_instance", scratch_id.clone()),
                    ("expires_unix", expires.to_string()),
                ]),
            ))
        })
        .await;
    // A restore refused, or accepted with its answer lost: a copy RDS made
    // anyway carries the job's tag and goes with the sweep after the job.
    if asked.is_some() {
        let endpoint = phases
            .run("available", async {
                let started = Instant::now();
                let (endpoint, statuses) = wait_available(&rds, &scratch_id).await?;
                let waited = started.elapsed();
                Ok((
                    endpoint.clone(),
                    format!(
                        "{scratch_id} available at {}:{} after {} of RDS's work",
                        endpoint.0,
                        endpoint.1,
                        humantime::format_duration(Duration::from_secs(waited.as_secs()))
                    ),
                    evidence([
                        ("aws_wait_ms", waited.as_millis().to_string()),
                        ("statuses_seen", statuses.join(" > ")),
                        ("endpoint", format!("{}:{}", endpoint.0, endpoint.1)),
                    ]),
                ))
            })
            .await;
        if let Some((host, port)) = endpoint {
            let tools = PgTools {
                bin_dir: req.pg_bin.clone(),
            };
            phases
                .run("check", async {
                    let ev = check(req, t.dsn, &host, port, &tools).await?;
                    Ok(((), describe(&ev), ev))
                })
                .await;
        }
        let started = chrono::Utc::now().timestamp_millis();
        let deleted = rds.delete_scratch(&scratch_id).await;
        if deleted.is_err() {
            report.leftovers.push(scratch_id.clone());
        }
        phases.push(Phase {
            name: "teardown".into(),
            started_unix_ms: started,
            ended_unix_ms: chrono::Utc::now().timestamp_millis(),
            state: if deleted.is_ok() { DONE } else { FAILED }.into(),
            detail: match deleted {
                Ok(()) => format!(
                    "DeleteDBInstance {scratch_id} accepted (SkipFinalSnapshot, its automated backups deleted)"
                ),
                Err(e) => format!(
                    "{scratch_id} left behind ({e}); the agent's sweep deletes it once its drill no longer runs, or delete it by hand: aws rds delete-db-instance --region {} --db-instance-identifier {scratch_id} --skip-final-snapshot",
                    t.instance.access.aws_region
                ),
            },
            evidence: evidence([("scratch_instance", scratch_id.clone())]),
        });
    }
    report.phases = phases.into_vec();
    report
}

/// A number in [0, 1) for a random point.
fn rand_fraction() -> f64 {
    rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..1.0)
}

/// The time `point` restores to within `window` (None: the latest
/// restorable time, as RDS picks it when the restore runs); `fraction`
/// places a random point in its span.
fn restore_time(point: &Point, window: &RestoreWindow, fraction: f64) -> Result<Option<i64>> {
    let shown = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    };
    match point {
        Point::Latest => Ok(None),
        Point::At(t) => {
            let ms = t.timestamp_millis();
            if ms < window.earliest_unix_ms || ms > window.latest_unix_ms {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is outside what the instance's automated backups can restore ({} to {}): choose a time inside it",
                        shown(ms),
                        shown(window.earliest_unix_ms),
                        shown(window.latest_unix_ms)
                    ),
                ));
            }
            Ok(Some(ms))
        }
        Point::RandomWithin(span) => {
            let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
            let from = window
                .latest_unix_ms
                .saturating_sub(span_ms)
                .max(window.earliest_unix_ms);
            let width = (window.latest_unix_ms - from).max(0) as f64;
            Ok(Some(from + (width * fraction.clamp(0.0, 1.0)) as i64))
        }
    }
}

/// The scratch instance's identifier: `seawall-drill-` and the drill and
/// source as RDS allows (letters, digits, single hyphens; at most 63
/// characters, a letter first, no hyphen last), with a hash of both and of
/// `run` so that two long names never meet, nor a retry the copy its first
/// try is still deleting.
pub fn scratch_name(drill: &str, source: &str, run: u64) -> String {
    let hash = blake3::hash(format!("{drill}\0{source}\0{run}").as_bytes()).to_hex();
    let mut words = String::new();
    for c in format!("{drill}-{source}").chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (words.is_empty() || words.ends_with('-')) {
            continue;
        }
        words.push(c);
    }
    let room = 63 - "seawall-drill-".len() - 1 - 8;
    let words: String = words.chars().take(room).collect();
    let words = words.trim_end_matches('-');
    if words.is_empty() {
        format!("seawall-drill-{}", &hash[..8])
    } else {
        format!("seawall-drill-{words}-{}", &hash[..8])
    }
}

/// Waits until RDS reports `id` available with an endpoint; returns it
/// and the statuses seen on the way.
async fn wait_available(rds: &Rds, id: &str) -> Result<((String, u16), Vec<String>)> {
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    let mut seen: Vec<String> = Vec::new();
    loop {
        match rds.describe_id(id).await? {
            Some(state) => {
                if seen.last() != Some(&state.status) {
                    seen.push(state.status.clone());
                }
                match (state.status.as_str(), state.endpoint) {
                    ("available", Some(endpoint)) => return Ok((endpoint, seen)),
                    ("failed" | "incompatible-restore" | "incompatible-parameters" | "storage-full" | "deleting", _) => {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "RDS reports the scratch instance {id} {} (seen: {}): its events say why (aws rds describe-events --source-identifier {id} --source-type db-instance)",
                                state.status,
                                seen.join(" > ")
                            ),
                        ))
                    }
                    _ => {}
                }
            }
            None if started.elapsed() > Duration::from_secs(120) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("RDS accepted the restore but shows no instance {id} two minutes on"),
                ))
            }
            None => {}
        }
        if started.elapsed() > AVAILABLE_TIMEOUT {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the scratch instance {id} was not available after {} (seen: {})",
                    humantime::format_duration(AVAILABLE_TIMEOUT),
                    seen.join(" > ")
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The check file and the table listing, in every database of the scratch
/// instance at `host`:`port`, reached as the source's DSN reaches the
/// source.
async fn check(
    req: &DrillRequest,
    dsn: &str,
    host: &str,
    port: u16,
    tools: &PgTools,
) -> Result<std::collections::BTreeMap<String, String>> {
    let (conninfo, password) = conn::elsewhere(dsn, host, port)?;
    let scratch_dsn = match password {
        Some(p) => format!("{conninfo} password={}", conninfo_quote(&p)),
        None => conninfo,
    };
    let started = Instant::now();
    let client = loop {
        match conn::connect(&scratch_dsn).await {
            Ok(c) => break c,
            Err(e) if e.kind() == ErrorKind::Unreachable && started.elapsed() < CONNECT_GRACE => {
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "connecting to the scratch instance at {host}:{port} as the source's DSN's user (tried for {}; its security group must let the agent in)",
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                )))
            }
        }
    };
    let databases: Vec<String> = conn::databases(&client)
        .await?
        .into_iter()
        // RDS's own database lets no customer in.
        .filter(|d| d != "rdsadmin")
        .collect();
    drop(client);
    let checks = match &req.check_file {
        Some(p) => ChecksFile::load(p)?,
        None => ChecksFile::default(),
    };
    let depth = if req.deep {
        Depth::Amchecked
    } else {
        Depth::Catalog
    };
    let mut reports = Vec::new();
    for db in &databases {
        let applies = checks.database.as_deref().is_none_or(|d| d == db);
        let own = if applies {
            checks.clone()
        } else {
            ChecksFile::default()
        };
        reports.push(check_postgres(&with_database(&scratch_dsn, db), &own, depth, tools).await?);
    }
    let ev = check_evidence(&reports, req.deep);
    judged(&reports, format!("{} database(s) checked", reports.len()))?;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_ones_rds_accepts_and_differ_for_each_source() {
        let a = scratch_name("shop-restore-1765000000000", "db", 1);
        assert!(
            a.starts_with("seawall-drill-shop-restore-1765000000000-db-"),
            "{a}"
        );
        let long = "x".repeat(200);
        for name in [
            a.clone(),
            scratch_name(&long, "db", 1),
            scratch_name("Nightly PITR__drill", "orders.db", 1),
            scratch_name("---", "--", 1),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().next().unwrap().is_ascii_lowercase(), "{name}");
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
        assert_ne!(scratch_name(&long, "db", 1), scratch_name(&long, "dc", 1));
        // A retry's copy is another instance.
        assert_ne!(scratch_name(&long, "db", 1), scratch_name(&long, "db", 2));
    }

    #[test]
    fn a_point_restores_inside_the_backups_window_or_says_where_it_is() {
        let w = RestoreWindow {
            earliest_unix_ms: 1_000_000,
            latest_unix_ms: 5_000_000,
        };
        assert_eq!(restore_time(&Point::Latest, &w, 0.5).unwrap(), None);
        let at = |ms: i64| Point::At(chrono::DateTime::from_timestamp_millis(ms).unwrap());
        assert_eq!(
            restore_time(&at(2_000_000), &w, 0.5).unwrap(),
            Some(2_000_000)
        );
        let e = restore_time(&at(6_000_000), &w, 0.5)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside what the instance's automated backups can restore"),
            "{e}"
        );
        assert!(restore_time(&at(999_999), &w, 0.5).is_err());
        // A random point within the last second, never before the window.
        let r = Point::RandomWithin(Duration::from_secs(1));
        assert_eq!(restore_time(&r, &w, 0.0).unwrap(), Some(4_999_000));
        assert_eq!(restore_time(&r, &w, 1.0).unwrap(), Some(5_000_000));
        let wide = Point::RandomWithin(Duration::from_secs(86_400));
        assert_eq!(restore_time(&wide, &w, 0.0).unwrap(), Some(1_000_000));
    }
}
