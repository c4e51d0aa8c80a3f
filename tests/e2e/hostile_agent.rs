//! An agent with a valid certificate that answers with as much as the wire
//! lets it: its answers are cut to size as they arrive, and each service's
//! replication report is stored on its own, so the other services' checks
//! go on against etcd (whose requests are limited to 1.5 MiB).

use crate::etcd_fixture::EtcdCluster;
use crate::fleet_fixture::*;
use crate::redis::RedisServer;
use crate::topology::{Service, Topology};
use seawall_proto::v1::agent_service_client::AgentServiceClient;
use seawall_proto::v1::{
    agent_message, coordinator_message, store_report, AgentMessage, Heartbeat, Hello,
    PostgresReplication, ProbeReply, SourceInfo, StoreReport,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The error text of one answer, shared by its stores: most of a 1 MiB
/// message (the wire limit), so two agents exceed etcd's request limit.
const FLOOD: usize = 900_000;

/// Runs a hostile agent `name` of `region` serving `sources`: it answers
/// every probe with [`FLOOD`] bytes of error and 500 standbys per
/// store, and counts the bytes of error it sent into `sent`.
async fn flood(
    pki: &Pki,
    addr: &str,
    name: &str,
    region: &str,
    sources: &[&str],
    sent: Arc<AtomicU64>,
) {
    let channel = crate::fleet::channel(pki, addr, Some(name)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(16);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            agent_id: name.into(),
            region: region.into(),
            version: "hostile".into(),
            sources: sources
                .iter()
                .map(|s| SourceInfo {
                    name: s.to_string(),
                    kind: "postgres".into(),
                })
                .collect(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let beat = tx.clone();
    tokio::spawn(async move {
        for seq in 1.. {
            let hb = Heartbeat {
                seq,
                ..Default::default()
            };
            let msg = AgentMessage {
                body: Some(agent_message::Body::Heartbeat(hb)),
            };
            if beat.send(msg).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let standby = seawall_proto::v1::PostgresStandby {
        name: "s".repeat(40),
        client_addr: "10.9.9.9".into(),
        state: "streaming".into(),
        ..Default::default()
    };
    while let Ok(Some(m)) = inbound.message().await {
        let Some(coordinator_message::Body::Probe(p)) = m.body else {
            continue;
        };
        let reports = p
            .probes
            .iter()
            .map(|probe| StoreReport {
                source: probe.source.clone(),
                // A terminal escape (set the window title, clear the
                // screen) first: the operator's terminal must not obey it.
                error: format!(
                    "\u{1b}]0;pwned\u{7}\u{1b}[2J{}",
                    "e".repeat(FLOOD / p.probes.len().max(1))
                ),
                replication: Some(store_report::Replication::Postgres(PostgresReplication {
                    standbys: vec![standby.clone(); 500],
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        let reports: Vec<StoreReport> = reports;
        // Counted low: the error texts only, not the standbys.
        let bytes: usize = reports.iter().map(|r| r.error.len()).sum();
        let reply = AgentMessage {
            body: Some(agent_message::Body::ProbeReply(ProbeReply {
                probe_id: p.probe_id,
                reports,
                repository: None,
            })),
        };
        sent.fetch_add(bytes as u64, Ordering::Relaxed);
        if tx.send(reply).await.is_err() {
            break;
        }
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn an_agent_sending_ten_mebibytes_of_probe_answers_changes_nothing_for_the_other_services() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let etcd = EtcdCluster::start(&dir.join("etcd"), 1);
    let master = RedisServer::start(&dir.join("redis-west"), &[]);
    let port = master.port.to_string();
    let replica = RedisServer::start(
        &dir.join("redis-east"),
        &["--replicaof", "127.0.0.1", &port],
    );
    let junk = |name: &str| {
        Service::new(name)
            .set("rpo", "1m")
            .set("rto", "1m")
            .store("west", "postgres", "x1", name)
            .store("east", "postgres", "x2", name)
    };
    let topology = Topology::new()
        .replication("interval", "1s")
        .region("west", "primary")
        .region("east", "standby")
        .service(
            Service::new("shop")
                .set("rpo", "30s")
                .set("rto", "1m")
                .set("canary", true)
                .store("west", "redis", "w1", "cache")
                .store("east", "redis", "e1", "cache"),
        )
        .service(junk("junk-a"))
        .service(junk("junk-b"))
        .build();
    let store = format!("{}{topology}", etcd.coordinator_section("/hostile", None));
    let pki = Pki::new(&dir.join("pki"));
    let c = start_replica(&pki, dir, "c1", &store, "", false);
    let addr = c.address();
    let redis_source = |port: u16| {
        format!(
            "[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n"
        )
    };
    let _w1 = start_agent_with(
        &pki,
        dir,
        "w1",
        "west",
        std::slice::from_ref(&addr),
        &redis_source(master.port),
    );
    let _e1 = start_agent_with(
        &pki,
        dir,
        "e1",
        "east",
        std::slice::from_ref(&addr),
        &redis_source(replica.port),
    );
    let shop = || {
        let out = op(&pki, &addr, &["replication", "--service", "shop"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .map(|v| v["services"][0].clone())
    };
    eventually(60, "shop to be checked ok", || {
        shop().filter(|s| s["verdict"] == "ok")
    });
    let rss_before = rss_kib(c.daemon.pid());

    pki.certs(&["agent", "--name", "x1", "--region", "west"]);
    pki.certs(&["agent", "--name", "x2", "--region", "east"]);
    let sent = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, region) in [("x1", "west"), ("x2", "east")] {
        let (pki, addr, sent) = (
            Pki {
                dir: pki.dir.clone(),
            },
            addr.clone(),
            sent.clone(),
        );
        rt.spawn(
            async move { flood(&pki, &addr, name, region, &["junk-a", "junk-b"], sent).await },
        );
    }
    // Ten mebibytes, and the shop's report stored fresh all along.
    let mut last_checked = 0;
    let mut fresh_rounds = 0;
    eventually(
        120,
        "ten mebibytes of answers sent, shop's checks going on",
        || {
            let s = shop()?;
            assert_eq!(s["verdict"], "ok", "{s}");
            let checked = s["checked_unix_ms"].as_i64()?;
            if checked > last_checked {
                last_checked = checked;
                fresh_rounds += 1;
            }
            (sent.load(Ordering::Relaxed) > 10 << 20).then_some(())
        },
    );
    let shop_now = shop().unwrap();
    let age = chrono::Utc::now().timestamp_millis() - shop_now["checked_unix_ms"].as_i64().unwrap();
    assert!(age < 5_000, "shop's report is {age} ms old: {shop_now}");
    assert!(
        fresh_rounds >= 5,
        "shop's report renewed {fresh_rounds} times during the flood"
    );

    // The hostile services' reports are stored, cut to size, saying so.
    let out = op(&pki, &addr, &["replication", "--service", "junk-a"]);
    // Exit status 1: the service is not healthy (its agents answer errors).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let junk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(junk["services"][0]["verdict"], "broken", "{junk}");
    assert!(
        out.stdout.len() < 64 << 10,
        "junk-a's report is {} bytes",
        out.stdout.len()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bytes cut"), "{text}");
    let text = std::process::Command::new(crate::fixtures::bin())
        .args(["replication", "--service", "junk-a"])
        .args(pki.operator_flags(&addr))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(shown.contains("\\u{1b}]0;pwned"), "{shown}");
    assert!(
        !shown.contains('\u{1b}'),
        "a raw escape reached the terminal"
    );
    let log = c.daemon.log_text();
    assert!(!log.contains("not stored"), "{log}");
    let grown = rss_kib(c.daemon.pid()).saturating_sub(rss_before);
    assert!(grown < 60 << 10, "the coordinator grew {grown} KiB");
    drop(rt);
}
