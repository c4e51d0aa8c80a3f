//! Three coordinator replicas on a real 3-member etcd cluster, one agent:
//! a leader killed with -9 is replaced within the lease TTL plus 2 s and the
//! next scheduled run happens exactly once; a leader stopped past its TTL
//! and continued writes nothing and commands nothing under its old epoch.

use crate::etcd_fixture::EtcdCluster;
use crate::fixtures::{bin, require};
use crate::fleet_fixture::*;
use crate::topology::{strings, Scenario, Service, Topology};
use std::process::Command;
use std::time::{Duration, Instant};

const TTL_SECS: u64 = 4;

struct Ha {
    _tmp: tempfile::TempDir,
    etcd: EtcdCluster,
    pki: Pki,
    replicas: Vec<Replica>,
    agent: Daemon,
    repo: std::path::PathBuf,
}

/// A replica's `[etcd]` section for `etcd`, keys under `prefix`.
fn etcd_section(etcd: &EtcdCluster, prefix: &str) -> String {
    etcd.coordinator_section(prefix, Some(&format!("{TTL_SECS}s")))
}

fn start(prefix: &str) -> Ha {
    start_with(prefix, "")
}

/// [`start`], with `extra` (a topology, scenarios) in every replica's
/// configuration.
fn start_with(prefix: &str, extra: &str) -> Ha {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let etcd = EtcdCluster::start(&dir.join("etcd"), 3);
    let pki = Pki::new(&dir.join("pki"));
    let store = etcd_section(&etcd, prefix);
    let schedules = format!("[[schedules]]\nname = \"eu-files\"\nregion = \"eu-west-1\"\nsource = \"files\"\ncron = \"*/3 * * * * *\"\n{extra}");
    let replicas: Vec<Replica> = ["c1", "c2", "c3"]
        .iter()
        .map(|id| start_replica(&pki, &dir, id, &store, &schedules, false))
        .collect();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x".repeat(10_000)).unwrap();
    let addresses: Vec<String> = replicas.iter().map(Replica::address).collect();
    let agent = start_agent(&pki, &dir, "eu-1", "eu-west-1", &addresses, &data);
    let repo = dir.join("repo-eu-1");
    Ha {
        _tmp: tmp,
        etcd,
        pki,
        replicas,
        agent,
        repo,
    }
}

impl Ha {
    /// (leader id, epoch) as a replica other than `not` reports it.
    fn leader(&self, not: Option<&str>) -> Option<(String, u64)> {
        for r in self.replicas.iter().filter(|r| Some(r.id.as_str()) != not) {
            let out = op(&self.pki, &r.address(), &["status"]);
            if !out.status.success() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let id = v["leader_id"].as_str().unwrap_or_default().to_string();
            if !id.is_empty() && Some(id.as_str()) != not {
                return Some((id, v["epoch"].as_u64().unwrap_or(0)));
            }
        }
        None
    }

    fn replica(&mut self, id: &str) -> &mut Replica {
        self.replicas.iter_mut().find(|r| r.id == id).unwrap()
    }

    /// Job records straight from etcd.
    fn jobs(&self) -> Vec<serde_json::Value> {
        self.records("jobs/")
    }

    /// The records under `what` (such as `drills/`) straight from etcd.
    fn records(&self, what: &str) -> Vec<serde_json::Value> {
        let out = Command::new(require("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.etcd.endpoints().join(","),
                "get",
                "--prefix",
                "--print-value-only",
            ])
            .arg(format!("{}/{what}", self.prefix()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn prefix(&self) -> String {
        let text = std::fs::read_to_string(&self.replicas[0].daemon.config).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("prefix = "))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    /// How many snapshots in the agent's repository carry `job=<id>`.
    fn runs_of(&self, job: &str) -> usize {
        let out = Command::new(bin())
            .args(["--json", "-r"])
            .arg(&self.repo)
            .arg("--password-file")
            .arg(self.repo.with_file_name("eu-1.password"))
            .arg("snapshots")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let tag = format!("job={job}");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| {
                        s["tags"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|x| x == &tag))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn succeeded_backups(&self) -> Vec<serde_json::Value> {
        self.jobs()
            .into_iter()
            .filter(|j| j["kind"] == "backup" && j["state"] == "succeeded")
            .collect()
    }
}

#[test]
fn killed_leader_is_replaced_within_ttl_and_the_next_run_happens_once() {
    let mut ha = start("/ha-kill");
    let (old, old_epoch) = eventually(30, "a leader", || ha.leader(None));
    eventually(60, "a scheduled backup", || {
        (!ha.succeeded_backups().is_empty()).then_some(())
    });

    let killed_at = Instant::now();
    ha.replica(&old).daemon.kill9();
    let (new, new_epoch) = eventually(30, "a new leader", || ha.leader(Some(&old)));
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(TTL_SECS + 2),
        "takeover took {took:?} with a {TTL_SECS}s TTL"
    );
    assert_ne!(new, old);
    assert!(new_epoch > old_epoch);
    eprintln!("takeover after kill -9: {took:?}");

    // Slots after the takeover run, each exactly once.
    let after = chrono::Utc::now().timestamp_millis();
    let later = eventually(60, "two scheduled backups under the new leader", || {
        let jobs: Vec<_> = ha
            .succeeded_backups()
            .into_iter()
            .filter(|j| j["created_ms"].as_i64().unwrap_or(0) > after)
            .collect();
        (jobs.len() >= 2).then_some(jobs)
    });
    for j in &later {
        let id = j["job_id"].as_str().unwrap();
        assert_eq!(ha.runs_of(id), 1, "job {id} ran {} times", ha.runs_of(id));
        assert!(j["epoch"].as_i64().unwrap() >= new_epoch as i64);
    }
    // No slot made two jobs, and no job ran twice, across the whole run.
    let all = ha.jobs();
    for j in all.iter().filter(|j| j["state"] == "succeeded") {
        let id = j["job_id"].as_str().unwrap();
        assert_eq!(ha.runs_of(id), 1, "job {id} ran more than once");
    }

    // The third replica waits in the election behind the new leader: a
    // SIGTERM stops it at once, not when it would have won.
    let follower = ["c1", "c2", "c3"]
        .into_iter()
        .find(|id| *id != old && *id != new)
        .unwrap();
    let stopped_at = Instant::now();
    ha.replica(follower)
        .daemon
        .signal(nix::sys::signal::Signal::SIGTERM);
    while !ha.replica(follower).daemon.exited() {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "the follower still runs 10 s after SIGTERM: {}",
            ha.replica(follower).daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = stopped_at.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "a follower took {took:?} to stop: {}",
        ha.replica(follower).daemon.log_text()
    );
    assert_eq!(
        ha.leader(Some(follower)).map(|(id, _)| id),
        Some(new.clone()),
        "the leader is unchanged"
    );
}

#[test]
fn a_scheduled_drill_runs_once_per_slot_across_a_leader_change() {
    let topology = Topology::new()
        .region("eu-west-1", "primary")
        .service(
            Service::new("docs")
                .set("backups", strings(&["files"]))
                .repository("eu-west-1", "eu-1", None),
        )
        .scenario(Scenario::new("Complete outage", "docs", "restore").set("cron", "*/4 * * * * *"))
        .build();
    let mut ha = start_with("/ha-drill", &topology);
    let (old, _) = eventually(30, "a leader", || ha.leader(None));
    let finished = |ha: &Ha| -> Vec<serde_json::Value> {
        ha.records("drills/")
            .into_iter()
            .filter(|d| d["state"] == "finished")
            .collect()
    };
    eventually(60, "a scheduled drill to finish", || {
        (!finished(&ha).is_empty()).then_some(())
    });
    ha.replica(&old).daemon.kill9();
    let (_, new_epoch) = eventually(30, "a new leader", || ha.leader(Some(&old)));
    let after = chrono::Utc::now().timestamp_millis();
    eventually(60, "two drills finished under the new leader", || {
        let later = finished(&ha)
            .into_iter()
            .filter(|d| d["started_unix_ms"].as_i64().unwrap_or(0) > after)
            .count();
        (later >= 2).then_some(())
    });
    // Every drill started so far finishes (none is left behind by the
    // leader change, though a busy agent may hold one back a while); each
    // is its slot's (one id per slot), met, and ran its one restore job once.
    let cutoff = chrono::Utc::now().timestamp_millis();
    let drills = eventually(90, "every drill started before now to finish", || {
        let all = ha.records("drills/");
        all.iter()
            .filter(|d| d["started_unix_ms"].as_i64().unwrap_or(0) < cutoff)
            .all(|d| d["state"] == "finished")
            .then_some(all)
    });
    let jobs = ha.jobs();
    let first_backup = ha
        .succeeded_backups()
        .iter()
        .filter_map(|j| j["finished_ms"].as_i64())
        .min()
        .unwrap();
    let mut slots = std::collections::BTreeSet::new();
    for d in &drills {
        let id = d["id"].as_str().unwrap();
        let slot: i64 = id
            .strip_prefix("complete-outage-")
            .unwrap_or_else(|| panic!("{id} is not a scheduled drill's id"))
            .parse()
            .unwrap();
        assert!(slots.insert(slot), "slot {slot} made two drills");
        assert_eq!(d["scenario"], "Complete outage");
        let started = d["started_unix_ms"].as_i64().unwrap();
        if started < cutoff {
            assert_eq!(d["state"], "finished", "{d:#}");
            // The backup schedule runs beside it: a drill before the first
            // backup finished fails, saying there is nothing to restore.
            if started > first_backup {
                assert_eq!(d["verdict"], "met", "{d:#}");
            } else if d["verdict"] != "met" {
                assert!(
                    d["reasons"][0]
                        .as_str()
                        .unwrap()
                        .contains("has no snapshot of source files"),
                    "{d:#}"
                );
            }
        }
        let runs: Vec<&serde_json::Value> = jobs
            .iter()
            .filter(|j| j["drill"]["drill_id"] == id)
            .collect();
        assert_eq!(runs.len(), 1, "drill {id} made {} jobs", runs.len());
        // Assignments an agent refused as busy never started.
        let history = runs[0]["history"].as_array().unwrap();
        let ran = history
            .iter()
            .zip(history.iter().skip(1).map(Some).chain([None]))
            .filter(|(e, next)| {
                e["state"] == "running"
                    && !next.is_some_and(|n| {
                        n["note"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("the agent was busy"))
                    })
            })
            .count();
        assert!(
            ran <= 1,
            "drill {id}'s job ran {ran} times: {:#}",
            runs[0]["history"]
        );
    }
    // The new leader exports the last drill's figures.
    let leader = ha
        .replicas
        .iter()
        .find(|r| r.id != old && ha.leader(None).is_some_and(|(l, _)| l == r.id))
        .unwrap();
    let metrics = crate::fleet::http_get(leader.metrics_port, "/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("seawall_drill_last_success_timestamp_seconds{")
                && l.contains("scenario=\"Complete outage\"")
                && l.contains("service=\"docs\"")
        ),
        "{metrics}"
    );
    assert!(new_epoch > 0);
}

#[test]
fn a_stopped_leader_acts_on_nothing_after_its_lease_expired() {
    let mut ha = start("/ha-stop");
    let (old, old_epoch) = eventually(30, "a leader", || ha.leader(None));
    eventually(60, "a scheduled backup", || {
        (!ha.succeeded_backups().is_empty()).then_some(())
    });
    let stopped_ms = chrono::Utc::now().timestamp_millis();
    ha.replica(&old)
        .daemon
        .signal(nix::sys::signal::Signal::SIGSTOP);
    let (new, new_epoch) = eventually(30, "a new leader", || ha.leader(Some(&old)));
    assert_ne!(new, old);
    std::thread::sleep(Duration::from_secs(TTL_SECS + 2));
    ha.replica(&old)
        .daemon
        .signal(nix::sys::signal::Signal::SIGCONT);
    let resumed_ms = chrono::Utc::now().timestamp_millis();
    // Let the resumed replica run a while: it must notice at once that its
    // lease is gone and write nothing.
    std::thread::sleep(Duration::from_secs(4));
    eventually(30, "a backup under the new leader", || {
        ha.succeeded_backups()
            .into_iter()
            .find(|j| j["epoch"].as_u64().unwrap_or(0) >= new_epoch)
    });
    // Nothing in the store was written under the old epoch after the lease expired.
    let lease_end = stopped_ms + (TTL_SECS as i64) * 1000;
    for j in ha.jobs() {
        for e in j["history"].as_array().unwrap() {
            if e["epoch"].as_u64() == Some(old_epoch) {
                assert!(
                    e["at_ms"].as_i64().unwrap() <= lease_end,
                    "job {} changed under the old epoch after its lease ended: {e}",
                    j["job_id"]
                );
            }
        }
    }
    // The agent follows the new epoch and never went back.
    let mark: u64 =
        std::fs::read_to_string(ha.agent.config.with_file_name("state-eu-1").join("epoch"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(mark >= new_epoch, "agent epoch mark {mark} < {new_epoch}");
    let log = ha.replica(&old).daemon.log_text();
    assert!(log.contains("leadership lost"), "{log}");
    assert!(resumed_ms > lease_end);
}

#[test]
fn a_leader_whose_lease_is_taken_away_stops_every_worker_within_a_second() {
    let mut ha = start("/ha-revoke");
    let (old, old_epoch) = eventually(30, "a leader", || ha.leader(None));
    eventually(60, "a scheduled backup", || {
        (!ha.succeeded_backups().is_empty()).then_some(())
    });
    // The leader's election key is named by its lease: revoke that lease.
    let etcdctl = |args: &[&str]| {
        let out = Command::new(require("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &ha.etcd.endpoints().join(",")])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = etcdctl(&["get", "--prefix", &format!("{}/election", ha.prefix())]);
    let lines: Vec<&str> = listing.lines().collect();
    let lease = lines
        .chunks(2)
        .find(|kv| kv.len() == 2 && kv[1].contains(&format!("\"id\":\"{old}\"")))
        .and_then(|kv| kv[0].rsplit('/').next())
        .unwrap_or_else(|| panic!("no election key of {old} in {listing}"))
        .to_string();
    let revoked_ms = chrono::Utc::now().timestamp_millis();
    etcdctl(&["lease", "revoke", &lease]);

    // It notices, stops its workers and session tasks within the grace of
    // one second (the log says stopped=true), and writes nothing more.
    let line = eventually(20, "the old leader stepping down", || {
        ha.replica(&old)
            .daemon
            .log_text()
            .lines()
            .find(|l| l.contains("leadership lost: stopped acting"))
            .map(str::to_string)
    });
    assert!(line.contains("stopped=true"), "{line}");
    eventually(30, "a leader again", || ha.leader(None));
    std::thread::sleep(Duration::from_secs(3));
    for j in ha.jobs() {
        for e in j["history"].as_array().unwrap() {
            if e["epoch"].as_u64() == Some(old_epoch) {
                assert!(
                    e["at_ms"].as_i64().unwrap() <= revoked_ms + 1000,
                    "job {} changed under the revoked epoch: {e}",
                    j["job_id"]
                );
            }
        }
    }
    let log = ha.replica(&old).daemon.log_text();
    assert!(!log.contains("worker step failed"), "{log}");
}

#[test]
fn a_replica_leads_and_prunes_a_history_larger_than_one_etcd_response() {
    use seawall_coordinator::model::config::JobKind;
    use seawall_coordinator::model::records::{JobRecord, JobState};
    use seawall_coordinator::store::etcd::EtcdStore;
    use seawall_coordinator::store::{LeaderInfo, StateStore};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let etcd = EtcdCluster::start(&dir.join("etcd"), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // 7,000 settled jobs of about 900 bytes, three days old: 6 MiB, more
    // than the 4 MiB one etcd response may carry.
    const JOBS: usize = 7_000;
    let store = rt.block_on(async {
        let store = EtcdStore::connect(&etcd.endpoints(), "/big", Duration::from_secs(10))
            .await
            .unwrap();
        let seed = LeaderInfo {
            id: "seed".into(),
            address: "seed:1".into(),
            epoch: 0,
        };
        let lead = store.campaign(&seed).await.unwrap();
        let old = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
        let record = |i: usize| {
            let mut j = JobRecord::pending(
                format!("nightly-{i:06}"),
                "eu-west-1".into(),
                "files".into(),
                JobKind::Backup,
            );
            j.enter(JobState::Succeeded, 1, "x".repeat(500));
            j.state = JobState::Succeeded;
            j.created_ms = old;
            j.finished_ms = Some(old);
            for e in &mut j.history {
                e.at_ms = old;
            }
            (
                format!("jobs/{}", j.job_id),
                serde_json::to_vec(&j).unwrap(),
            )
        };
        let all: Vec<(String, Vec<u8>)> = (0..JOBS).map(record).collect();
        assert!(all.iter().map(|(_, v)| v.len()).sum::<usize>() > 6 << 20);
        for batch in all.chunks(100) {
            let (first, rest) = batch.split_first().unwrap();
            store
                .put_with(&lead.fence, &first.0, &first.1, None, rest)
                .await
                .unwrap();
        }
        store.resign(&lead).await.unwrap();
        store
    });
    let count = |store: &EtcdStore| rt.block_on(store.list("jobs/")).unwrap().len();
    assert_eq!(count(&store), JOBS);

    let pki = Pki::new(&dir.join("pki"));
    let config = format!("history_keep = \"1d\"\n{}", etcd_section(&etcd, "/big"));
    let replica = start_replica(&pki, dir, "c1", &config, "", false);
    let addr = replica.address();
    let started = Instant::now();
    eventually(30, "the replica leading", || {
        let out = op(&pki, &addr, &["status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["is_leader"] == true).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(30));
    let jobs = op_json(&pki, &addr, &["jobs", "--limit", "5"]);
    assert_eq!(jobs.as_array().unwrap().len(), 5, "{jobs}");
    // The history pruner gets through it.
    eventually(120, "the old history pruned", || {
        (count(&store) == 0).then_some(())
    });
}

#[test]
fn a_replica_leads_through_an_etcd_that_requires_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    // Seawall's CA signs etcd's server certificate too; the fixture's own
    // health checks use the operator's (client-auth) certificate.
    pki.certs(&["coordinator", "--name", "etcd", "--host", "127.0.0.1"]);
    let d = &pki.dir;
    let etcd = EtcdCluster::start_tls(
        &dir.join("etcd"),
        1,
        crate::etcd_fixture::EtcdTls {
            ca: d.join("ca.pem"),
            cert: d.join("etcd.pem"),
            key: d.join("etcd.key"),
            client_cert: d.join("ops.pem"),
            client_key: d.join("ops.key"),
        },
    );
    assert!(etcd.endpoints()[0].starts_with("https://"));
    let store = format!(
        "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/tls\"\nlease_ttl = \"{TTL_SECS}s\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        etcd.endpoints()[0],
        d.join("ca.pem").display(),
        d.join("c1.pem").display(),
        d.join("c1.key").display()
    );
    let c = start_replica(&pki, dir, "c1", &store, "", false);
    let status = eventually(30, "c1 to lead through etcd over TLS", || {
        let out = op(&pki, &c.address(), &["status"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["is_leader"] == true).then_some(s)
    });
    assert_eq!(status["store"], "etcd", "{status}");
}
