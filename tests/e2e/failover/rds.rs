//! RDS for PostgreSQL as a store provider, against moto's RDS and
//! CloudWatch through the real SDK. Moto keeps the control plane and runs
//! no database, so each instance is paired with a local PostgreSQL (its
//! data plane), and the harness, not Seawall, makes the local standby
//! follow what moto was asked: when moto's recorder shows a
//! `PromoteReadReplica`, that instance's server is promoted; a
//! `CreateDBInstanceReadReplica` replaces its server with a copy of the
//! source's (the renamed old one's data kept beside it). Moto leaves a promoted replica's source in place and
//! publishes no metrics: the harness publishes the `ReplicaLag` datapoint
//! RDS would.

use super::load::PgLoad;
use super::world::*;
use crate::fleet_fixture::*;
use base64::Engine as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The application role the fence locks out.
pub(super) const APP_ROLE: &str = "shop_app";
/// Each region's instance and AWS region.
pub(super) const WEST_DB: (&str, &str) = ("shop-west", "us-west-2");
pub(super) const EAST_DB: (&str, &str) = ("shop-east", "us-east-1");
/// Where the west's snapshots are copied (the runbook's cold region).
pub(super) const COLD_REGION: &str = "eu-west-1";
/// The lag the harness publishes for the east's replica.
pub(super) const PUBLISHED_LAG_SECS: f64 = 2.5;

pub(super) async fn rds(endpoint: &str, region: &str) -> aws_sdk_rds::Client {
    let creds = aws_sdk_rds::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_rds::config::Builder::new()
        .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
        .region(aws_sdk_rds::config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_rds::Client::from_conf(conf)
}

/// The runbook's pair in moto: a multi-AZ `db.r6g.large` primary in the
/// west with 7 days of backups (on its data plane's port, which its
/// point-in-time copies keep), and its cross-region read replica in the
/// east; the east's lag metric published.
pub(super) fn create_instances(endpoint: &str, west_port: u16) {
    super::route53::rt().block_on(async {
        let west = rds(endpoint, WEST_DB.1).await;
        let created = west
            .create_db_instance()
            .db_instance_identifier(WEST_DB.0)
            .port(i32::from(west_port))
            .engine("postgres")
            .db_instance_class("db.r6g.large")
            .master_username("seawall")
            .master_user_password("not-used-by-the-test")
            .allocated_storage(20)
            .multi_az(true)
            .backup_retention_period(7)
            .send()
            .await
            .unwrap();
        let arn = created
            .db_instance()
            .unwrap()
            .db_instance_arn()
            .unwrap()
            .to_string();
        rds(endpoint, EAST_DB.1)
            .await
            .create_db_instance_read_replica()
            .db_instance_identifier(EAST_DB.0)
            .source_db_instance_identifier(arn)
            .db_instance_class("db.r6g.large")
            .send()
            .await
            .unwrap();
        publish_lag(endpoint, PUBLISHED_LAG_SECS).await;
    });
}

/// Publishes a `ReplicaLag` datapoint for the east's replica, as RDS does
/// every minute.
pub(super) async fn publish_lag(endpoint: &str, secs: f64) {
    publish_metric(
        endpoint,
        ("AWS/RDS", "ReplicaLag"),
        ("DBInstanceIdentifier", EAST_DB.0),
        secs,
        aws_sdk_cloudwatch::types::StandardUnit::Seconds,
    )
    .await;
}

/// Publishes one datapoint of `metric` (namespace, name) for `dimension`
/// (name, value) in the east's AWS region, as a managed service does each
/// minute (moto publishes none).
pub(super) async fn publish_metric(
    endpoint: &str,
    metric: (&str, &str),
    dimension: (&str, &str),
    value: f64,
    unit: aws_sdk_cloudwatch::types::StandardUnit,
) {
    let creds =
        aws_sdk_cloudwatch::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_cloudwatch::config::Builder::new()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new(EAST_DB.1))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
        .put_metric_data()
        .namespace(metric.0)
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name(metric.1)
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name(dimension.0)
                        .value(dimension.1)
                        .build(),
                )
                .value(value)
                .unit(unit)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Service `service`'s `kind` store in `region`, as the replication report
/// has it (the command exits 1 when the service is broken: the report is
/// read all the same).
pub(super) fn reported_store(
    w: &World,
    service: &str,
    region: &str,
    kind: &str,
) -> Option<serde_json::Value> {
    let out = op(&w.pki, &w.addr, &["replication", "--service", service]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    report["services"][0]["stores"]
        .as_array()?
        .iter()
        .find(|st| st["region"] == region && st["kind"] == kind)
        .cloned()
}

/// The RDS calls moto received, as (action, form fields), oldest first.
pub(super) fn calls(endpoint: &str) -> Vec<(String, Vec<(String, String)>)> {
    let Some(recording) = moto_api(endpoint, "GET", "/moto-api/recorder/download-recording") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in recording.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let body = entry["body"].as_str().unwrap_or_default();
        let body = if entry["body_encoded"] == true {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else {
            body.to_string()
        };
        let fields: Vec<(String, String)> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%3A", ":")))
            .collect();
        if let Some((_, action)) = fields.iter().find(|(k, _)| k == "Action") {
            found.push((action.clone(), fields.clone()));
        }
    }
    found
}

/// The body of moto's answer to `method path` (None: no 200 answer).
fn moto_api(endpoint: &str, method: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_string())
}

/// The field `key` of a recorded call.
pub(super) fn field<'a>(call: &'a [(String, String)], key: &str) -> Option<&'a str> {
    call.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One instance's data plane: the local server moto's instance stands for.
#[derive(Clone)]
pub(super) struct Site {
    pub(super) instance: &'static str,
    pub(super) aws_region: &'static str,
    pub(super) dsn: String,
    pub(super) root: std::path::PathBuf,
    pub(super) port: u16,
    pub(super) listen: String,
}

impl Site {
    fn data(&self) -> std::path::PathBuf {
        self.root.join("data")
    }

    /// What RDS does to the instance's database when moto was asked to
    /// promote it.
    fn promote(&self) {
        crate::pg_fixture::psql_dsn(&self.dsn, "SELECT pg_promote(true, 60)");
    }

    /// What RDS does when moto was asked to create this instance as a read
    /// replica of `source` (after the old one was renamed away): a new
    /// server, a copy of the source's, replaying from it. The old data
    /// directory stays beside it (the renamed instance's).
    fn become_replica_of(&self, source: &Site, kept: usize) {
        let pg_ctl = crate::pg_fixture::pg_bin().join("pg_ctl");
        let _ = crate::pg_fixture::as_pg(&pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output();
        std::fs::rename(self.data(), self.root.join(format!("data.kept-{kept}"))).unwrap();
        crate::replication::clone_and_start(&self.root, &source.dsn, self.port, &self.listen);
    }
}

/// Where point-in-time copies get their data plane: servers under `dir`
/// on `ip`, their endpoint names given that address in `hosts` (the hosts
/// file of the network namespace the drilling agent runs in).
#[derive(Clone)]
pub(super) struct ScratchPlace {
    pub(super) dir: std::path::PathBuf,
    pub(super) ip: String,
    pub(super) hosts: std::path::PathBuf,
    /// While set, a copy gets no server: its drill waits at the check.
    pub(super) withheld: Arc<AtomicBool>,
}

impl ScratchPlace {
    /// What RDS does for `RestoreDBInstanceToPointInTime` of `source` into
    /// `target`: a new server with the source's data (its latest state),
    /// at the endpoint RDS names, on the source's port.
    fn restore(&self, source: &Site, target: &str) {
        if self.withheld.load(Ordering::SeqCst) {
            return;
        }
        let root = self.dir.join(target);
        crate::pg_fixture::pg_dir(&root);
        crate::replication::clone_and_start(&root, &source.dsn, source.port, &self.ip);
        crate::pg_fixture::psql_dsn(
            &format!(
                "host={} port={} user=postgres dbname=postgres",
                root.display(),
                source.port
            ),
            "SELECT pg_promote(true, 60)",
        );
        crate::netns_fixture::resolve_inside(
            &self.hosts,
            &format!(
                "{target}.aaaaaaaaaa.{}.rds.amazonaws.com",
                source.aws_region
            ),
            &self.ip,
        );
    }

    /// What RDS does for `DeleteDBInstance` of a copy: its server goes.
    fn delete(&self, target: &str) {
        let data = self.dir.join(target).join("data");
        if data.exists() {
            let _ = crate::pg_fixture::as_pg(&crate::pg_fixture::pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Makes the local servers follow what moto was asked, in order: a
/// promotion promotes the instance's server, a new read replica replaces
/// its server with a copy of the source's, a point-in-time restore starts
/// a copy (when a [`ScratchPlace`] is given) and its deletion stops it.
/// Stops when dropped.
pub(super) struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(super) scratch: Option<ScratchPlace>,
}

impl Follower {
    pub(super) fn start(
        endpoint: &str,
        sites: Vec<Site>,
        scratch: Option<ScratchPlace>,
    ) -> Follower {
        assert!(
            moto_api(endpoint, "POST", "/moto-api/recorder/start-recording").is_some(),
            "moto's recorder did not start"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (endpoint, halt) = (endpoint.to_string(), stop.clone());
        let kept = scratch.clone();
        let thread = std::thread::spawn(move || {
            let site = |id: &str| sites.iter().find(|s| s.instance == id).cloned();
            let mut handled = 0;
            while !halt.load(Ordering::SeqCst) {
                let seen = calls(&endpoint);
                for (action, f) in seen.iter().skip(handled) {
                    let target = field(f, "DBInstanceIdentifier").and_then(site);
                    if !action.starts_with("Describe") && !action.starts_with("Get") {
                        eprintln!(
                            "moto was asked {action} of {:?}",
                            target.as_ref().map(|t| t.instance)
                        );
                    }
                    match (action.as_str(), target) {
                        ("PromoteReadReplica", Some(t)) => t.promote(),
                        ("CreateDBInstanceReadReplica", Some(t)) => {
                            let source = field(f, "SourceDBInstanceIdentifier")
                                .and_then(|s| site(s.rsplit(':').next().unwrap_or(s)))
                                .expect("a replica of a known instance");
                            t.become_replica_of(&source, handled);
                        }
                        ("RestoreDBInstanceToPointInTime", _) => {
                            if let (Some(place), Some(source), Some(target)) = (
                                &scratch,
                                field(f, "SourceDBInstanceIdentifier").and_then(site),
                                field(f, "TargetDBInstanceIdentifier"),
                            ) {
                                place.restore(&source, target);
                            }
                        }
                        ("DeleteDBInstance", None) => {
                            if let (Some(place), Some(target)) =
                                (&scratch, field(f, "DBInstanceIdentifier"))
                            {
                                place.delete(target);
                            }
                        }
                        _ => {}
                    }
                }
                handled = handled.max(seen.len());
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        Follower {
            stop,
            thread: Some(thread),
            scratch: kept,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Copies a failed drill left running go with the test.
        if let Some(place) = &self.scratch {
            for e in std::fs::read_dir(&place.dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                place.delete(&e.file_name().to_string_lossy());
            }
        }
    }
}

/// The roles a fresh world's primary gets: the application's, which may
/// create its tables.
pub(super) const APP_ROLE_SQL: &str =
    "CREATE ROLE shop_app LOGIN; GRANT USAGE, CREATE ON SCHEMA public TO shop_app";

/// `dsn` as the application role.
pub(super) fn as_app(dsn: &str) -> String {
    format!("{dsn} user={APP_ROLE}")
}

#[test]
fn an_rds_switchover_under_load_locks_the_old_primary_out_promotes_through_the_api_and_loses_nothing(
) {
    let w = World::start_rds();
    // What the replication check reads of RDS: the east's instance is a
    // replica of the west's, both available.
    let seen = std::cell::RefCell::new(String::new());
    let shown = Shown(&seen);
    let managed = |report: &serde_json::Value, instance: &str| {
        report["services"][0]["stores"]
            .as_array()?
            .iter()
            .find(|st| st["managed"]["instance"] == instance)
            .map(|st| st["managed"].clone())
    };
    eventually(30, "RDS's view in the replication report", || {
        let report = op_json(&w.pki, &w.addr, &["replication", "--service", "shop"]);
        *seen.borrow_mut() = report.to_string();
        let east = managed(&report, EAST_DB.0)?;
        let west = managed(&report, WEST_DB.0)?;
        (east["status"] == "available"
            && east["source"]
                .as_str()?
                .starts_with("arn:aws:rds:us-west-2:")
            && west["status"] == "available"
            && west["source"] == "")
            .then_some(())
    });
    drop(shown);
    // The plan says what RDS will be asked.
    let (ok, plan, err) = w.failover(&["plan", "shop", "--to", "east", "--switchover"]);
    assert!(ok, "{err}\n{plan:#}");
    let steps = plan["steps"].to_string();
    for said in [
        "(RDS instance shop-west) locked out: its application roles lose LOGIN",
        "PromoteReadReplica of RDS instance shop-east",
        "stays locked out (an RDS instance cannot follow another)",
        "RDS instance shop-west renamed to shop-west-diverged-<time> (kept)",
    ] {
        assert!(steps.contains(said), "{said}: {plan:#}");
    }
    let pg_load = PgLoad::on(&as_app(&w.primary.dsn("postgres")), 1);
    eventually(30, "the load generator to be acknowledged", || {
        (pg_load.acked() > 100).then_some(())
    });
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    let fence = step(&f, "fence").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fence.contains("shop-west fenced: LOGIN taken from shop_app and 1 session(s) ended"),
        "{f:#}"
    );
    let promote = step(&f, "promote postgres").unwrap_or_else(|| panic!("{f:#}"))["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        promote.contains("shop-east: PromoteReadReplica accepted")
            && promote.contains("LOGIN given back to shop_app"),
        "{f:#}"
    );
    // Moto was asked exactly what the runbook does: promote the east's
    // replica, keeping 7 days of backups.
    let promoted: Vec<_> = calls(&w.route53.endpoint)
        .into_iter()
        .filter(|(a, _)| a == "PromoteReadReplica")
        .collect();
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    assert_eq!(
        field(&promoted[0].1, "DBInstanceIdentifier"),
        Some(EAST_DB.0)
    );
    assert_eq!(field(&promoted[0].1, "BackupRetentionPeriod"), Some("7"));
    // Nothing acknowledged is missing in the east, and the application
    // writes there; in the west it may not even log in.
    let acked = pg_load.acked();
    drop(pg_load);
    assert_eq!(w.rows_present(acked), acked, "{f:#}");
    crate::pg_fixture::psql_dsn(
        &as_app(&w.standby.dsn),
        &format!("INSERT INTO load VALUES ({})", acked + 1_000_000),
    );
    let (ok, said) = crate::pg_fixture::psql_tried(
        &as_app(&w.primary.dsn("postgres")),
        None,
        "INSERT INTO load VALUES (-1)",
    );
    // Locked out until the follow step made it a read replica: either way
    // the application's write is refused.
    assert!(
        !ok && (said.contains("not permitted to log in") || said.contains("read-only")),
        "{said}"
    );
    for s in f["steps"].as_array().unwrap() {
        eprintln!("{}: {}", s["name"], s["detail"]);
    }
    eprintln!(
        "RTO {} ms, RPO {} ms ({})",
        f["rto_ms"], f["rpo_ms"], f["rpo_basis"]
    );
    // The promotion's parting is recorded on the new primary.
    assert_eq!(
        w.standby.sql("SELECT count(*) FROM seawall.rds_partings"),
        "1"
    );
    // The old primary follows again: renamed away (kept, with its data),
    // and a new read replica of the east made under its name.
    let follow = step(&f, "follow postgres").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        follow.contains("the old shop-west kept as shop-west-diverged-")
            && follow.contains("CreateDBInstanceReadReplica shop-west of arn:aws:rds:us-east-1:")
            && follow.contains("available and replaying"),
        "{f:#}"
    );
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "t");
    let instances = instances(&w.route53.endpoint, WEST_DB.1);
    assert!(
        instances
            .iter()
            .any(|i| i.starts_with("shop-west-diverged-"))
            && instances.contains(&WEST_DB.0.to_string()),
        "{instances:?}"
    );

    // And back: the west is the primary again, nothing lost, and the east
    // follows it as a new replica.
    let pg_load = PgLoad::on(&as_app(&w.standby.dsn), 2_000_000);
    eventually(
        30,
        "the load generator to be acknowledged in the east",
        || (pg_load.acked() > 2_000_100).then_some(()),
    );
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "west", "--switchover", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    let acked = pg_load.acked();
    drop(pg_load);
    assert_eq!(
        w.primary.sql(
            "postgres",
            &format!("SELECT max(n) FROM load WHERE n <= {acked}")
        ),
        acked.to_string(),
        "{f:#}"
    );
    assert!(
        step(&f, "follow postgres").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("CreateDBInstanceReadReplica shop-east of arn:aws:rds:us-west-2:"),
        "{f:#}"
    );
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "t");
    eprintln!(
        "switched back: RTO {} ms, RPO {} ms",
        f["rto_ms"], f["rpo_ms"]
    );
}

/// The instances moto holds in `region`.
fn instances(endpoint: &str, region: &str) -> Vec<String> {
    super::route53::rt().block_on(async {
        rds(endpoint, region)
            .await
            .describe_db_instances()
            .send()
            .await
            .unwrap()
            .db_instances()
            .iter()
            .filter_map(|i| i.db_instance_identifier().map(str::to_string))
            .collect()
    })
}

#[test]
fn an_rds_primary_cut_off_is_locked_out_when_its_agent_returns_and_its_loss_is_never_called_zero() {
    let mut w = World::start_rds_with(|s| s.set("failover_unfenced", true));
    // The east's server stops answering: RDS's ReplicaLag metric still
    // bounds how far it trails, never below what was published.
    {
        let _frozen = Frozen::freeze(Frozen::pids_of_postgres(&w.standby.root.join("data")));
        let seen = std::cell::RefCell::new(String::new());
        let shown = Shown(&seen);
        let east = eventually(30, "the east's lag from the metric", || {
            // Broken (the east does not answer): the command exits 1.
            let out = op(&w.pki, &w.addr, &["replication", "--service", "shop"]);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            *seen.borrow_mut() = report.to_string();
            report["services"][0]["stores"]
                .as_array()?
                .iter()
                .find(|st| {
                    st["region"] == "east"
                        && st["kind"] == "postgres"
                        && st["reasons"]
                            .to_string()
                            .contains("by the ReplicaLag metric")
                })
                .cloned()
        });
        drop(shown);
        assert_eq!(east["verdict"], "broken", "{east:#}");
        let lag = east["lag_secs"].as_f64().unwrap();
        assert!(lag >= PUBLISHED_LAG_SECS, "{east:#}");
    }
    // The west's agent is gone: the failover cannot lock its instance out.
    w.w1.kill9();
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    assert!(
        step(&f, "fence").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("not fenced: unreachable"),
        "{f:#}"
    );
    // Split brain in the making: the application still writes there.
    let west_app = as_app(&w.primary.dsn("postgres"));
    crate::pg_fixture::psql_dsn(
        &west_app,
        "CREATE TABLE stray (n int); INSERT INTO stray VALUES (1)",
    );
    // The agent returns: the instance is locked out before anything else.
    w.w1.restart();
    eventually(30, "the old primary to lock the application out", || {
        let (ok, said) = crate::pg_fixture::psql_tried(&west_app, None, "SELECT 1");
        (!ok && said.contains("not permitted to log in")).then_some(())
    });
    // What it wrote past the parting cannot be counted on RDS (no
    // pg_waldump): the record keeps its bound, never a measured 0.
    let after = w.measured_at_rejoin(&f);
    let measured = after["rpo_measured"].as_str().unwrap();
    assert!(
        measured.contains("past the parting")
            && measured.contains("not counted")
            && measured.contains("the bound stands"),
        "{after:#}"
    );
    assert!(after["rpo_measured_ms"].is_null(), "{after:#}");
    eprintln!(
        "cut-off RDS primary at rejoin: {measured}; RPO {} ({})",
        after["rpo_ms"], after["rpo_basis"]
    );
    // Its stray write is still there, for an operator to review.
    assert_eq!(w.primary.sql("postgres", "SELECT count(*) FROM stray"), "1");
}

#[test]
fn an_agent_deletes_the_scratch_instances_a_killed_drill_left_behind_and_nothing_else() {
    let mut w = World::start_rds();
    let endpoint = w.route53.endpoint.clone();
    // A drill's point-in-time copy, left when its agent (w1) was killed;
    // another agent's, and an instance that is not Seawall's.
    super::route53::rt().block_on(async {
        let west = rds(&endpoint, WEST_DB.1).await;
        for (id, agent) in [("seawall-drill-left", "w1"), ("seawall-drill-other", "x9")] {
            west.restore_db_instance_to_point_in_time()
                .source_db_instance_identifier(WEST_DB.0)
                .target_db_instance_identifier(id)
                .use_latest_restorable_time(true)
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("seawall:scratch")
                        .value("true")
                        .build(),
                )
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("seawall:agent")
                        .value(agent)
                        .build(),
                )
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("seawall:expires")
                        .value("9999999999")
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    });
    w.w1.restart();
    eventually(30, "the leftover to be deleted", || {
        (!instances(&endpoint, WEST_DB.1).contains(&"seawall-drill-left".to_string())).then_some(())
    });
    let left = instances(&endpoint, WEST_DB.1);
    assert!(
        left.contains(&"seawall-drill-other".to_string()) && left.contains(&WEST_DB.0.to_string()),
        "{left:?}"
    );
    let deleted: Vec<_> = calls(&endpoint)
        .into_iter()
        .filter(|(a, _)| a == "DeleteDBInstance")
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(field(&deleted[0].1, "SkipFinalSnapshot"), Some("true"));
}

/// Runs `seawall drill ARGS --wait`; its exit status and journal.
fn drill_waited(w: &World, args: &[&str]) -> (bool, serde_json::Value) {
    let out = op(&w.pki, &w.addr, &[&["drill"], args, &["--wait"]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let journal: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the drill printed no journal ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), journal)
}

/// The drill's step `name`.
fn drill_step<'a>(d: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    d["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name:?} in {d:#}"))
}

#[test]
fn an_rds_point_in_time_drill_restores_checks_and_deletes_a_scratch_instance_even_when_its_check_fails_or_its_job_is_cancelled(
) {
    let w = World::start_rds_partitionable();
    let endpoint = w.route53.endpoint.clone();
    // What only the west's data holds: the check passes only where the
    // point-in-time copy has it.
    w.primary.sql(
        "postgres",
        "CREATE TABLE pitr_marker (n int); INSERT INTO pitr_marker VALUES (42)",
    );
    let checks = w._tmp.path().join("shop-checks.toml");
    let check = |n: i32| {
        std::fs::write(
            &checks,
            format!("database = \"postgres\"\n\n[[zero_rows]]\nname = \"the marker is there\"\nsql = \"SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pitr_marker WHERE n = {n})\"\n"),
        )
        .unwrap();
    };
    check(42);
    // The runbook's "database failure" row (RTO 15 min, RPO 5 min), drilled
    // as its scenario says: RDS's own point-in-time restore.
    let (ok, d) = drill_waited(&w, &["run", "database failure"]);
    assert!(ok, "{d:#}");
    assert_eq!(d["kind"], "rds-pitr", "{d:#}");
    assert_eq!(d["scenario"], "database failure", "{d:#}");
    assert_eq!(d["region"], "west", "{d:#}");
    assert_eq!(d["verdict"], "met", "{d:#}");
    assert_eq!(d["rto_objective_ms"], 900_000, "{d:#}");
    assert_eq!(d["rpo_objective_ms"], 300_000, "{d:#}");
    eprintln!(
        "database failure on RDS: RTO {} ms (objective 15 min), RPO {} ms (objective 5 min)",
        d["rto_ms"], d["rpo_ms"]
    );
    for s in d["steps"].as_array().unwrap() {
        eprintln!("{}: {} {}", s["name"], s["state"], s["detail"]);
    }
    let choose = drill_step(&d, "db: choose");
    assert!(
        choose["evidence"]["latest_restorable_time"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{d:#}"
    );
    let restored = drill_step(&d, "db: restore");
    let scratch = restored["evidence"]["scratch_instance"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(scratch.starts_with("seawall-drill-shop-pitr-"), "{d:#}");
    assert!(
        drill_step(&d, "db: available")["evidence"]["aws_wait_ms"]
            .as_str()
            .is_some(),
        "{d:#}"
    );
    let checked = drill_step(&d, "db: check");
    assert_eq!(checked["state"], "done", "{d:#}");
    assert_eq!(checked["evidence"]["checks_passed"], "1/1", "{d:#}");
    assert_eq!(drill_step(&d, "db: teardown")["state"], "done", "{d:#}");
    // The RPO is measured back to the latest restorable time RDS gave.
    assert!(d["rpo_ms"].as_i64().is_some_and(|r| r >= 0), "{d:#}");
    // RDS was asked exactly that: the west's latest restorable time into
    // a single-AZ copy tagged as the job's, then deleted without a final
    // snapshot.
    let asked: Vec<_> = calls(&endpoint)
        .into_iter()
        .filter(|(a, _)| a == "RestoreDBInstanceToPointInTime" || a == "DeleteDBInstance")
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    let (restore, delete) = (&asked[0].1, &asked[1].1);
    assert_eq!(asked[0].0, "RestoreDBInstanceToPointInTime");
    assert_eq!(
        field(restore, "SourceDBInstanceIdentifier"),
        Some(WEST_DB.0)
    );
    assert_eq!(
        field(restore, "TargetDBInstanceIdentifier"),
        Some(scratch.as_str())
    );
    assert_eq!(field(restore, "UseLatestRestorableTime"), Some("true"));
    assert_eq!(field(restore, "MultiAZ"), Some("false"));
    let tags: Vec<&str> = restore
        .iter()
        .filter(|(k, _)| k.starts_with("Tags."))
        .map(|(_, v)| v.as_str())
        .collect();
    for t in [
        "seawall:scratch",
        "seawall:agent",
        "w1",
        "seawall:job",
        "seawall:expires",
    ] {
        assert!(tags.contains(&t), "{t}: {tags:?}");
    }
    assert_eq!(
        field(delete, "DBInstanceIdentifier"),
        Some(scratch.as_str())
    );
    assert_eq!(field(delete, "SkipFinalSnapshot"), Some("true"));
    let scratch_left = || {
        instances(&endpoint, WEST_DB.1)
            .into_iter()
            .filter(|i| i.starts_with("seawall-drill-"))
            .collect::<Vec<_>>()
    };
    assert!(scratch_left().is_empty(), "{:?}", scratch_left());

    // A copy that fails its check is deleted all the same.
    check(43);
    let (ok, d) = drill_waited(&w, &["restore", "shop", "--rds"]);
    assert!(!ok, "{d:#}");
    assert_eq!(d["verdict"], "failed", "{d:#}");
    let checked = drill_step(&d, "db: check");
    assert_eq!(checked["state"], "failed", "{d:#}");
    assert!(
        checked["detail"]
            .as_str()
            .unwrap()
            .contains("the marker is there"),
        "{d:#}"
    );
    assert_eq!(drill_step(&d, "db: teardown")["state"], "done", "{d:#}");
    assert!(scratch_left().is_empty(), "{:?}", scratch_left());
    let deleted = calls(&endpoint)
        .into_iter()
        .filter(|(a, _)| a == "DeleteDBInstance")
        .count();
    assert_eq!(deleted, 2);

    // A drill whose job is cancelled while it waits for its copy: the
    // agent kills it, and its sweep deletes the copy at once.
    let place = w._follower.as_ref().unwrap().scratch.as_ref().unwrap();
    place.withheld.store(true, Ordering::SeqCst);
    let out = op(&w.pki, &w.addr, &["drill", "restore", "shop", "--rds"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let copy = eventually(30, "the third copy to be asked for", || {
        let left = scratch_left();
        (left.len() == 1).then(|| left[0].clone())
    });
    let job = format!("{id}.db");
    let out = op(
        &w.pki,
        &w.addr,
        &["jobs", "--cancel", &job, "--reason", "the test cancels it"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(60, "the cancelled drill's copy to be deleted", || {
        scratch_left().is_empty().then_some(())
    });
    let deleted: Vec<_> = calls(&endpoint)
        .into_iter()
        .filter(|(a, f)| {
            a == "DeleteDBInstance" && field(f, "DBInstanceIdentifier") == Some(copy.as_str())
        })
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(field(&deleted[0].1, "SkipFinalSnapshot"), Some("true"));
    let d = eventually(60, "the cancelled drill to settle", || {
        // A failed drill's show exits 1: its journal is printed all the same.
        let out = op(&w.pki, &w.addr, &["drill", "show", &id]);
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (d["state"] == "finished").then_some(d)
    });
    assert_eq!(d["verdict"], "failed", "{d:#}");
}

/// The manual snapshots moto holds in `region` that carry tag `key`, as
/// (id, tags).
fn snapshots(endpoint: &str, region: &str, key: &str) -> Vec<(String, Vec<(String, String)>)> {
    super::route53::rt().block_on(async {
        rds(endpoint, region)
            .await
            .describe_db_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .unwrap()
            .db_snapshots()
            .iter()
            .map(|s| {
                (
                    s.db_snapshot_identifier().unwrap_or_default().to_string(),
                    s.tag_list()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, tags)| tags.iter().any(|(k, _)| k == key))
            .collect()
    })
}

#[test]
fn scheduled_snapshot_copies_carry_the_west_instance_into_the_cold_region_and_keep_the_newest_two()
{
    let w = World::start_rds_scheduled(
        "[[schedules]]\nname = \"db-to-cold\"\nregion = \"west\"\nsource = \"db\"\nkind = \"snapshot_copy\"\ncron = \"*/2 * * * * *\"\n",
    );
    let endpoint = w.route53.endpoint.clone();
    let succeeded = || {
        op_json(&w.pki, &w.addr, &["jobs", "--region", "west"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["kind"] == "snapshot_copy" && j["state"] == "succeeded")
            .cloned()
            .collect::<Vec<_>>()
    };
    let done = eventually(60, "three snapshot copies to succeed", || {
        let done = succeeded();
        (done.len() >= 3).then_some(done)
    });
    // Only the newest two copies are kept in the cold region, each tagged
    // with the instance it is of; none is left in the instance's region.
    let cold = eventually(30, "the older copies to be deleted", || {
        let cold = snapshots(&endpoint, COLD_REGION, "seawall:copy-of");
        (cold.len() == 2).then_some(cold)
    });
    for (id, tags) in &cold {
        assert!(id.starts_with("seawall-shop-west-"), "{id}");
        assert!(
            tags.contains(&("seawall:copy-of".to_string(), WEST_DB.0.to_string())),
            "{tags:?}"
        );
    }
    assert_eq!(
        snapshots(&endpoint, WEST_DB.1, "seawall:copy-of"),
        Vec::new(),
        "the local snapshots are deleted once copied"
    );
    // Each kept copy is one a job recorded as its work.
    let named: Vec<String> = succeeded()
        .iter()
        .filter_map(|j| j["snapshot_id"].as_str().map(str::to_string))
        .collect();
    for (id, _) in &cold {
        assert!(named.contains(id), "{id} not in {named:?} ({done:?})");
    }
    let copies: Vec<_> = calls(&endpoint)
        .into_iter()
        .filter(|(a, _)| a == "CopyDBSnapshot")
        .collect();
    // The recorder starts after the agents: the first runs may precede it.
    assert!(!copies.is_empty(), "{copies:?}");
    for (_, f) in &copies {
        assert!(
            field(f, "SourceDBSnapshotIdentifier")
                .is_some_and(|s| s.starts_with("arn:aws:rds:us-west-2:")
                    && s.contains(":snapshot:seawall-shop-west-")),
            "{f:?}"
        );
    }
}

#[test]
fn the_runbooks_region_failure_row_is_drilled_on_rds_as_a_switchover_and_back_within_its_objectives(
) {
    let w = World::start_rds();
    let pg_load = PgLoad::on(&as_app(&w.primary.dsn("postgres")), 1);
    eventually(30, "the load generator to be acknowledged", || {
        (pg_load.acked() > 100).then_some(())
    });
    let (ok, d) = drill_waited(&w, &["run", "region failure"]);
    assert!(ok, "{d:#}");
    assert_eq!(d["kind"], "failover", "{d:#}");
    assert_eq!(d["verdict"], "met", "{d:#}");
    assert_eq!(d["rto_objective_ms"], 7_200_000, "{d:#}");
    assert_eq!(d["rpo_objective_ms"], 3_600_000, "{d:#}");
    let (rto, rpo) = (d["rto_ms"].as_i64().unwrap(), d["rpo_ms"].as_i64().unwrap());
    assert!(rto > 0 && rto < 7_200_000 && rpo < 3_600_000, "{d:#}");
    // Both ways went through RDS: the east's replica promoted, then the
    // west's new one.
    let promoted: Vec<_> = calls(&w.route53.endpoint)
        .into_iter()
        .filter(|(a, _)| a == "PromoteReadReplica")
        .filter_map(|(_, f)| field(&f, "DBInstanceIdentifier").map(str::to_string))
        .collect();
    assert_eq!(promoted, [EAST_DB.0, WEST_DB.0], "{d:#}");
    // The application's writes, acknowledged while it could log in, are
    // all in the west again.
    let acked = pg_load.acked();
    drop(pg_load);
    assert_eq!(
        w.primary.sql(
            "postgres",
            &format!("SELECT max(n) FROM load WHERE n <= {acked}")
        ),
        acked.to_string(),
        "{d:#}"
    );
    eprintln!("region failure on RDS: RTO {rto} ms (objective 2 h), RPO {rpo} ms (objective 1 h)");
}
