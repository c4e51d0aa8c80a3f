//! The DNS step: Route 53 that does not answer, and failover records moved
//! through their health check.

use super::route53::*;
use super::world::*;
use crate::fleet_fixture::*;

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
        detail("fence").contains("stopped (fast) with standby.signal in place"),
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
