//! The coordinator and agents as real processes: a dev coordinator with two
//! agents in two regions, scheduled and manual backups, identity and input
//! checks at the gRPC boundary.

use crate::fixtures::bin;
use crate::fleet_fixture::*;
use seawall_proto::v1::agent_service_client::AgentServiceClient;
use seawall_proto::v1::operator_service_client::OperatorServiceClient;
use seawall_proto::v1::{agent_message, AgentMessage, Hello, StatusRequest};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn schedule(name: &str, region: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\nregion = \"{region}\"\nsource = \"files\"\ncron = \"*/2 * * * * *\"\nretention_after = true\n"
    )
}

#[test]
fn dev_fleet_runs_scheduled_and_manual_backups_in_two_regions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "state that matters\n".repeat(1000)).unwrap();
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let schedules = schedule("eu-files", "eu-west-1") + &schedule("us-files", "us-east-1");
    let c = start_replica(&pki, dir, "c1", &store, &schedules, true);
    let addr = c.address();
    let _eu = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    let _us = start_agent(
        &pki,
        dir,
        "us-1",
        "us-east-1",
        std::slice::from_ref(&addr),
        &data,
    );

    // Scheduled backups succeed in both regions, each into its own repository.
    let status = eventually(60, "a scheduled backup in each region", || {
        let s = op_json(&pki, &addr, &["status"]);
        (s["sources"].as_array()?.len() == 2).then_some(s)
    });
    assert_eq!(status["is_leader"], true);
    assert_eq!(status["store"], "embedded");
    assert_eq!(status["agents_connected"], 2);
    let agents = op_json(&pki, &addr, &["agents"]);
    assert_eq!(agents.as_array().unwrap().len(), 2);

    // A manual backup, followed to its end.
    let out = op(
        &pki,
        &addr,
        &[
            "backup",
            "--now",
            "--region",
            "eu-west-1",
            "--source",
            "files",
            "--wait",
            "--full",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["level"], "full");
    assert_eq!(last["snapshot_id"].as_str().unwrap().len(), 64);
    // Retention ran after scheduled backups.
    let jobs = op_json(&pki, &addr, &["jobs", "--limit", "200"]);
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["kind"] == "retention" && j["state"] == "succeeded"));
    // A source no agent serves is refused at once, naming what exists.
    let out = op(
        &pki,
        &addr,
        &[
            "backup",
            "--now",
            "--region",
            "eu-west-1",
            "--source",
            "nope",
        ],
    );
    let err = crate::fixtures::one_error_line(&out);
    assert!(
        err.contains("nope") && err.contains("eu-1 serves files"),
        "{err}"
    );

    // The Prometheus endpoint has the RPO figure per source.
    let metrics = http_get(c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_backup_age_seconds{region=\"eu-west-1\",source=\"files\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("seawall_leader 1"), "{metrics}");
    let schedules = op_json(&pki, &addr, &["schedules"]);
    assert_eq!(schedules.as_array().unwrap().len(), 2);
}

pub(crate) fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub(crate) async fn channel(pki: &Pki, addr: &str, holder: Option<&str>) -> Channel {
    let read = |f: &str| std::fs::read(pki.dir.join(f)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("127.0.0.1");
    if let Some(h) = holder {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{h}.pem")),
            read(&format!("{h}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn hello(agent: &str, region: &str) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            agent_id: agent.into(),
            region: region.into(),
            version: "test".into(),
            ..Default::default()
        })),
    }
}

#[test]
fn identities_and_bad_input_are_refused_at_the_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let token = dir.join("operator.token");
    std::fs::write(&token, "a-long-operator-token-for-tests\n").unwrap();
    let private = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    private(&token, 0o600);
    let store = format!(
        "operator_token_file = \"{}\"\n[dev]\nstate = \"{}\"\n",
        token.display(),
        dir.join("state.redb").display()
    );
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    pki.certs(&["agent", "--name", "eu-1", "--region", "eu-west-1"]);
    // The operator token works from the CLI instead of a certificate.
    let out = std::process::Command::new(crate::fixtures::bin())
        .args(["--json", "status", "--coordinator", &addr, "--ca"])
        .arg(pki.dir.join("ca.pem"))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token file others may read is refused, as a password file is.
    private(&token, 0o644);
    let check = std::process::Command::new(crate::fixtures::bin())
        .args(["coordinator", "--dev", "--check", "--config"])
        .arg(dir.join("c1.toml"))
        .output()
        .unwrap();
    let err = crate::fixtures::one_error_line(&check);
    assert!(err.contains("chmod 600"), "{err}");
    private(&token, 0o600);
    let wrong = dir.join("wrong.token");
    std::fs::write(&wrong, "not-the-operator-token").unwrap();
    private(&wrong, 0o600);
    let out = std::process::Command::new(crate::fixtures::bin())
        .args(["status", "--coordinator", &addr, "--ca"])
        .arg(pki.dir.join("ca.pem"))
        .arg("--token-file")
        .arg(&wrong)
        .output()
        .unwrap();
    let err = crate::fixtures::one_error_line(&out);
    assert!(err.contains("token is wrong"), "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An agent whose certificate names eu-west-1 cannot register for us-east-1.
        let mut agent = AgentServiceClient::new(channel(&pki, &addr, Some("eu-1")).await);
        let err = agent
            .session(tokio_stream::iter(vec![hello("eu-1", "us-east-1")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("eu-west-1"), "{}", err.message());
        // Nor pose as another agent.
        let err = agent
            .session(tokio_stream::iter(vec![hello("eu-2", "eu-west-1")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        // No client certificate: refused on both services.
        let anon = channel(&pki, &addr, None).await;
        let err = AgentServiceClient::new(anon.clone())
            .session(tokio_stream::iter(vec![hello("eu-1", "eu-west-1")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let err = OperatorServiceClient::new(anon)
            .status(StatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        // An agent certificate is not an operator's.
        let err = OperatorServiceClient::new(channel(&pki, &addr, Some("eu-1")).await)
            .status(StatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

        // Bytes that are not a protobuf message, and an oversized one
        // (refused from its length prefix).
        let ops = channel(&pki, &addr, Some("ops")).await;
        for (body, what, code) in [
            (vec![0xff; 64], "malformed", Code::InvalidArgument),
            (vec![0x0a; 2 * 1024 * 1024], "oversized", Code::OutOfRange),
        ] {
            let err = raw_call(ops.clone(), "/seawall.v1.OperatorService/ListJobs", body)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{what}: {err:?}");
        }
        // The coordinator is still up and answers.
        let mut client = OperatorServiceClient::new(ops);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(5));
        assert!(client.status(req).await.unwrap().into_inner().is_leader);
    });
    // A client that does not trust the server's CA does not get in either way:
    // covered by TLS itself; the daemon's log shows no panic.
    assert!(!c.daemon.log_text().contains("panicked"));
}

/// Sends raw bytes as a unary gRPC request.
async fn raw_call(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// A codec that sends bytes as they are.
#[derive(Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// A `--dev` coordinator `c1` and one agent `eu-1` of eu-west-1, in a
/// directory of their own. The agent serves `sources` (`[[sources]]`
/// tables), or with `None` a files source `files` of one small file.
struct DevFleet {
    pki: Pki,
    c: Replica,
    eu: Daemon,
    addr: String,
    _tmp: tempfile::TempDir,
}

impl DevFleet {
    /// `top`: top-level coordinator keys; `schedules`: its `[[schedules]]`.
    fn start(top: &str, schedules: &str, sources: Option<&str>) -> DevFleet {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let pki = Pki::new(&dir.join("pki"));
        let store = format!(
            "{top}[dev]\nstate = \"{}\"\n",
            dir.join("state.redb").display()
        );
        let c = start_replica(&pki, dir, "c1", &store, schedules, true);
        let addr = c.address();
        let coordinators = std::slice::from_ref(&addr);
        let eu = match sources {
            Some(sources) => {
                start_agent_with(&pki, dir, "eu-1", "eu-west-1", coordinators, sources)
            }
            None => {
                let data = dir.join("data");
                std::fs::create_dir_all(&data).unwrap();
                std::fs::write(data.join("a.txt"), "x").unwrap();
                start_agent(&pki, dir, "eu-1", "eu-west-1", coordinators, &data)
            }
        };
        DevFleet {
            pki,
            c,
            eu,
            addr,
            _tmp: tmp,
        }
    }

    /// An operator command's JSON answer (it must succeed).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        op_json(&self.pki, &self.addr, args)
    }

    /// An operator command's output, failing or not.
    fn run(&self, args: &[&str]) -> std::process::Output {
        op(&self.pki, &self.addr, args)
    }

    /// An operator command's output for a person (no --json).
    fn human(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(bin())
            .args(args)
            .args(self.pki.operator_flags(&self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the agent is connected to the leader.
    fn wait_agent(&self) {
        eventually(30, "the agent connected", || {
            (self.json(&["status"])["agents_connected"] == 1).then_some(())
        });
    }

    /// The newest jobs, up to 1,000.
    fn jobs(&self) -> Vec<serde_json::Value> {
        self.json(&["jobs", "--limit", "1000"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// One job by id.
    fn job(&self, id: &str) -> serde_json::Value {
        self.jobs()
            .into_iter()
            .find(|j| j["job_id"] == id)
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    /// The recorded backups.
    fn backups(&self) -> Vec<serde_json::Value> {
        self.json(&["backups"]).as_array().unwrap().clone()
    }

    /// Triggers a backup of `source` in eu-west-1; returns the job id.
    fn trigger(&self, source: &str) -> String {
        let job = self.json(&[
            "backup",
            "--now",
            "--region",
            "eu-west-1",
            "--source",
            source,
        ]);
        job["job_id"].as_str().unwrap().to_string()
    }
}

/// A "Redis server" that accepts and never answers, and an agent source on it.
fn silent_redis() -> (std::net::TcpListener, String) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let source = format!(
        "[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n"
    );
    (silent, source)
}

#[test]
fn slots_missed_while_no_coordinator_ran_are_caught_up_once() {
    let mut f = DevFleet::start("", &schedule("eu-files", "eu-west-1"), None);
    let backups = |f: &DevFleet| -> Vec<serde_json::Value> {
        f.jobs()
            .into_iter()
            .filter(|j| j["kind"] == "backup")
            .collect()
    };
    eventually(60, "a first scheduled backup", || {
        backups(&f)
            .iter()
            .any(|j| j["state"] == "succeeded")
            .then_some(())
    });
    // Every replica down for about four slots of a 2 s schedule.
    f.c.daemon.kill9();
    let down = chrono::Utc::now().timestamp_millis();
    std::thread::sleep(Duration::from_secs(8));
    f.c.daemon.restart();
    wait_port(f.c.port, &f.c.daemon);
    let up = chrono::Utc::now().timestamp_millis();
    std::thread::sleep(Duration::from_millis(1500));
    // Of the slots that passed while no coordinator ran, one job runs (the
    // newest), not one per slot. Job ids end in their slot.
    let slot = |j: &serde_json::Value| -> i64 {
        j["job_id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let made: Vec<_> = backups(&f)
        .into_iter()
        .filter(|j| (down..up).contains(&slot(j)))
        .collect();
    assert_eq!(made.len(), 1, "catch-up jobs after the outage: {made:?}");
    assert!(
        slot(&made[0]) > down + 4000,
        "not the newest missed slot: {made:?}"
    );
}

#[test]
fn old_history_is_pruned_but_each_sources_newest_backup_and_its_rpo_gauge_stay() {
    let mut f = DevFleet::start(
        "history_keep = \"5s\"\n",
        &schedule("eu-files", "eu-west-1"),
        None,
    );
    let job_ids = |f: &DevFleet, settled_only: bool| -> Vec<String> {
        f.jobs()
            .iter()
            .filter(|j| {
                !settled_only
                    || ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap())
            })
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    eventually(60, "three scheduled backups", || {
        (f.backups().len() >= 3).then_some(())
    });
    let settled = job_ids(&f, true);
    assert!(settled.len() >= 3, "{settled:?}");
    // No agent from now on: nothing new succeeds, so only pruning changes
    // the records.
    f.eu.kill9();
    let newest = f
        .backups()
        .into_iter()
        .max_by_key(|b| b["finished_unix_ms"].as_i64().unwrap())
        .unwrap();
    eventually(30, "settled jobs and older backup records pruned", || {
        let left = job_ids(&f, false);
        (f.backups().len() == 1 && settled.iter().all(|j| !left.contains(j))).then_some(())
    });
    assert_eq!(f.backups()[0]["snapshot_id"], newest["snapshot_id"]);
    let metrics = http_get(f.c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_history_pruned_total{kind=\"jobs\"}"),
        "{metrics}"
    );

    // A restarted leader reports the source's backup age from the kept
    // record at once, before any new backup succeeds.
    f.c.daemon.kill9();
    f.c.daemon.restart();
    wait_port(f.c.port, &f.c.daemon);
    let metrics = eventually(20, "the RPO gauge after a restart", || {
        let m = http_get(f.c.metrics_port, "/metrics");
        m.contains("seawall_backup_age_seconds{region=\"eu-west-1\",source=\"files\"}")
            .then_some(m)
    });
    assert!(metrics.contains("seawall_leader 1"), "{metrics}");
}

#[test]
fn acknowledged_results_are_not_sent_again_after_a_reconnect() {
    let mut f = DevFleet::start("", &schedule("eu-files", "eu-west-1"), None);
    eventually(60, "four scheduled backups", || {
        (f.backups().len() >= 4).then_some(())
    });
    // The agent reconnects to the restarted coordinator; results the old
    // one acknowledged are not reported again (before acknowledgements,
    // the last 64 were, each logged as a result for a job not active).
    let before = f.c.daemon.log_text().len();
    f.c.daemon.restart();
    wait_port(f.c.port, &f.c.daemon);
    f.wait_agent();
    // A result the agent sends after the reconnect is recorded only after
    // whatever it resent first on the same stream.
    let after = f.trigger("files");
    eventually(60, "a backup after the reconnect", || {
        (f.job(&after)["state"] == "succeeded").then_some(())
    });
    let log = f.c.daemon.log_text();
    let resent = log[before..].matches("not active; ignored").count();
    // One may be in flight at the kill: recorded, acknowledgement lost.
    assert!(
        resent <= 1,
        "{resent} results sent again:\n{}",
        &log[before..]
    );
}

#[test]
fn an_operator_cancels_a_running_job_and_its_agent_stops_it() {
    // The backup hangs on a server that never answers, until cancelled.
    let (silent, source) = silent_redis();
    let f = DevFleet::start("", "", Some(&source));
    f.wait_agent();
    let id = f.trigger("cache");
    let (_conn, _) = silent.accept().unwrap();
    eventually(30, "the job running", || {
        (f.job(&id)["state"] == "running").then_some(())
    });

    let cancelled = f.json(&["jobs", "--cancel", &id, "--reason", "wrong window"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // The agent stops the child and reports; the job stays cancelled, and
    // the agent counts no running job.
    eventually(30, "the agent idle", || {
        (f.json(&["agents"])[0]["running_jobs"] == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let after = f.job(&id);
    assert_eq!(after["state"], "cancelled", "{after}");
    assert!(
        after["error"].as_str().unwrap().contains("wrong window"),
        "{after}"
    );
    assert!(f.eu.log_text().contains("cancel"), "{}", f.eu.log_text());
    // The audit log says who created and who cancelled it, newest first.
    let audit = f.json(&["audit", "--since", "1h"]);
    let events: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["event"].as_str().unwrap()))
        .collect();
    let position = |event: String| {
        events
            .iter()
            .position(|e| *e == ("operator ops", event.as_str()))
            .unwrap_or_else(|| panic!("no {event:?} in {events:?}"))
    };
    let cancelled_at = position(format!("cancelled job {id}: wrong window"));
    let created_at = position(format!("created job {id}"));
    assert!(cancelled_at < created_at, "{events:?}");
    // A settled job cannot be cancelled again, an unknown one is named.
    let err = crate::fixtures::one_error_line(&f.run(&["jobs", "--cancel", &id]));
    assert!(err.contains("it is cancelled"), "{err}");
    let err = crate::fixtures::one_error_line(&f.run(&["jobs", "--cancel", "no-such-job"]));
    assert!(err.contains("no job \"no-such-job\""), "{err}");
}

#[test]
fn a_stopping_agent_takes_no_new_job_and_lets_its_running_one_finish() {
    // The backup hangs on a server that answers nothing until the test
    // hangs up.
    let (silent, source) = silent_redis();
    let mut f = DevFleet::start("", "", Some(&source));
    f.wait_agent();
    let first = f.trigger("cache");
    let (conn, _) = silent.accept().unwrap();
    eventually(30, "the job running", || {
        (f.job(&first)["state"] == "running").then_some(())
    });

    // SIGTERM: the agent stays up for its running job and refuses new ones.
    f.eu.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!f.eu.exited(), "the agent quit with a job running");
    // A refusal that says "later": the job is not started, costs no
    // attempt, and waits for an agent of the region that takes it.
    let second = f.trigger("cache");
    let refused = eventually(20, "the new job refused", || {
        let j = f.job(&second);
        (j["error_kind"] == "busy").then_some(j)
    });
    assert!(
        refused["error"].as_str().unwrap().contains("shutting down"),
        "{refused}"
    );
    assert_eq!(refused["state"], "pending", "{refused}");
    assert_eq!(refused["attempt"], 1, "{refused}");
    assert_eq!(f.job(&first)["state"], "running");

    // The running job ends on its own (the server hangs up): its own
    // result is recorded, not a cancellation, and then the agent exits.
    drop(conn);
    eventually(10, "the agent exited", || f.eu.exited().then_some(()));
    let done = f.job(&first);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(!error.is_empty() && !error.contains("cancelled"), "{done}");
}

#[test]
fn a_backup_of_a_file_that_keeps_changing_succeeds_with_warnings_and_counts() {
    let data = tempfile::tempdir().unwrap();
    let live = data.path().join("live.log");
    std::fs::write(&live, vec![b'x'; 4 << 20]).unwrap();
    let source = format!(
        "[[sources]]\nname = \"live\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        data.path().display()
    );
    let f = DevFleet::start("", "", Some(&source));
    f.wait_agent();
    // An application appending to its log all the while.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, live) = (stop.clone(), live.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(live).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(&[b'y'; 4096]).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let id = f.trigger("live");
    let job = eventually(60, "the job settled", || {
        let j = f.job(&id);
        (j["state"] != "pending" && j["state"] != "running").then_some(j)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();

    // Saved, not retried, and the warning is there to read.
    assert_eq!(job["state"], "succeeded_with_warnings", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(job["warning_count"].as_u64().unwrap() >= 1, "{job}");
    assert!(
        job["warnings"][0]
            .as_str()
            .unwrap()
            .contains("changed while it was read"),
        "{job}"
    );
    let table = f.human(&["jobs"]);
    assert!(table.contains("succeeded_with_warnings"), "{table}");
    // The leader's workers are all up, with no error to show.
    let status = f.json(&["status"]);
    let workers: Vec<(&str, bool, u64)> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap(),
                w["running"].as_bool().unwrap(),
                w["failures_in_a_row"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        workers,
        [
            ("dispatcher", true, 0),
            ("history", true, 0),
            ("scheduler", true, 0)
        ],
        "{status}"
    );
    assert!(f.human(&["status"]).contains("worker scheduler"));
    // Its backup record is written, so the RPO gauge moves.
    assert!(
        f.backups().iter().any(|b| b["job_id"] == id),
        "{:?}",
        f.backups()
    );
    let metrics = http_get(f.c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_job_warnings_total{kind=\"backup\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seawall_backup_age_seconds{region=\"eu-west-1\",source=\"live\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("seawall_jobs_total{kind=\"backup\",outcome=\"succeeded_with_warnings\"} 1"),
        "{metrics}"
    );

    // The snapshot says where it came from, and the listing filters by it.
    let dir = f._tmp.path();
    let snapshots = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(bin())
            .args(["--json", "-r"])
            .arg(dir.join("repo-eu-1"))
            .arg("--password-file")
            .arg(dir.join("eu-1.password"))
            .arg("snapshots")
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let all = snapshots(&[]);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["region"], "eu-west-1");
    assert_eq!(all[0]["agent"], "eu-1");
    assert!(!all[0]["hostname"].as_str().unwrap().is_empty());
    let host = all[0]["hostname"].as_str().unwrap().to_string();
    assert_eq!(
        snapshots(&["--region", "eu-west-1", "--host", &host]).len(),
        1
    );
    assert!(snapshots(&["--region", "us-east-1"]).is_empty());
    assert!(snapshots(&["--host", "elsewhere"]).is_empty());
}

#[test]
fn a_job_no_retry_can_mend_fails_once_and_an_unreachable_bucket_is_retried() {
    // Three sources, each on a schedule with retries: a directory that is
    // not there, a repository opened with the wrong password, and a bucket
    // on a server that is down.
    let every = |name: &str, region: &str, source: &str| {
        format!(
            "[[schedules]]\nname = \"{name}\"\nregion = \"{region}\"\nsource = \"{source}\"\ncron = \"*/2 * * * * *\"\nretries = 3\nretry_backoff = \"1s\"\n"
        )
    };
    let schedules = every("gone", "eu-west-1", "gone")
        + &every("locked-out", "ap-south-1", "files")
        + &every("bucket", "us-east-1", "files");
    let missing =
        "[[sources]]\nname = \"gone\"\nkind = \"files\"\npaths = [\"/nonexistent/seawall-test\"]\n";
    let f = DevFleet::start("", &schedules, Some(missing));
    let dir = f._tmp.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), "a").unwrap();
    let files = format!(
        "[[sources]]\nname = \"files\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        data.display()
    );
    let wrong = dir.join("wrong.password");
    std::fs::write(&wrong, "not the password").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let coordinators = std::slice::from_ref(&f.addr);
    let _ap = start_agent_on(
        &f.pki,
        dir,
        "ap-1",
        "ap-south-1",
        coordinators,
        &files,
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            dir.join("repo-ap-1").display(),
            wrong.display()
        )),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    // Static keys in agent.toml: the SDK asks no metadata service.
    let s3_secret = dir.join("s3.secret");
    std::fs::write(&s3_secret, "test-secret").unwrap();
    std::fs::set_permissions(
        &s3_secret,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let _us = start_agent_on(
        &f.pki,
        dir,
        "us-1",
        "us-east-1",
        coordinators,
        &files,
        Some(&format!(
            "repo = \"s3://seawall/us\"\npassword_file = \"{}\"\ns3_endpoint = \"http://127.0.0.1:{dead_port}\"\ns3_region = \"us-east-1\"\ns3_path_style = true\ns3_access_key_id = \"test\"\ns3_secret_access_key_file = \"{}\"",
            dir.join("us-1.password").display(),
            s3_secret.display()
        )),
    );

    let first_settled = |schedule: &str| {
        eventually(90, &format!("a {schedule} job settled"), || {
            f.jobs()
                .into_iter()
                .filter(|j| j["schedule"] == schedule)
                .find(|j| j["state"] == "failed")
        })
    };
    for (schedule, kind) in [("gone", "not_found"), ("locked-out", "wrong_key")] {
        let job = first_settled(schedule);
        assert_eq!(job["attempt"], 1, "{job}");
        assert_eq!(job["error_kind"], kind, "{job}");
    }
    // The bucket's jobs go round again with backoff: a second attempt is
    // made, and the kind says why.
    let retried = eventually(90, "a bucket job retried", || {
        f.jobs()
            .into_iter()
            .find(|j| j["schedule"] == "bucket" && j["attempt"].as_u64() >= Some(2))
    });
    assert_eq!(retried["error_kind"], "unreachable", "{retried}");
    let human = f.human(&["jobs"]);
    assert!(human.contains("[wrong_key]"), "{human}");
}

#[test]
fn an_agent_that_never_reads_its_stream_does_not_hold_up_another_regions_jobs() {
    use seawall_proto::v1::{SourceInfo, TriggerBackupRequest, WatchJobRequest};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "x".repeat(1000)).unwrap();
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    let _eu = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    pki.certs(&["agent", "--name", "us-1", "--region", "us-east-1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The stuck agent: a one-kilobyte receive window it never drains.
        let read = |f: &str| std::fs::read(pki.dir.join(f)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("us-1.pem"), read("us-1.key")))
            .domain_name("127.0.0.1");
        let stuck = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(4);
        tx.send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                agent_id: "us-1".into(),
                region: "us-east-1".into(),
                version: "test".into(),
                sources: vec![SourceInfo {
                    name: "files".into(),
                    kind: "files".into(),
                }],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let _never_read = AgentServiceClient::new(stuck)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();

        // Enough jobs for it to fill its window and its queue.
        let mut ops = OperatorServiceClient::new(channel(&pki, &addr, Some("ops")).await);
        for _ in 0..120 {
            ops.trigger_backup(TriggerBackupRequest {
                region: "us-east-1".into(),
                source: "files".into(),
                level: String::new(),
            })
            .await
            .unwrap();
        }
        eventually(30, "the stuck agent's queue to fill", || {
            c.daemon
                .log_text()
                .contains("stream is full or closed")
                .then_some(())
        });

        // A job in another region is handed to its agent at once.
        let started = std::time::Instant::now();
        let job = ops
            .trigger_backup(TriggerBackupRequest {
                region: "eu-west-1".into(),
                source: "files".into(),
                level: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        let mut watch = ops
            .watch_job(WatchJobRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
                .await
                .expect("job news within 5 s")
                .unwrap()
                .expect("the job's stream ended before it was assigned");
            if update.state != "pending" {
                break;
            }
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "assigned after {took:?}");
        drop(tx);
    });
}

#[test]
fn an_agent_that_obeyed_a_forged_epoch_is_named_and_recovers_with_reset_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "x".repeat(1000)).unwrap();
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    let epoch = eventually(20, "a leader", || {
        let s = op_json(&pki, &addr, &["status"]);
        (s["is_leader"] == true).then(|| s["epoch"].as_u64().unwrap())
    });
    // The agent once obeyed a coordinator that was never elected, with an
    // epoch far above the real leader's.
    let state = dir.join("state-eu-1");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("epoch"), (1u64 << 40).to_string()).unwrap();
    let mut agent = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    eventually(20, "the agent to be refused, naming the way out", || {
        agent.log_text().contains("--reset-epoch").then_some(())
    });
    assert_eq!(
        op_json(&pki, &addr, &["agents"]).as_array().map(Vec::len),
        Some(0)
    );
    let audit = op_json(&pki, &addr, &["audit"]);
    assert!(audit.to_string().contains("never elected"), "{audit}");

    // Stopped, reset to the leader's epoch, started: it works again.
    agent.kill9();
    let out = std::process::Command::new(bin())
        .args(["agent", "--config"])
        .arg(dir.join("eu-1.toml"))
        .args(["--reset-epoch", &epoch.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(state.join("epoch")).unwrap().trim(),
        epoch.to_string()
    );
    agent.restart();
    eventually(20, "the agent to connect again", || {
        let a = op_json(&pki, &addr, &["agents"]);
        (a.as_array().map(Vec::len) == Some(1)).then_some(())
    });
    backup_now(&pki, &addr, "eu-west-1", "files");
}

#[test]
fn a_mirror_schedule_keeps_the_other_regions_replica_current() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "state that matters\n".repeat(1000)).unwrap();
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let schedule = "[[schedules]]\nname = \"us-mirror\"\nregion = \"us-east-1\"\nsource = \"eu\"\nkind = \"mirror\"\ncron = \"*/2 * * * * *\"\n\n[[schedules]]\nname = \"ap-check\"\nregion = \"ap-southeast-1\"\nsource = \"eu\"\nkind = \"mirror\"\ncron = \"*/2 * * * * *\"\n";
    let c = start_replica(&pki, dir, "c1", &store, schedule, true);
    let addr = c.address();
    let _eu = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    // The secondary region's agent: its repository is a replica of the
    // primary's, empty until the first mirror run.
    let replica = dir.join("replica-us");
    let mirrors = format!(
        "[[mirrors]]\nname = \"eu\"\nfrom = \"{}\"\n",
        dir.join("repo-eu-1").display()
    );
    let _us = start_agent_on(
        &pki,
        dir,
        "us-1",
        "us-east-1",
        std::slice::from_ref(&addr),
        &mirrors,
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            replica.display(),
            dir.join("us-1.password").display()
        )),
    );
    backup_now(&pki, &addr, "eu-west-1", "files");
    let primary = crate::fixtures::Repo::local(&dir.join("repo-eu-1"));
    let original = primary
        .cmd(&["--json", "snapshots"])
        .env("SEAWALL_PASSWORD", "fleet test password")
        .output()
        .unwrap();
    let original: serde_json::Value = serde_json::from_slice(&original.stdout).unwrap();
    // The replica, opened with the primary's password, holds the snapshot.
    let replica_repo = crate::fixtures::Repo::local(&replica);
    let listed = eventually(30, "the snapshot to reach the replica", || {
        let out = replica_repo
            .cmd(&["--json", "snapshots"])
            .env("SEAWALL_PASSWORD", "fleet test password")
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(listed[0]["id"], original[0]["id"], "{listed}");
    let jobs = op_json(&pki, &addr, &["jobs", "--region", "us-east-1"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "mirror" && j["state"] == "succeeded"),
        "{jobs}"
    );

    // A third region whose replica S3 replication fills: its agent only
    // checks. Empty, the check fails naming what is missing; once the
    // objects arrived, it passes.
    let filled = dir.join("replica-ap");
    let check_only = format!(
        "[[mirrors]]\nname = \"eu\"\nfrom = \"{}\"\ncheck_only = true\n",
        dir.join("repo-eu-1").display()
    );
    let _ap = start_agent_on(
        &pki,
        dir,
        "ap-1",
        "ap-southeast-1",
        std::slice::from_ref(&addr),
        &check_only,
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            filled.display(),
            dir.join("ap-1.password").display()
        )),
    );
    let ap_jobs = |state: &str, text: &str| {
        let jobs = op_json(&pki, &addr, &["jobs", "--region", "ap-southeast-1"]);
        jobs.as_array()?
            .iter()
            .any(|j| {
                j["kind"] == "mirror"
                    && j["state"] == state
                    && j["error"].as_str().unwrap_or_default().contains(text)
            })
            .then_some(())
    };
    eventually(30, "a failed check naming what has not arrived", || {
        ap_jobs("failed", "lacks")
    });
    assert!(!filled.join("config").exists(), "a check-only job copied");
    // --check accepts the empty replica and reads each mirror's source...
    let config = dir.join("ap-1.toml");
    let out = std::process::Command::new(bin())
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("empty: the first mirror run fills it")
            && text.contains("mirrors (sources readable): eu"),
        "{text}"
    );
    // ...and names a mirror whose source it cannot read.
    let broken = dir.join("ap-broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config).unwrap().replace(
            &dir.join("repo-eu-1").display().to_string(),
            "/nonexistent/repo",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["agent", "--check", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    let line = crate::fixtures::one_error_line(&out);
    assert!(line.contains("mirror \"eu\""), "{line}");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.join("repo-eu-1"))
        .arg(&filled)
        .status()
        .unwrap();
    assert!(copied.success());
    eventually(30, "a passing check once the objects arrived", || {
        ap_jobs("succeeded", "")
    });
}
