//! The leader's replication checks across two "regions" on this machine:
//! a PostgreSQL primary with a `pg_basebackup -R` standby, a Redis master
//! with a replica reaching it through a link the test can cut, one agent per
//! region, a dev coordinator with the topology. The figures `seawall
//! replication` shows must agree with the servers' own, and the verdicts
//! must follow what is done to them.

use crate::fleet::http_get;
use crate::fleet_fixture::*;
use crate::link_cut::LinkCut;
use crate::pg_fixture::PgCluster;
use crate::redis::RedisServer;
use crate::replication::Standby;
use crate::topology::{strings, Service, Topology};
use std::process::Command;

/// RPO of the test's service: short, so "at risk" comes quickly.
const RPO_SECS: i64 = 4;

fn replication(pki: &Pki, addr: &str) -> Option<serde_json::Value> {
    let out = op(pki, addr, &["replication", "--service", "shop"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .map(|v| v["services"][0].clone())
}

fn store<'a>(service: &'a serde_json::Value, region: &str, kind: &str) -> &'a serde_json::Value {
    service["stores"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|x| x["region"] == region && x["kind"] == kind)
        })
        .unwrap_or(&serde_json::Value::Null)
}

fn topology() -> String {
    Topology::new()
        .replication("interval", "1s")
        .region("west", "primary")
        .region("east", "standby")
        .service(
            Service::new("shop")
                .set("rpo", format!("{RPO_SECS}s"))
                .set("rto", "1m")
                .set("canary", true)
                .store("west", "postgres", "w1", "db")
                .store("east", "postgres", "e1", "db")
                .store("west", "redis", "w1", "cache")
                .store("east", "redis", "e1", "cache"),
        )
        .build()
}

fn sources(dsn: &str, redis_port: u16) -> String {
    format!(
        "[[sources]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\n\n[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{redis_port}\"\n"
    )
}

#[test]
fn lag_canaries_and_verdicts_follow_the_stores_across_two_regions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let primary = PgCluster::start(&dir.join("pg-west"), "");
    let standby = Standby::start(&dir.join("pg-east"), &primary);
    let master = RedisServer::start(&dir.join("redis-west"), &[]);
    let link = LinkCut::new(master.port);
    let replica = RedisServer::start(
        &dir.join("redis-east"),
        &[
            "--replicaof",
            "127.0.0.1",
            &link.port.to_string(),
            "--repl-timeout",
            "60",
        ],
    );

    let pki = Pki::new(&dir.join("pki"));
    let store_section = format!(
        "[dev]\nstate = \"{}\"\n{}",
        dir.join("state.redb").display(),
        topology()
    );
    let c = start_replica(&pki, dir, "c1", &store_section, "", true);
    let addr = c.address();
    let _w1 = start_agent_with(
        &pki,
        dir,
        "w1",
        "west",
        std::slice::from_ref(&addr),
        &sources(&primary.dsn("postgres"), master.port),
    );
    let mut e1 = start_agent_with(
        &pki,
        dir,
        "e1",
        "east",
        std::slice::from_ref(&addr),
        &sources(&standby.dsn, replica.port),
    );

    // Healthy: every store ok, the canary seen in the east within the RPO.
    let healthy = eventually(
        60,
        "every store of shop to be ok with a canary seen",
        || {
            let s = replication(&pki, &addr)?;
            let seen = store(&s, "east", "postgres")["canary_exposure_ms"]
                .as_i64()
                .is_some()
                && store(&s, "east", "redis")["canary_exposure_ms"]
                    .as_i64()
                    .is_some();
            (s["verdict"] == "ok" && seen).then_some(s)
        },
    );
    let pg_east = store(&healthy, "east", "postgres");
    assert_eq!(pg_east["role"], "standby", "{healthy}");
    assert!(
        pg_east["canary_delay_ms"].as_i64().unwrap() < RPO_SECS * 1000,
        "{healthy}"
    );
    assert_eq!(store(&healthy, "west", "postgres")["role"], "primary");
    // The canary really is a row in the primary, replicated to the standby.
    let seq = standby.sql("SELECT seq FROM seawall.canary WHERE service = 'shop'");
    assert!(seq.parse::<u64>().unwrap() > 0, "{seq}");
    assert!(master.cli(&["GET", "seawall:canary:shop"]).contains(':'));

    // Replay paused while the primary writes: the byte lag grows and matches
    // pg_wal_lsn_diff; the canary ages; the verdict turns "at risk".
    standby.sql("SELECT pg_wal_replay_pause()");
    primary.sql(
        "postgres",
        "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    let truth = || -> i64 {
        let current = primary.sql("postgres", "SELECT pg_current_wal_lsn()");
        standby
            .sql(&format!(
                "SELECT pg_wal_lsn_diff('{current}', pg_last_wal_replay_lsn())::int8"
            ))
            .parse()
            .unwrap()
    };
    let lagging = eventually(30, "the reported lag to match pg_wal_lsn_diff", || {
        let expected = truth();
        let s = replication(&pki, &addr)?;
        let lag = store(&s, "east", "postgres")["lag_bytes"].as_i64()?;
        // Within what one interval of canary writes adds to the WAL.
        (expected > 1_000_000 && (lag - expected).abs() < 64 * 1024).then_some(s)
    });
    assert!(
        store(&lagging, "east", "postgres")["reasons"]
            .to_string()
            .contains("replay is paused"),
        "{lagging}"
    );
    let at_risk = eventually(30, "the verdict to turn at risk past the RPO", || {
        let s = replication(&pki, &addr)?;
        (s["verdict"] == "at risk").then_some(s)
    });
    let pg_east = store(&at_risk, "east", "postgres");
    assert_eq!(pg_east["verdict"], "at risk", "{at_risk}");
    assert!(pg_east["canary_exposure_ms"].as_i64().unwrap() > RPO_SECS * 1000);
    assert!(
        pg_east["reasons"].to_string().contains("over the RPO"),
        "{at_risk}"
    );
    assert!(at_risk["exposure_ms"].as_i64().unwrap() > RPO_SECS * 1000);
    // The metrics say the same.
    let metrics = http_get(c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_replication_verdict{service=\"shop\"} 1"),
        "{metrics}"
    );

    // Resumed: ok again within two intervals (and a margin for the replay).
    standby.sql("SELECT pg_wal_replay_resume()");
    eventually(10, "the verdict to return to ok after the resume", || {
        let s = replication(&pki, &addr)?;
        (s["verdict"] == "ok").then_some(())
    });

    // The Redis link cut: broken, saying the link is down and the last
    // offset; restored: ok again.
    link.cut();
    let cut = eventually(90, "the Redis replica to show its link down", || {
        let s = replication(&pki, &addr)?;
        let r = store(&s, "east", "redis").clone();
        (r["verdict"] == "broken").then_some(r)
    });
    assert!(
        cut["reasons"].to_string().contains("is down (last offset"),
        "{cut}"
    );
    assert!(
        cut["position"].as_str().unwrap().parse::<i64>().unwrap() > 0,
        "{cut}"
    );
    link.restore();
    eventually(
        60,
        "the Redis replica to be ok after the link returns",
        || {
            let s = replication(&pki, &addr)?;
            (s["verdict"] == "ok").then_some(())
        },
    );

    // The east agent gone: its stores are broken and unreachable, with
    // their last positions, never "no lag"; the gauges say NaN, not 0.
    e1.kill9();
    let gone = eventually(30, "the east stores to be unreachable", || {
        let s = replication(&pki, &addr)?;
        let pg = store(&s, "east", "postgres").clone();
        (pg["verdict"] == "broken").then_some(s)
    });
    let pg_east = store(&gone, "east", "postgres");
    assert!(
        pg_east["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{gone}"
    );
    assert!(pg_east["lag_bytes"].is_null(), "{gone}");
    assert!(!pg_east["position"].as_str().unwrap().is_empty(), "{gone}");
    let metrics = http_get(c.metrics_port, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("seawall_replication_lag_bytes")
                && l.contains("region=\"east\"")
                && l.contains("kind=\"postgres\"")
                && l.ends_with("NaN")),
        "{metrics}"
    );
    // The plain view names the verdict and exits non-zero.
    let plain = Command::new(crate::fixtures::bin())
        .arg("replication")
        .args(pki.operator_flags(&addr))
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.contains("shop: BROKEN"), "{text}");
    e1.restart();
    eventually(
        60,
        "the east stores to be ok once the agent is back",
        || {
            let s = replication(&pki, &addr)?;
            (s["verdict"] == "ok").then_some(())
        },
    );
}

#[test]
fn a_topology_that_does_not_add_up_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    pki.certs(&["coordinator", "--name", "c1", "--host", "127.0.0.1"]);
    let config = dir.join("c1.toml");
    std::fs::write(
        &config,
        format!(
            "id = \"c1\"\nlisten = \"127.0.0.1:1\"\n{}\n[dev]\nstate = \"{}\"\n{}",
            pki.tls_toml("c1"),
            dir.join("state.redb").display(),
            // Redis in a standby region with no primary to follow, and a
            // live store in a cold region.
            Topology::new()
                .region("west", "primary")
                .region("east", "standby")
                .region("eu", "cold")
                .service(
                    Service::new("shop")
                        .store("east", "redis", "e1", "cache")
                        .store("eu", "postgres", "x1", "db")
                )
                .build()
        ),
    )
    .unwrap();
    let out = Command::new(crate::fixtures::bin())
        .args(["coordinator", "--dev", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no primary"), "{err}");
    assert!(err.contains("cold (backups only)"), "{err}");
}

fn repositories(pki: &Pki, addr: &str) -> Option<Vec<serde_json::Value>> {
    let out = op(pki, addr, &["replication", "--service", "docs"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["services"][0]["repositories"].as_array().cloned()
}

#[test]
fn a_backup_reaches_the_other_regions_repository_and_a_gap_names_the_source_it_hurts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "documents that matter\n".repeat(5000)).unwrap();
    let pki = Pki::new(&dir.join("pki"));
    let west_repo = dir.join("repo-w1");
    let east_repo = dir.join("east-repo");
    let topology = Topology::new()
        .replication("interval", "1s")
        .replication("repository_interval", "1s")
        .region("west", "primary")
        .region("east", "standby")
        .service(
            Service::new("docs")
                .set("rpo", "1h")
                .set("backups", strings(&["files"]))
                .repository("west", "w1", None)
                .repository("east", "e1", Some("from-west")),
        )
        .build();
    let store_section = format!(
        "[dev]\nstate = \"{}\"\n{topology}",
        dir.join("state.redb").display()
    );
    let c = start_replica(&pki, dir, "c1", &store_section, "", true);
    let addr = c.address();
    let _w1 = start_agent(&pki, dir, "w1", "west", std::slice::from_ref(&addr), &data);
    // The east agent's repository is a replica of the west's (same
    // password), which no mirror run has created yet.
    let _e1 = start_agent_on(
        &pki,
        dir,
        "e1",
        "east",
        std::slice::from_ref(&addr),
        &format!(
            "[[mirrors]]\nname = \"from-west\"\nfrom = \"{}\"\n",
            west_repo.display()
        ),
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            east_repo.display(),
            dir.join("w1.password").display()
        )),
    );
    backup_now(&pki, &addr, "west", "files");

    // The east lacks it: at risk, naming what is missing and the source.
    // Both regions are read at once each round, so the first report after
    // the backup may pair the west's new snapshot with an east comparison
    // read just before it landed; the next round names the source.
    let behind = eventually(30, "the east repository to be reported behind", || {
        let r = repositories(&pki, &addr)?;
        (r[1]["verdict"] == "at risk"
            && r[0]["verdict"] == "ok"
            && r[1]["sources_hurt"] != serde_json::json!([]))
        .then_some(r)
    });
    let west_snapshot = behind[0]["sources"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!west_snapshot.is_empty(), "{behind:?}");
    let east = &behind[1];
    assert_eq!(east["snapshots_behind"], 1, "{east}");
    assert!(east["gap_count"].as_u64().unwrap() > 0, "{east}");
    assert_eq!(east["sources_hurt"], serde_json::json!(["files"]), "{east}");
    assert!(
        east["reasons"]
            .to_string()
            .contains("no backup of files here"),
        "{east}"
    );

    // A mirror run brings it over: the east holds the same newest snapshot.
    let mirrored = Command::new(crate::fixtures::bin())
        .args(["-q", "-r"])
        .arg(&west_repo)
        .args(["mirror", "--to"])
        .arg(&east_repo)
        .output()
        .unwrap();
    assert!(
        mirrored.status.success(),
        "{}",
        String::from_utf8_lossy(&mirrored.stderr)
    );
    let caught_up = eventually(30, "the east repository to be ok after the mirror", || {
        let r = repositories(&pki, &addr)?;
        (r[1]["verdict"] == "ok").then_some(r)
    });
    assert_eq!(
        caught_up[1]["sources"][0]["snapshot_id"],
        west_snapshot.as_str()
    );
    assert_eq!(caught_up[1]["behind_ms"], 0, "{caught_up:?}");
    assert_eq!(caught_up[1]["gap_count"], 0, "{caught_up:?}");

    // One pack removed from the east's copy: named, with the source it hurts.
    let pack = crate::fixtures::files_under(&east_repo.join("data"))
        .into_iter()
        .next()
        .expect("a pack in the replica");
    std::fs::remove_file(&pack).unwrap();
    let damaged = eventually(30, "the missing pack to be named", || {
        let r = repositories(&pki, &addr)?;
        (r[1]["verdict"] == "at risk").then_some(r)
    });
    let east = &damaged[1];
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        east["gaps"].as_array().unwrap().iter().any(|g| g["object"]
            .as_str()
            .unwrap()
            .ends_with(&name)
            && g["problem"] == "missing"),
        "{east}"
    );
    assert_eq!(east["sources_hurt"], serde_json::json!(["files"]), "{east}");
}

#[test]
fn wal_reaches_the_standby_regions_repository_continuously_and_replays_from_it_alone() {
    use crate::pg_fixture::{archiving, pg_dir, stop_datadir, PgRepo};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo = PgRepo::init(&dir.join("west"));
    let pg = PgCluster::start(&dir.join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE marker (t text)");
    repo.ok(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('first')");
    pg.switch_and_archive();

    // The east's replica, made by a first mirror run; from then on its
    // agent follows the WAL archive every second.
    let east = dir.join("east");
    pg_dir(&east);
    let replica = PgRepo {
        dir: east.join("repo"),
        password_file: repo.password_file.clone(),
        spool: east.join("spool"),
    };
    repo.ok(&["mirror", "--to", &replica.dir.display().to_string()]);
    let pki = Pki::new(&dir.join("pki"));
    let _e1 = start_agent_on(
        &pki,
        dir,
        "e1",
        "east",
        &["127.0.0.1:1".to_string()],
        &format!(
            "[[mirrors]]\nname = \"from-west\"\nfrom = \"{}\"\nwal_every = \"1s\"\n",
            repo.dir.display()
        ),
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            replica.dir.display(),
            repo.password_file.display()
        )),
    );

    // A commit, its segment archived in the west: it reaches the east
    // within seconds, with no mirror job run.
    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('second')");
    let segment = pg.switch_and_archive();
    eventually(
        15,
        "the newest WAL segment in the east's repository",
        || {
            crate::fixtures::files_under(&replica.dir.join("wal"))
                .iter()
                .any(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy() == segment)
                })
                .then_some(())
        },
    );

    // The west's repository lost: the east's alone replays to the commit.
    std::fs::rename(&repo.dir, dir.join("west").join("lost")).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(&east)
        .status()
        .unwrap();
    assert!(chown.success());
    let restored = dir.join("restored");
    pg_dir(&restored);
    let data = restored.join("data");
    let (out, port) = crate::postgres::restore_latest_started(&replica, &data);
    assert!(out.contains("promoted"), "{out}");
    let got = crate::postgres::markers(&data, port);
    stop_datadir(&data);
    assert_eq!(got, "first,second");
}

#[test]
fn the_bench_topology_templates_render_into_a_configuration_the_coordinator_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    pki.certs(&["coordinator", "--name", "c1", "--host", "127.0.0.1"]);
    let secret = dir.join("route53.secret");
    std::fs::write(&secret, "testing").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let render = |vars: &[(&str, &str)], templates: &[&str]| -> String {
        let mut cmd = Command::new("python3");
        cmd.arg(root.join("bench/lib/render.py"));
        for t in templates {
            cmd.arg(root.join("bench/topology").join(t));
        }
        let out = cmd.envs(vars.iter().copied()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let secret_s = secret.display().to_string();
    let failover = render(
        &[
            ("INTERVAL", "1s"),
            ("ZONE", "Z123"),
            ("MOTO", "5000"),
            ("SECRET_FILE", &secret_s),
            ("PG1", "5432"),
            ("PG2", "5433"),
            ("R1", "6379"),
            ("R2", "6380"),
        ],
        &["two-regions.toml", "shop-failover.toml"],
    );
    let replication = format!(
        "{}{}{}",
        render(&[("INTERVAL", "5s")], &["two-regions.toml"]),
        render(&[("I", "1")], &["service.toml"]),
        render(&[("I", "2")], &["service.toml"])
    );
    for (name, topology) in [("failover", failover), ("replication", replication)] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "id = \"c1\"\nlisten = \"127.0.0.1:1\"\n{}\n[dev]\nstate = \"{}\"\n{topology}",
                pki.tls_toml("c1"),
                dir.join("state.redb").display()
            ),
        )
        .unwrap();
        let out = Command::new(crate::fixtures::bin())
            .args(["coordinator", "--dev", "--check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bench/{name}.sh's topology is refused: {}\n{topology}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A placeholder the environment lacks is named.
    let out = Command::new("python3")
        .arg(root.join("bench/lib/render.py"))
        .arg(root.join("bench/topology/service.toml"))
        .env_remove("I")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs I"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
