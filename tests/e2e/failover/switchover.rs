//! Planned moves: a switchover under load, a failover drill there and back,
//! and the lag gate that refuses one.

use super::load::*;
use super::route53::*;
use super::world::*;
use crate::fleet_fixture::*;
use std::process::Command;

#[test]
fn a_planned_switchover_loses_no_acknowledged_write_and_moves_dns() {
    let mut w = World::start();

    // An agent that does not list the service's check file would refuse
    // the post-check after promoting: the plan refuses before anything.
    let config = std::fs::read_to_string(&w.e1.config).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("check_files"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&w.e1.config, &without).unwrap();
    w.e1.restart();
    let refusal = eventually(60, "the plan to refuse the unlisted check file", || {
        let (_, plan, _) = w.failover(&["plan", "shop", "--to", "east", "--switchover"]);
        let refusals = plan["refusals"].to_string();
        refusals.contains("check_files").then_some(refusals)
    });
    assert!(refusal.contains("east/e1"), "{refusal}");
    std::fs::write(&w.e1.config, &config).unwrap();
    w.e1.restart();
    eventually(60, "the plan to pass again", || {
        let (ok, plan, _) = w.failover(&["plan", "shop", "--to", "east", "--switchover"]);
        (ok && plan["refusals"] == serde_json::json!([])).then_some(())
    });

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
    let (ok, served, err) =
        w.failover_served(&["run", "shop", "--to", "east", "--switchover", "--wait"]);
    let wall = started.elapsed();
    assert!(ok, "{err}\n{served:#}");
    // `--wait` returns once the east is served: the post-check passed, the
    // figures are known; the west's follow steps may still run.
    assert_eq!(
        step(&served, "post-check").unwrap()["state"],
        "done",
        "{served:#}"
    );
    assert_eq!(served["rpo_ms"], 0, "{served:#}");
    // The service's check file ran on the promoted PostgreSQL.
    let checked = step(&served, "post-check").unwrap()["detail"].to_string();
    assert!(checked.contains("1 check(s) passed"), "{checked}");
    let id = served["id"].as_str().unwrap();
    let (ok, f, err) = w.failover(&["status", id, "--watch"]);
    assert!(ok, "{err}\n{f:#}");
    assert_eq!(f["state"], "succeeded", "{f:#}");
    assert_eq!(
        f["rto_ms"], served["rto_ms"],
        "the figures do not change after the post-check"
    );
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
    // The old primary follows the new one without a copy: its fence
    // stopped it cleanly at a position the east replayed, so pg_rewind
    // finds nothing (or only the shutdown checkpoint) to rewind.
    let follow = steps[8]["detail"].as_str().unwrap();
    assert!(
        follow.contains("pg_rewind") && !follow.contains("base backup"),
        "{f:#}"
    );
    assert!(
        steps[1]["detail"]
            .as_str()
            .unwrap()
            .contains("standby.signal in place"),
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
