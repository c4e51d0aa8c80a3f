//! Certificates over a fleet's life: short-lived certificates renewed on
//! disk are picked up by the coordinator and the agent without a restart
//! and the fleet keeps working past the old ones' expiry; a revoked agent
//! certificate ends its session within a heartbeat and is refused after;
//! expiry is exported as a metric.

use crate::fleet_fixture::{
    backup_now, eventually, eventually_or_logs, op, op_json, start_agent, start_replica, Pki,
};
use std::time::{Duration, Instant};

/// How long the first certificates live.
const SHORT: &str = "25s";

fn the_agent(pki: &Pki, addr: &str) -> Option<serde_json::Value> {
    let out = op(pki, addr, &["agents"]);
    if !out.status.success() {
        return None;
    }
    let agents: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    agents.as_array()?.first().cloned()
}

fn expires_in(agent: &serde_json::Value) -> Duration {
    let at = agent["cert_expires_unix_ms"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now().timestamp_millis();
    Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
}

#[test]
fn renewed_certificates_are_picked_up_and_a_revoked_one_is_refused_within_a_heartbeat() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("a.txt"), "state\n".repeat(100)).expect("write");
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    let agent = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    let first = eventually(20, "the agent to connect", || the_agent(&pki, &addr));

    // Both move to short-lived certificates, replaced on disk.
    let t0 = Instant::now();
    let coordinator_hosts = ["--host", "127.0.0.1", "--host", "localhost"];
    let mut args = vec![
        "--valid-for",
        SHORT,
        "--force",
        "coordinator",
        "--name",
        "c1",
    ];
    args.extend(coordinator_hosts);
    pki.certs(&args);
    pki.certs(&[
        "--valid-for",
        SHORT,
        "--force",
        "agent",
        "--name",
        "eu-1",
        "--region",
        "eu-west-1",
    ]);
    // Files are checked every 5 s; a session that ended meanwhile can
    // wait out a reconnect backoff of up to 15 s on a loaded machine.
    let short = eventually_or_logs(
        30,
        "the agent to reconnect with its short certificate",
        &[&c.daemon, &agent],
        || {
            let a = the_agent(&pki, &addr)?;
            (a["cert_fingerprint"] != first["cert_fingerprint"]).then_some(a)
        },
    );
    assert!(expires_in(&short) <= Duration::from_secs(25), "{short}");

    // Renewed again, for a day, before they expire.
    let mut args = vec!["--force", "coordinator", "--name", "c1"];
    args.extend(coordinator_hosts);
    pki.certs(&args);
    pki.certs(&[
        "--force",
        "agent",
        "--name",
        "eu-1",
        "--region",
        "eu-west-1",
    ]);
    let renewed = eventually_or_logs(
        30,
        "the agent to reconnect with its renewed certificate",
        &[&c.daemon, &agent],
        || {
            let a = the_agent(&pki, &addr)?;
            (a["cert_fingerprint"] != short["cert_fingerprint"]).then_some(a)
        },
    );
    assert!(
        expires_in(&renewed) > Duration::from_secs(3600),
        "{renewed}"
    );

    // Past the short certificates' expiry the fleet still works: new
    // connections get the coordinator's renewed certificate, and the agent
    // runs a backup.
    let expired_at = Duration::from_secs(27);
    if let Some(wait) = expired_at.checked_sub(t0.elapsed()) {
        std::thread::sleep(wait);
    }
    backup_now(&pki, &addr, "eu-west-1", "files");
    let metrics = crate::fleet::http_get(c.metrics_port, "/metrics");
    for series in [
        "seawall_certificate_expiry_timestamp_seconds{holder=\"coordinator\"}",
        "seawall_agent_certificate_expiry_timestamp_seconds{region=\"eu-west-1\",agent=\"eu-1\"}",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }

    // The agent's certificate is revoked: its open session ends within a
    // heartbeat (1 s here) and it cannot come back with it.
    let fingerprint = renewed["cert_fingerprint"].as_str().expect("fingerprint");
    let revoked_at = Instant::now();
    let out = op_json(
        &pki,
        &addr,
        &["revoke", fingerprint, "--reason", "laptop stolen"],
    );
    assert_eq!(out["newly"], true, "{out}");
    eventually(10, "the revoked agent's session to end", || {
        the_agent(&pki, &addr).is_none().then_some(())
    });
    assert!(
        revoked_at.elapsed() < Duration::from_secs(4),
        "took {:?}",
        revoked_at.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        the_agent(&pki, &addr).is_none(),
        "the revoked agent came back"
    );
    let log = agent.log_text();
    assert!(log.contains("revoked"), "{log}");
    let listed = op_json(&pki, &addr, &["revoked"]);
    assert_eq!(listed[0]["fingerprint"], fingerprint, "{listed}");
    assert_eq!(listed[0]["reason"], "laptop stolen", "{listed}");
    // Revoking it again changes nothing.
    let again = op_json(&pki, &addr, &["revoke", fingerprint]);
    assert_eq!(again["newly"], false, "{again}");

    // A newly issued certificate lets the agent back in.
    pki.certs(&[
        "--force",
        "agent",
        "--name",
        "eu-1",
        "--region",
        "eu-west-1",
    ]);
    let back = eventually(20, "the agent to return with a new certificate", || {
        the_agent(&pki, &addr)
    });
    assert_ne!(back["cert_fingerprint"], renewed["cert_fingerprint"]);
    backup_now(&pki, &addr, "eu-west-1", "files");
    assert!(!c.daemon.log_text().contains("panicked"));
}

#[test]
fn a_revoked_coordinator_certificate_is_refused_by_the_agents_also_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("a.txt"), "state\n".repeat(100)).expect("write");
    // c2 stands for a stolen coordinator certificate: a replica of its own
    // (its own store, so it leads), signed by the fleet's CA.
    let dev = |name: &str| {
        format!(
            "[dev]\nstate = \"{}\"\n",
            dir.join(format!("{name}.redb")).display()
        )
    };
    let mut c1 = start_replica(&pki, dir, "c1", &dev("c1"), "", true);
    let c2 = start_replica(&pki, dir, "c2", &dev("c2"), "", true);
    let (a1_addr, a2_addr) = (c1.address(), c2.address());
    // a2 knows only c2 and is not told of the revocation: c2 is a working
    // coordinator to an agent that does not know.
    let _a2 = start_agent(
        &pki,
        dir,
        "a2",
        "eu-west-1",
        std::slice::from_ref(&a2_addr),
        &data,
    );
    eventually(20, "a2 to connect to c2", || the_agent(&pki, &a2_addr));
    let mut a1 = start_agent(
        &pki,
        dir,
        "a1",
        "eu-west-1",
        &[a1_addr.clone(), a2_addr.clone()],
        &data,
    );
    eventually(20, "a1 to connect to c1", || the_agent(&pki, &a1_addr));

    let c2_pem = pki.dir.join("c2.pem").display().to_string();
    let out = op_json(
        &pki,
        &a1_addr,
        &["revoke", "--pem", &c2_pem, "--reason", "replica host lost"],
    );
    let fingerprint = out["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let kept = dir.join("state-a1").join("revoked-certificates");
    eventually(10, "a1 to keep the revocation", || {
        std::fs::read_to_string(&kept)
            .ok()?
            .contains(&fingerprint)
            .then_some(())
    });

    // c1 goes: a1 tries c2, which it refuses, also after a restart.
    c1.daemon.kill9();
    let c2_sees_a1 = || {
        op_json(&pki, &a2_addr, &["agents"])
            .as_array()
            .expect("agents")
            .iter()
            .any(|a| a["agent_id"] == "a1")
    };
    eventually(20, "a1 to try c2 and refuse it", || {
        a1.log_text().contains("is revoked").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!c2_sees_a1(), "a1 connected to the revoked coordinator");
    a1.restart();
    let before = a1.log_text().matches("is revoked").count();
    eventually(20, "the restarted a1 to refuse c2 again", || {
        (a1.log_text().matches("is revoked").count() > before).then_some(())
    });
    assert!(
        !c2_sees_a1(),
        "the restarted a1 connected to the revoked coordinator"
    );
    assert_eq!(
        the_agent(&pki, &a2_addr).expect("a2")["region"],
        "eu-west-1",
        "a2 stays connected to c2"
    );
}
