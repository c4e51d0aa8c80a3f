//! Leaders that die or stall in the middle of a failover.

use super::load::*;
use super::route53::*;
use super::world::*;
use super::writable::*;
use crate::fleet_fixture::*;

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

#[test]
fn with_etcd_down_no_leader_can_promote_so_the_primaries_keep_serving() {
    let mut w = World::start_ha_with(|s| {
        s.table(
            "auto_failover",
            &[("after", 3.into()), ("interval", "1s".into())],
        )
    });
    w.primary
        .sql("postgres", "CREATE TABLE writable_probe (at bigint)");
    let socket = format!(
        "host={} port={} user=postgres dbname=postgres",
        w.primary.root.display(),
        w.primary.port
    );
    let redis_port = w.master.port;
    let checker = Writable::start(std::slice::from_ref(&socket));
    let redis_load = RedisLoad::start(redis_port);
    eventually(30, "the Redis load to be acknowledged", || {
        (redis_load.acked() > 50).then_some(())
    });

    // Every etcd member stops: the leader loses its lease, no replica can
    // lead, and the agents hear from no leader. Their leases lapse, but
    // every replica answers that none leads: nothing can be promoted, so
    // nothing is fenced.
    let etcd = w.etcd.as_mut().unwrap();
    for i in 0..3 {
        etcd.kill(i);
    }
    let stopped = now_ms();
    // Well past the 2 s self-fence bound.
    let redis_before = redis_load.acked();
    std::thread::sleep(std::time::Duration::from_secs(8));
    let writes = checker.finish();
    let last = writes[0].iter().map(|w| w.1).max().unwrap_or(0);
    assert!(
        last > stopped + 7000,
        "PostgreSQL stopped taking writes {} ms after etcd stopped",
        last - stopped
    );
    assert!(
        redis_load.acked() > redis_before + 100,
        "Redis stopped taking writes with etcd down"
    );
    assert_eq!(w.primary.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    // The lease did lapse: the agent kept its primaries by the failsafe.
    let log = w.w1.log_text();
    assert!(
        log.contains("every coordinator replica answers and none leads"),
        "{log}"
    );
    assert!(!log.contains("self-fenced"), "{log}");

    // etcd returns: a leader again, and still nothing was failed over.
    let etcd = w.etcd.as_mut().unwrap();
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy();
    eventually(60, "shop's replication to be ok again", || {
        op(&w.pki, &w.addr, &["replication", "--service", "shop"])
            .status
            .success()
            .then_some(())
    });
    let list = op(&w.pki, &w.addr, &["failover", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
    drop(redis_load);
}
