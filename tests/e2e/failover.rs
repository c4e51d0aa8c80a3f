//! Failover across two "regions" on this machine: a PostgreSQL primary with
//! a `pg_basebackup -R` standby, a Redis master with a replica, one agent
//! per region, a dev coordinator with the topology, and moto's server for
//! Route 53 (through the real aws-sdk-route53 client). Load generators write
//! to the primaries while the failover runs; what they saw acknowledged is
//! checked in the new primaries.

use crate::fixtures::{S3Kind, S3Server};
use crate::fleet_fixture::*;
use crate::pg_fixture::PgCluster;
use crate::redis::RedisServer;
use crate::replication::Standby;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ZONE: &str = "shop.example.com.";
const RECORD: &str = "db.shop.example.com.";
const WEST: &str = "db-west.example.com";
const EAST: &str = "db-east.example.com";

/// Two regions' servers, agents, coordinator and Route 53.
struct World {
    _tmp: tempfile::TempDir,
    pki: Pki,
    addr: String,
    primary: PgCluster,
    standby: Standby,
    master: RedisServer,
    replica: RedisServer,
    route53: S3Server,
    zone_id: String,
    replicas: Vec<Replica>,
    etcd: Option<crate::etcd_fixture::EtcdCluster>,
    w1: Daemon,
    e1: Daemon,
    /// The west region's own network namespace, when it has one (dropped
    /// last: its processes are gone by then).
    netns: Option<crate::netns_fixture::Netns>,
}

async fn route53(endpoint: &str) -> aws_sdk_route53::Client {
    let creds = aws_sdk_route53::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_route53::config::Builder::new()
        .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
        .region(aws_sdk_route53::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_route53::Client::from_conf(conf)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The record's values as Route 53 holds them.
fn record_values(endpoint: &str, zone: &str) -> Vec<String> {
    rt().block_on(async {
        let out = route53(endpoint)
            .await
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap();
        out.resource_record_sets()
            .iter()
            .filter(|r| r.name() == RECORD)
            .flat_map(|r| r.resource_records().iter().map(|v| v.value().to_string()))
            .collect()
    })
}

/// The PRIMARY record (west, with a health check) and the SECONDARY
/// (east), as a user provisions them ahead.
fn create_failover_records(endpoint: &str, zone: &str) {
    use aws_sdk_route53::types::*;
    rt().block_on(async {
        let c = route53(endpoint).await;
        let check = c
            .create_health_check()
            .caller_reference(format!("seawall-hc-{}", std::process::id()))
            .health_check_config(
                HealthCheckConfig::builder()
                    .r#type(HealthCheckType::Tcp)
                    .ip_address("192.0.2.10")
                    .port(5432)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let check_id = check.health_check().unwrap().id().to_string();
        let record = |value: &str, role: ResourceRecordSetFailover, id: &str| {
            let mut b = ResourceRecordSet::builder()
                .name(RECORD)
                .r#type(RrType::Cname)
                .ttl(30)
                .set_identifier(id)
                .failover(role)
                .resource_records(ResourceRecord::builder().value(value).build().unwrap());
            if id == "west" {
                b = b.health_check_id(&check_id);
            }
            b.build().unwrap()
        };
        c.change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(record(
                                WEST,
                                ResourceRecordSetFailover::Primary,
                                "west",
                            ))
                            .build()
                            .unwrap(),
                    )
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(record(
                                EAST,
                                ResourceRecordSetFailover::Secondary,
                                "east",
                            ))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}

/// Whether each health check of the zone's records is inverted.
fn health_checks_inverted(endpoint: &str) -> Vec<bool> {
    rt().block_on(async {
        let c = route53(endpoint).await;
        let out = c.list_health_checks().send().await.unwrap();
        out.health_checks()
            .iter()
            .map(|h| {
                h.health_check_config()
                    .and_then(|c| c.inverted())
                    .unwrap_or(false)
            })
            .collect()
    })
}

/// Sets the record to `value` (UPSERT), as an operator by hand would.
fn set_record(endpoint: &str, zone: &str, value: &str) {
    use aws_sdk_route53::types::*;
    rt().block_on(async {
        route53(endpoint)
            .await
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Upsert)
                            .resource_record_set(
                                ResourceRecordSet::builder()
                                    .name(RECORD)
                                    .r#type(RrType::Cname)
                                    .ttl(30)
                                    .resource_records(
                                        ResourceRecord::builder().value(value).build().unwrap(),
                                    )
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Stops (SIGSTOP) every process of a region's servers and agent, and
/// continues them when dropped, also when the test fails.
struct Frozen(Vec<i32>);

impl Frozen {
    fn pids_of_postgres(data: &std::path::Path) -> Vec<i32> {
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let ppid: i32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == postmaster {
                pids.push(pid);
            }
        }
        pids
    }

    fn freeze(pids: Vec<i32>) -> Frozen {
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

impl World {
    fn start() -> World {
        World::start_with("")
    }

    /// With `extra` added to the service's table.
    fn start_with(extra: &str) -> World {
        World::build(extra, false, false)
    }

    /// [`World::start_with`], with neither wal_log_hints nor checksums:
    /// a diverged old primary cannot be rewound, only replaced.
    fn start_unrewindable(extra: &str) -> World {
        World::build_with(extra, false, false, false)
    }

    /// Three coordinator replicas on a 3-member etcd (lease TTL 4 s)
    /// instead of one dev replica.
    fn start_ha() -> World {
        World::build("", true, false)
    }

    /// PRIMARY/SECONDARY failover records with a health check on the
    /// PRIMARY, instead of a plain record; the old primary PostgreSQL
    /// fenced by stopping it.
    fn start_with_failover_records() -> World {
        World::build("fence = \"stop\"", false, true)
    }

    /// The west region (its PostgreSQL, Redis and agent) in a network
    /// namespace of its own, which the test can cut off and heal; the
    /// coordinator listens on the host end of its link.
    fn start_partitionable(extra: &str) -> World {
        World::build_full(extra, false, false, true, true)
    }

    fn build(extra: &str, ha: bool, failover_records: bool) -> World {
        World::build_with(extra, ha, failover_records, true)
    }

    fn build_with(extra: &str, ha: bool, failover_records: bool, rewindable: bool) -> World {
        World::build_full(extra, ha, failover_records, rewindable, false)
    }

    fn build_full(
        extra: &str,
        ha: bool,
        failover_records: bool,
        rewindable: bool,
        partitionable: bool,
    ) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let netns = partitionable.then(crate::netns_fixture::Netns::create);
        let prefix = netns.as_ref().map(|n| n.prefix()).unwrap_or_default();
        // Where the west's servers listen, and the coordinator.
        let (west_ip, host_ip) = match &netns {
            Some(n) => (n.ns_ip.clone(), n.host_ip.clone()),
            None => ("127.0.0.1".to_string(), "127.0.0.1".to_string()),
        };
        // Also on TCP: the automatic failover's reach probe dials it, and
        // a failback's rebuilt standby streams from it.
        let primary = PgCluster::start_in(
            &dir.join("pg-west"),
            &format!(
                "listen_addresses = '{west_ip}'\nwal_keep_size = '256MB'\nwal_log_hints = {}",
                if rewindable { "on" } else { "off" }
            ),
            prefix.clone(),
        );
        if netns.is_some() {
            let hba = primary.data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(
                "host all all 10.250.0.0/16 trust\nhost replication all 10.250.0.0/16 trust\n",
            );
            std::fs::write(&hba, text).unwrap();
            primary.sql("postgres", "SELECT pg_reload_conf()");
        }
        let standby = Standby::start_from(
            &dir.join("pg-east"),
            &format!(
                "host={west_ip} port={} user=postgres dbname=postgres",
                primary.port
            ),
            &host_ip,
        );
        let master = RedisServer::start_in(
            &dir.join("redis-west"),
            crate::fixtures::free_port(),
            &prefix,
            &west_ip,
            // Reached from the east over the link, without a password.
            &["--protected-mode", "no"],
        );
        let master_port = master.port.to_string();
        let replica = RedisServer::start_in(
            &dir.join("redis-east"),
            crate::fixtures::free_port(),
            &[],
            &host_ip,
            &[
                "--replicaof",
                &west_ip,
                &master_port,
                "--protected-mode",
                "no",
            ],
        );
        let route53_server = S3Server::start(S3Kind::Moto);
        let zone_id = rt().block_on(async {
            let c = route53(&route53_server.endpoint).await;
            let zone = c
                .create_hosted_zone()
                .name(ZONE)
                .caller_reference(format!("seawall-{}", std::process::id()))
                .send()
                .await
                .unwrap();
            zone.hosted_zone()
                .unwrap()
                .id()
                .trim_start_matches("/hostedzone/")
                .to_string()
        });
        let style = if failover_records {
            create_failover_records(&route53_server.endpoint, &zone_id);
            "failover"
        } else {
            set_record(&route53_server.endpoint, &zone_id, WEST);
            "plain"
        };
        let secret = dir.join("route53.secret");
        std::fs::write(&secret, "testing").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let topology = format!(
            r#"
[replication]
interval = "1s"

[[regions]]
name = "west"
role = "primary"

[[regions]]
name = "east"
role = "standby"

[[services]]
name = "shop"
rpo = "30s"
canary = true
catch_up_timeout = "20s"
{extra}

[services.dns]
style = "{style}"
zone_id = "{zone_id}"
name = "{RECORD}"
type = "CNAME"
ttl = 30
endpoint = "{}"
access_key_id = "testing"
secret_access_key_file = "{}"

[services.dns.values]
west = "{WEST}"
east = "{EAST}"

[[services.stores]]
region = "west"
kind = "postgres"
agent = "w1"
source = "db"
address = "{west_ip}:{}"

[[services.stores]]
region = "east"
kind = "postgres"
agent = "e1"
source = "db"
address = "{host_ip}:{}"

[[services.stores]]
region = "west"
kind = "redis"
agent = "w1"
source = "cache"
address = "{west_ip}:{}"

[[services.stores]]
region = "east"
kind = "redis"
agent = "e1"
source = "cache"
address = "{host_ip}:{}"
"#,
            route53_server.endpoint,
            secret.display(),
            primary.port,
            standby.port,
            master.port,
            replica.port
        );
        let pki = Pki::new(&dir.join("pki"));
        let (etcd, replicas) = if ha {
            let etcd = crate::etcd_fixture::EtcdCluster::start(&dir.join("etcd"), 3);
            let endpoints = etcd
                .endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let store = format!(
                "[etcd]\nendpoints = [{endpoints}]\nprefix = \"/failover\"\nlease_ttl = \"4s\"\nallow_plaintext = true\n{topology}"
            );
            let replicas = ["c1", "c2", "c3"]
                .iter()
                .map(|id| start_replica(&pki, &dir, id, &store, "", false))
                .collect::<Vec<_>>();
            (Some(etcd), replicas)
        } else {
            let store = format!(
                "[dev]\nstate = \"{}\"\n{topology}",
                dir.join("state.redb").display()
            );
            (
                None,
                vec![start_replica_at(
                    &pki, &dir, "c1", &store, "", true, &host_ip,
                )],
            )
        };
        let addr = replicas[0].address();
        let all: Vec<String> = replicas.iter().map(Replica::address).collect();
        let sources = |dsn: &str, host: &str, port: u16| {
            format!("[[sources]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\n\n[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://{host}:{port}\"\n")
        };
        let w1 = start_agent_in(
            &pki,
            &dir,
            "w1",
            "west",
            &all,
            &sources(&primary.dsn("postgres"), &west_ip, master.port),
            None,
            prefix,
        );
        let e1 = start_agent_with(
            &pki,
            &dir,
            "e1",
            "east",
            &all,
            &sources(&standby.dsn, &host_ip, replica.port),
        );
        let w = World {
            _tmp: tmp,
            pki,
            addr,
            primary,
            standby,
            master,
            replica,
            route53: route53_server,
            zone_id,
            replicas,
            etcd,
            w1,
            e1,
            netns,
        };
        eventually(60, "shop's replication to be ok", || {
            let out = op(&w.pki, &w.addr, &["replication", "--service", "shop"]);
            out.status.success().then_some(())
        });
        w
    }

    /// Waits until the west's stores are fenced: its PostgreSQL refuses a
    /// write as read-only, its Redis follows the east's and refuses writes.
    fn old_primary_is_fenced(&self, secs: u64) {
        eventually(secs, "the old PostgreSQL primary to refuse writes", || {
            let out = Command::new(crate::pg_fixture::pg_bin().join("psql"))
                .args(["-X", "-A", "-t", "-d", &self.primary.dsn("postgres")])
                .args(["-c", "INSERT INTO stray VALUES (1)"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stderr)
                .contains("read-only")
                .then_some(())
        });
        eventually(30, "the old Redis master to follow the new one", || {
            let info = self.master.try_cli(&["INFO", "replication"])?;
            (info.contains("role:slave")
                && info.contains(&format!("master_port:{}", self.replica.port)))
            .then_some(())
        });
        let refused = self.master.try_cli(&["SET", "stray", "2"]);
        assert!(
            refused.as_deref().is_none_or(|r| r.contains("READONLY")),
            "{refused:?}"
        );
    }

    /// Waits for the automatic failover to end; it must have succeeded.
    fn automatic_failover(&self) -> serde_json::Value {
        let f = eventually(60, "an automatic failover to finish", || {
            let out = op(&self.pki, &self.addr, &["failover", "list"]);
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let f = list.as_array()?.first()?.clone();
            (f["state"] != "running").then_some(f)
        });
        assert_eq!(f["state"], "succeeded", "{f:#}");
        assert_eq!(f["automatic"], true, "{f:#}");
        f
    }

    /// The newest load row (at most `acked`) the east has.
    fn rows_present(&self, acked: u64) -> u64 {
        self.standby
            .sql(&format!(
                "SELECT coalesce(max(n), 0) FROM load WHERE n <= {acked}"
            ))
            .parse()
            .unwrap()
    }

    fn failover(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let out = op(&self.pki, &self.addr, &[&["failover"], args].concat());
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.success(),
            json,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// Checks an automatic failover's reported figures against what was
/// measured: the RPO against the load generator's loss within one canary
/// interval (the replication checks' 1 s), the RTO against the wall clock
/// from the fault; returns both.
fn reported_figures_match(f: &serde_json::Value, lost_ms: i64, wall: i64) -> (i64, i64) {
    let rpo = f["rpo_ms"].as_i64().expect("an RPO from the canaries");
    assert!(
        (rpo - lost_ms).abs() <= 1000,
        "reported RPO {rpo} ms, measured loss {lost_ms} ms"
    );
    let rto = f["rto_ms"].as_i64().expect("an RTO");
    assert!(
        (rto - wall).abs() <= 1500,
        "reported RTO {rto} ms, wall clock {wall} ms"
    );
    (rpo, rto)
}

/// Prints what it holds when a test fails while it lives.
struct Shown<'a>(&'a std::cell::RefCell<String>);

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last seen: {}", self.0.borrow());
        }
    }
}

impl Drop for World {
    /// A failed test shows the ends of the daemons' logs.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let daemons = self.replicas.iter().map(|r| &r.daemon);
        for d in daemons.chain([&self.w1, &self.e1]) {
            let text = d.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} (last 40 lines)\n{}",
                d.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Writes rows 1, 2, 3... to a table, one autocommitted INSERT each, and
/// counts those PostgreSQL acknowledged (in order: one session).
struct PgLoad {
    child: Child,
    acked: Arc<AtomicU64>,
    /// When each row was acknowledged (ms since the epoch), by row.
    times: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl PgLoad {
    fn start(pg: &PgCluster) -> PgLoad {
        PgLoad::on(&pg.dsn("postgres"), 1)
    }

    /// Rows `first`, `first + 1`... through the server at `dsn`.
    fn on(dsn: &str, first: u64) -> PgLoad {
        crate::pg_fixture::psql_dsn(
            dsn,
            "CREATE TABLE IF NOT EXISTS load (n bigint PRIMARY KEY)",
        );
        let mut child = Command::new(crate::pg_fixture::pg_bin().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for n in first.. {
                if writeln!(stdin, "INSERT INTO load VALUES ({n}) RETURNING n;").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let acked = Arc::new(AtomicU64::new(0));
        let times: Arc<std::sync::Mutex<Vec<i64>>> = Arc::default();
        let (seen, at) = (acked.clone(), times.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse::<u64>() {
                    at.lock().unwrap().push(now_ms());
                    seen.store(n, Ordering::SeqCst);
                }
            }
        });
        PgLoad {
            child,
            acked,
            times,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// The loss, as time: from the first acknowledged row after `present`
    /// (the newest the new primary has) to row `acked` (rows from 1).
    fn lost_ms(&self, acked: u64, present: u64) -> i64 {
        if present >= acked {
            return 0;
        }
        let times = self.times.lock().unwrap();
        times[acked as usize - 1] - times[present as usize]
    }
}

impl Drop for PgLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SET load:1, load:2... through one redis-cli session; counts the OKs.
struct RedisLoad {
    child: Child,
    acked: Arc<AtomicU64>,
}

impl RedisLoad {
    fn start(port: u16) -> RedisLoad {
        RedisLoad::on(port, "load")
    }

    /// SET `prefix`:1, `prefix`:2...
    fn on(port: u16, prefix: &'static str) -> RedisLoad {
        RedisLoad::on_at("127.0.0.1", port, prefix)
    }

    /// [`RedisLoad::on`] the server at `host`.
    fn on_at(host: &str, port: u16, prefix: &'static str) -> RedisLoad {
        let mut child = Command::new("redis-cli")
            .args(["-h", host, "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for n in 1.. {
                if writeln!(stdin, "SET {prefix}:{n} {n}").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let acked = Arc::new(AtomicU64::new(0));
        let seen = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "OK" {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        RedisLoad { child, acked }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
}

impl Drop for RedisLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_planned_switchover_loses_no_acknowledged_write_and_moves_dns() {
    let w = World::start();

    // The plan changes nothing and says what will happen.
    let (ok, plan, err) = w.failover(&["plan", "shop", "--to", "east", "--switchover"]);
    assert!(ok, "{err} {plan}");
    assert_eq!(plan["refusals"], serde_json::json!([]), "{plan}");
    assert!(plan["steps"].to_string().contains("pg_promote"), "{plan}");
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "t");

    let pg_load = PgLoad::start(&w.primary);
    let redis_load = RedisLoad::start(w.master.port);
    eventually(30, "the load generators to be acknowledged", || {
        (pg_load.acked() > 200 && redis_load.acked() > 200).then_some(())
    });

    let started = std::time::Instant::now();
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    let wall = started.elapsed();
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    let pg_acked = pg_load.acked();
    let redis_acked = redis_load.acked();
    drop(pg_load);
    drop(redis_load);

    // Zero loss: every write acknowledged in the west is in the east.
    let present: u64 = w
        .standby
        .sql(&format!("SELECT count(*) FROM load WHERE n <= {pg_acked}"))
        .parse()
        .unwrap();
    assert_eq!(
        present, pg_acked,
        "PostgreSQL writes acknowledged in the west missing in the east"
    );
    let keys = w.replica.cli(&["EVAL", "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + redis.call('EXISTS', 'load:' .. i) end return n", "0", &redis_acked.to_string()]);
    assert_eq!(
        keys.trim(),
        redis_acked.to_string(),
        "Redis writes acknowledged in the west missing in the east"
    );

    // The east is the primary; the west refuses writes.
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "f");
    w.standby.sql("INSERT INTO load VALUES (-1)");
    assert!(w
        .replica
        .cli(&["INFO", "replication"])
        .contains("role:master"));
    let refused = Command::new(crate::pg_fixture::pg_bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            &w.primary.dsn("postgres"),
            "-c",
            "INSERT INTO load VALUES (-2)",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only"),
        "{refused:?}"
    );

    // DNS answers the east.
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![EAST.to_string()]
    );

    // The journal: every step with its evidence, and the figures.
    let steps = f["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "precheck",
            "fence",
            "catch up",
            "promote postgres",
            "promote redis",
            "dns",
            "post-check",
            "demote",
            "follow postgres",
            "follow redis"
        ]
    );
    assert!(steps.iter().all(|s| s["state"] == "done"), "{f:#}");
    // The old primary follows the new one: rewound, not copied again.
    assert!(
        steps[8]["detail"]
            .as_str()
            .unwrap()
            .contains("rewound onto the new primary's timeline with pg_rewind"),
        "{f:#}"
    );
    assert!(
        steps[1]["evidence"]["postgres_fence_lsn"].is_string(),
        "{f:#}"
    );
    assert!(
        steps[3]["evidence"]["postgres_promoted_timeline"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 2
    );
    assert_eq!(f["lsn_gap_bytes"], 0, "{f:#}");
    assert_eq!(f["offset_gap"], 0, "{f:#}");
    assert_eq!(f["rpo_ms"], 0, "{f:#}");
    let rto = f["rto_ms"].as_i64().unwrap();
    assert!(
        rto > 0 && (rto as u128) <= wall.as_millis() + 500,
        "RTO {rto} ms, wall {wall:?}"
    );

    // The replication checks follow the new roles: the east is the
    // primary and the west, a standby of it now, replicates from it.
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "t");
    let last = std::cell::RefCell::new(String::new());
    let _shown = Shown(&last);
    eventually(
        60,
        "the replication checks to see the new roles, all ok",
        || {
            let out = op(&w.pki, &w.addr, &["replication", "--service", "shop"]);
            *last.borrow_mut() = format!(
                "{}\nwest's log: {}",
                String::from_utf8_lossy(&out.stdout),
                std::fs::read_to_string(w.primary.data.join("seawall-failback.log"))
                    .unwrap_or_default()
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let s = v["services"][0].clone();
            let east = s["stores"]
                .as_array()?
                .iter()
                .find(|x| x["region"] == "east" && x["kind"] == "postgres")?
                .clone();
            (east["role"] == "primary" && out.status.success()).then_some(s)
        },
    );

    // The plan now refuses the same move.
    let (ok, plan, _) = w.failover(&["plan", "shop", "--to", "east"]);
    assert!(!ok);
    assert!(plan["refusals"].to_string().contains("already"), "{plan}");

    // Failback under load in the east: back to the west with nothing lost.
    let (ok, plan, err) = w.failover(&["plan", "shop", "--failback"]);
    assert!(ok, "{err} {plan}");
    assert_eq!(plan["to"], "west", "{plan}");
    let pg_load = PgLoad::on(&w.standby.dsn, 1_000_000);
    let redis_load = RedisLoad::on(w.replica.port, "back");
    eventually(
        30,
        "the load generators to be acknowledged in the east",
        || (pg_load.acked() > 1_000_200 && redis_load.acked() > 200).then_some(()),
    );
    let (ok, back, err) = w.failover(&["run", "shop", "--failback", "--wait"]);
    assert!(ok, "{err}\n{back:#}");
    assert_eq!(back["state"], "succeeded", "{back:#}");
    assert_eq!(back["failback"], true, "{back:#}");
    let (pg_acked, redis_acked) = (pg_load.acked(), redis_load.acked());
    drop(pg_load);
    drop(redis_load);
    let present: u64 = w
        .primary
        .sql(
            "postgres",
            &format!("SELECT count(*) FROM load WHERE n BETWEEN 1000000 AND {pg_acked}"),
        )
        .parse()
        .unwrap();
    assert_eq!(
        present,
        pg_acked - 1_000_000 + 1,
        "PostgreSQL writes lost on the way back"
    );
    let keys = w.master.cli(&["EVAL", "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + redis.call('EXISTS', 'back:' .. i) end return n", "0", &redis_acked.to_string()]);
    assert_eq!(
        keys.trim(),
        redis_acked.to_string(),
        "Redis writes lost on the way back"
    );
    let names: Vec<&str> = back["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..3],
        ["rebuild postgres", "rebuild redis", "precheck"]
    );
    assert!(
        back["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("already a standby"),
        "{back:#}"
    );
    assert_eq!(back["rpo_ms"], 0, "{back:#}");
    assert!(back["rto_ms"].as_i64().unwrap() > 0, "{back:#}");
    // The service answers in the west, the east follows it again.
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    w.primary.sql("postgres", "INSERT INTO load VALUES (-3)");
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "t");
    assert!(w
        .replica
        .cli(&["INFO", "replication"])
        .contains("role:slave"));
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![WEST.to_string()]
    );
    eventually(
        60,
        "the replication checks to be ok with the west primary",
        || {
            let out = op(&w.pki, &w.addr, &["replication", "--service", "shop"]);
            out.status.success().then_some(())
        },
    );
}

#[test]
fn a_failover_drill_switches_over_and_back_and_reports_both_directions() {
    let w = World::start();
    let pg_load = PgLoad::start(&w.primary);
    eventually(30, "the load generator to be acknowledged", || {
        (pg_load.acked() > 100).then_some(())
    });
    let out = op(
        &w.pki,
        &w.addr,
        &["drill", "failover", "shop", "--to", "east", "--wait"],
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n{d:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked = pg_load.acked();
    drop(pg_load);
    assert_eq!(d["kind"], "failover");
    assert_eq!(d["verdict"], "met", "{d:#}");
    assert_eq!(d["steady_state"]["primary before"], "west");
    let names: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["switchover to east", "failback to west"]);
    // Each direction's figures are in its step; the drill's are the worse.
    let mut rtos = Vec::new();
    for s in d["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "done", "{s:#}");
        let rto: i64 = s["evidence"]["rto_ms"].as_str().unwrap().parse().unwrap();
        let rpo: i64 = s["evidence"]["rpo_ms"].as_str().unwrap().parse().unwrap();
        assert!(rto > 0 && rto < 10_000, "{s:#}");
        assert_eq!(rpo, 0, "a switchover loses nothing: {s:#}");
        rtos.push(rto);
    }
    eprintln!(
        "failover drill: RTO there {} ms, back {} ms; verdict {}",
        rtos[0], rtos[1], d["verdict"]
    );
    assert_eq!(d["rto_ms"].as_i64(), rtos.iter().copied().max());
    assert_eq!(d["rpo_ms"].as_i64(), Some(0));
    let ids = d["failover_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let back = op_json(
        &w.pki,
        &w.addr,
        &["failover", "status", ids[1].as_str().unwrap()],
    );
    assert_eq!(back["failback"], true);

    // The service answers in its original region: the west takes writes
    // and has every acknowledged one, the east follows again, DNS points
    // home.
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    let present: u64 = w
        .primary
        .sql(
            "postgres",
            &format!("SELECT count(*) FROM load WHERE n <= {acked}"),
        )
        .parse()
        .unwrap();
    assert_eq!(present, acked);
    w.primary.sql("postgres", "INSERT INTO load VALUES (-3)");
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "t");
    assert!(w
        .master
        .cli(&["INFO", "replication"])
        .contains("role:master"));
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![WEST.to_string()]
    );
}

#[test]
fn the_lag_gate_refuses_a_lagging_standby_and_a_dns_record_changed_by_hand_stops_the_flip() {
    let w = World::start();
    // Replay paused while the primary writes far past the 16 MiB bound.
    w.standby.sql("SELECT pg_wal_replay_pause()");
    w.primary.sql(
        "postgres",
        "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 120000) g",
    );
    let (ok, _, err) = w.failover(&["run", "shop", "--to", "east"]);
    assert!(!ok);
    assert!(
        err.contains("trails by") && err.contains("max_lag_bytes"),
        "{err}"
    );
    let audit = op_json(&w.pki, &w.addr, &["audit", "--limit", "5"]);
    assert!(audit.to_string().contains("refused"), "{audit}");

    // Someone points the record elsewhere by hand: with the loss accepted,
    // the failover promotes, then stops at the DNS step without
    // overwriting the record.
    set_record(&w.route53.endpoint, &w.zone_id, "maintenance.example.com");
    let (_, f, err) = w.failover(&["run", "shop", "--to", "east", "--allow-data-loss", "--wait"]);
    assert_eq!(f["state"], "failed", "{err}\n{f:#}");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("someone else changed it"),
        "{f:#}"
    );
    let dns = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dns")
        .unwrap()
        .clone();
    assert_eq!(dns["state"], "failed", "{f:#}");
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec!["maintenance.example.com".to_string()]
    );
    assert!(
        f["expected_loss_bytes"].as_i64().unwrap() > 16 << 20,
        "{f:#}"
    );
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "f");
}

/// The step called `name` of a failover's JSON.
fn step<'a>(f: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    f["steps"].as_array()?.iter().find(|s| s["name"] == name)
}

impl World {
    /// Stops moto (Route 53 no longer answers) until the guard is dropped.
    fn freeze_route53(&self) -> Frozen {
        Frozen::freeze(vec![self.route53.pid()])
    }

    /// Failover `id` as the replica at `addr` reports it.
    fn failover_at(&self, addr: &str, id: &str) -> Option<serde_json::Value> {
        let out = op(&self.pki, addr, &["failover", "status", id]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Starts a failover to the east with Route 53 stopped and waits until
    /// it stands at the DNS step; the failover's id and the guard that
    /// resumes Route 53.
    fn failover_stuck_at_dns(&self, addr: &str) -> (String, Frozen) {
        let route53 = self.freeze_route53();
        let (ok, f, err) = self.failover(&["run", "shop", "--to", "east"]);
        assert!(ok, "{err}");
        let id = f["id"].as_str().unwrap().to_string();
        eventually(60, "the failover to wait at the DNS step", || {
            let f = self.failover_at(addr, &id)?;
            (step(&f, "dns")?["state"] == "running").then_some(())
        });
        (id, route53)
    }
}

#[test]
fn with_route53_unanswering_the_dns_step_waits_saying_so_and_finishes_when_it_returns() {
    let w = World::start();
    let (id, route53) = w.failover_stuck_at_dns(&w.addr);
    let waiting = eventually(60, "the DNS step to say it waits for Route 53", || {
        let f = w.failover_at(&w.addr, &id)?;
        let waits = step(&f, "dns")?["detail"]
            .as_str()?
            .starts_with("waiting: attempt");
        waits.then_some(f)
    });
    assert_eq!(waiting["state"], "running", "{waiting:#}");
    let status = op_json(&w.pki, &w.addr, &["status"]);
    let shown = status["failovers_running"].to_string();
    assert!(
        shown.contains(&id) && shown.contains("step dns (running)"),
        "{status:#}"
    );
    assert_eq!(
        step(&waiting, "promote postgres").unwrap()["state"],
        "done",
        "{waiting:#}"
    );
    drop(route53);
    let done = eventually(90, "the failover to finish once Route 53 answers", || {
        let f = w.failover_at(&w.addr, &id)?;
        (f["state"] != "running").then_some(f)
    });
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![EAST.to_string()]
    );
    let attempts = step(&done, "dns").unwrap()["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "{done:#}");
}

#[test]
fn an_old_primary_cut_off_during_the_failover_is_fenced_when_its_agent_returns() {
    let mut w = World::start_unrewindable("failover_unfenced = true");
    // The west region's agent is gone: the failover cannot fence its stores.
    w.w1.kill9();
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    let fence = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "fence")
        .unwrap()
        .clone();
    assert!(
        fence["detail"]
            .as_str()
            .unwrap()
            .contains("not fenced: unreachable"),
        "{f:#}"
    );
    // Split brain in the making: the old primary still takes writes.
    w.primary.sql("postgres", "CREATE TABLE stray (n int)");
    w.master.cli(&["SET", "stray", "1"]);

    // The agent returns: before anything else its stores are fenced.
    w.w1.restart();
    w.old_primary_is_fenced(30);
    let audit = op_json(&w.pki, &w.addr, &["audit", "--limit", "20"]);
    assert!(audit.to_string().contains("rejoin"), "{audit}");

    // Failback: the diverged old primary (its stray table) cannot be
    // rewound without wal_log_hints, so it is replaced by a base backup of
    // the east and follows it; the stray write is gone, as it must be.
    w.standby.sql("CREATE TABLE since_failover (n int)");
    let (ok, f, err) = w.failover(&["run", "shop", "--failback", "--standby-only", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    let rebuilt = f["steps"][0]["detail"].as_str().unwrap();
    assert!(rebuilt.contains("base backup"), "{f:#}");
    assert!(rebuilt.contains("wal_log_hints"), "{f:#}");
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        w.primary.sql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname IN ('stray', 'since_failover')"
        ),
        "1"
    );
    assert_eq!(
        w.primary.sql(
            "postgres",
            "SELECT to_regclass('since_failover') IS NOT NULL"
        ),
        "t"
    );
    // Its own configuration kept: it still listens where it did.
    assert_eq!(
        w.primary.sql("postgres", "SHOW port"),
        w.primary.port.to_string()
    );
    assert!(!w.primary.root.join("data.seawall-replaced").exists());
}

#[test]
fn a_new_leader_finishes_a_failover_whose_leader_was_killed_between_promotion_and_dns() {
    let mut w = World::start_ha();
    assert!(w.etcd.is_some());
    let status = op_json(&w.pki, &w.addr, &["status"]);
    let leader = status["leader_id"].as_str().unwrap().to_string();
    let other = w
        .replicas
        .iter()
        .find(|r| r.id != leader)
        .unwrap()
        .address();
    // Route 53 does not answer: the failover stops at the DNS step.
    let (id, route53) = w.failover_stuck_at_dns(&other);

    // The leader dies between the promotion and the DNS change.
    w.replicas
        .iter_mut()
        .find(|r| r.id == leader)
        .unwrap()
        .daemon
        .kill9();
    let new_leader = eventually(30, "another replica to lead", || {
        let s = op_json(&w.pki, &other, &["status"]);
        let id = s["leader_id"].as_str()?.to_string();
        (!id.is_empty() && id != leader).then_some(id)
    });
    assert_ne!(new_leader, leader);
    drop(route53);
    let done = eventually(90, "the new leader to finish the failover", || {
        let f = w.failover_at(&other, &id)?;
        (f["state"] != "running").then_some(f)
    });
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![EAST.to_string()]
    );
    // Driven by two leaders, the promotion done once, no gap in the journal.
    assert_eq!(done["epochs"].as_array().unwrap().len(), 2, "{done:#}");
    let steps = done["steps"].as_array().unwrap();
    let promote = steps
        .iter()
        .find(|s| s["name"] == "promote postgres")
        .unwrap();
    assert_eq!(promote["attempts"], 1, "{done:#}");
    let mut last_end = 0;
    for s in steps {
        assert!(s["state"] == "done" || s["state"] == "skipped", "{done:#}");
        let (start, end) = (
            s["started_unix_ms"].as_i64().unwrap(),
            s["ended_unix_ms"].as_i64().unwrap(),
        );
        assert!(start >= last_end && end >= start, "{done:#}");
        last_end = end;
    }
    let log = std::fs::read_to_string(w.standby.root.join("server.log")).unwrap();
    assert_eq!(log.matches("received promote request").count(), 1, "{log}");
}

#[test]
fn a_region_cut_off_is_failed_over_automatically_with_the_loss_and_rto_it_reports() {
    let w = World::start_with("[services.auto_failover]\nafter = 3\ninterval = \"1s\"");
    let pg_load = PgLoad::start(&w.primary);
    let redis_load = RedisLoad::start(w.master.port);
    eventually(30, "the load generators to be acknowledged", || {
        (pg_load.acked() > 200 && redis_load.acked() > 200).then_some(())
    });
    // One signal alone does nothing: the west agent gone, its stores up.
    let mut w = w;
    w.w1.kill9();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let none = op(&w.pki, &w.addr, &["failover", "list"]);
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");
    w.w1.restart();
    eventually(30, "shop's replication to be ok again", || {
        op(&w.pki, &w.addr, &["replication", "--service", "shop"])
            .status
            .success()
            .then_some(())
    });

    // The whole west region stops: its agent, PostgreSQL and Redis.
    let mut pids = Frozen::pids_of_postgres(&w.primary.data);
    pids.push(w.master.pid());
    pids.push(w.w1.pid());
    let cut = now_ms();
    let frozen = Frozen::freeze(pids);
    let acked_before_cut = pg_load.acked();
    let f = w.automatic_failover();
    let wall = now_ms() - cut;
    assert_eq!(f["requested_by"], "automatic", "{f:#}");
    assert!(
        f["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("declared down"),
        "{f:#}"
    );

    // The loss the load generator measured: rows acknowledged in the west
    // that the east lacks, as time.
    let acked = pg_load.acked().max(acked_before_cut);
    let present = w.rows_present(acked);
    let lost_ms = pg_load.lost_ms(acked, present);
    let (rpo, rto) = reported_figures_match(&f, lost_ms, wall);
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![EAST.to_string()]
    );
    eprintln!("automatic failover: RTO {rto} ms (wall {wall} ms), RPO {rpo} ms (measured loss {lost_ms} ms, {} of {acked} rows)", acked - present.min(acked));
    drop(frozen);
    drop(pg_load);
    drop(redis_load);
}

#[test]
fn a_region_partitioned_off_is_failed_over_fenced_when_the_partition_heals_and_failed_back() {
    let w = World::start_partitionable("[services.auto_failover]\nafter = 3\ninterval = \"1s\"");
    let ns = w.netns.as_ref().unwrap();
    // Clients reach the west over the network, as the east does.
    let pg_load = PgLoad::on(
        &format!(
            "host={} port={} user=postgres dbname=postgres",
            ns.ns_ip, w.primary.port
        ),
        1,
    );
    let redis_load = RedisLoad::on_at(&ns.ns_ip, w.master.port, "load");
    eventually(30, "the load generators to be acknowledged", || {
        (pg_load.acked() > 200 && redis_load.acked() > 200).then_some(())
    });

    // The west's link goes down: its agent, PostgreSQL and Redis keep
    // running, unreachable.
    let cut = now_ms();
    ns.cut();
    let acked_before_cut = pg_load.acked();
    let f = w.automatic_failover();
    let wall = now_ms() - cut;
    let acked = pg_load.acked().max(acked_before_cut);
    let present = w.rows_present(acked);
    let lost_ms = pg_load.lost_ms(acked, present);
    drop(pg_load);
    drop(redis_load);
    let (rpo, rto) = reported_figures_match(&f, lost_ms, wall);
    eprintln!(
        "partition: RTO {rto} ms (wall {wall} ms), RPO {rpo} ms (measured loss {lost_ms} ms, {} of {acked} rows)",
        acked - present.min(acked)
    );

    // Inside the cut-off region the old primary still takes writes.
    w.primary.sql("postgres", "CREATE TABLE stray (n int)");

    // The partition heals: before anything else the west's stores are
    // fenced, and writes to them are refused.
    ns.heal();
    w.old_primary_is_fenced(60);

    // Failback: the diverged west is rewound, follows, and takes the
    // service back; its stray write is gone.
    let (ok, back, err) = w.failover(&["run", "shop", "--failback", "--wait"]);
    assert!(ok, "{err}\n{back:#}");
    assert_eq!(back["state"], "succeeded", "{back:#}");
    assert!(
        back["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("rewound onto the new primary's timeline"),
        "{back:#}"
    );
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        w.primary
            .sql("postgres", "SELECT to_regclass('stray') IS NULL"),
        "t"
    );
    assert_eq!(w.standby.sql("SELECT pg_is_in_recovery()"), "t");
}

#[test]
fn with_failover_records_the_primarys_health_check_is_inverted_and_the_records_left_alone() {
    let w = World::start_with_failover_records();
    assert_eq!(health_checks_inverted(&w.route53.endpoint), vec![false]);
    let before = record_values(&w.route53.endpoint, &w.zone_id);
    let (ok, f, err) = w.failover(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    // What Seawall wrote: the PRIMARY's health check inverted, so Route 53
    // answers the SECONDARY; the records themselves untouched.
    assert_eq!(health_checks_inverted(&w.route53.endpoint), vec![true]);
    assert_eq!(record_values(&w.route53.endpoint, &w.zone_id), before);
    let dns = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dns")
        .unwrap()
        .clone();
    assert!(
        dns["detail"].as_str().unwrap().contains("inverted=true"),
        "{f:#}"
    );
    // fence = "stop": the old primary was stopped after its last position
    // was read, stayed down through the demotion, and was started from its
    // remembered data directory as a standby.
    let detail = |name: &str| {
        f["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        detail("fence").contains("stopped (pg_ctl stop -m fast)"),
        "{f:#}"
    );
    assert!(detail("demote").contains("stays down"), "{f:#}");
    // Stopped cleanly before the promotion, its shutdown checkpoint
    // reached the east: nothing to rewind.
    assert!(
        detail("follow postgres").contains("no rewind needed (pg_rewind); started as a standby"),
        "{f:#}"
    );
    assert_eq!(f["lsn_gap_bytes"], 0, "{f:#}");
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "t");
}

#[test]
fn a_leader_stopped_mid_failover_and_continued_after_it_changes_nothing() {
    let w = World::start_ha();
    let status = op_json(&w.pki, &w.addr, &["status"]);
    let leader = status["leader_id"].as_str().unwrap().to_string();
    let leader_pid = w
        .replicas
        .iter()
        .find(|r| r.id == leader)
        .unwrap()
        .daemon
        .pid();
    let other = w
        .replicas
        .iter()
        .find(|r| r.id != leader)
        .unwrap()
        .address();
    let (id, route53) = w.failover_stuck_at_dns(&other);

    // The leader stops past its lease; another takes over and finishes.
    let stopped_leader = Frozen::freeze(vec![leader_pid]);
    eventually(30, "another replica to lead", || {
        let s = op_json(&w.pki, &other, &["status"]);
        let id = s["leader_id"].as_str()?.to_string();
        (!id.is_empty() && id != leader).then_some(())
    });
    drop(route53);
    let done = eventually(90, "the new leader to finish the failover", || {
        let f = w.failover_at(&other, &id)?;
        (f["state"] != "running").then_some(f)
    });
    assert_eq!(done["state"], "succeeded", "{done:#}");

    // The old leader continues: it must not write the record, move DNS or
    // command an agent under its old epoch.
    drop(stopped_leader);
    std::thread::sleep(std::time::Duration::from_secs(6));
    let after = w.failover_at(&other, &id).unwrap();
    assert_eq!(
        after, done,
        "the failover record changed after the old leader continued"
    );
    assert_eq!(
        record_values(&w.route53.endpoint, &w.zone_id),
        vec![EAST.to_string()]
    );
    let old_log = w
        .replicas
        .iter()
        .find(|r| r.id == leader)
        .unwrap()
        .daemon
        .log_text();
    assert!(
        old_log.contains("leadership lost") || old_log.contains("stopped acting"),
        "{old_log}"
    );
    for agent in [&w.w1, &w.e1] {
        let log = agent.log_text();
        assert!(
            !log.contains("refused a command from a deposed leader"),
            "{log}"
        );
    }
}
