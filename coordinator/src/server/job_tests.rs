//! The job state machine end to end inside one process, driven through the
//! agent API and the leadership loop (so these tests sit at the top layer):
//! the coordinator on the embedded store with paused time, dispatch,
//! retries by error kind, a new leader picking up the jobs, and a lost lead
//! stopping every worker. The store is wrapped to count write attempts and
//! to hand out a leadership the test can take away.

// Compiled into test builds only (server/mod.rs declares it under
// #[cfg(test)]); said here too so the file reads as what it is.
#![cfg(test)]

use crate::fleet::registry::{next_session_id, Session};
use crate::jobs::{AttemptFailure, Coordinator, Lead};
use crate::model::config::{CoordinatorConfig, JobKind, Level};
use crate::model::records::{JobRecord, JobState};
use crate::store::embedded::EmbeddedStore;
use crate::store::{Entry, Fence, LeaderInfo, Leadership, StateStore, StoreResult};
use async_trait::async_trait;
use seawall_proto::v1::{coordinator_message, operation, BackupLevel};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The embedded store, counting writes, with a leadership the test controls.
struct TestStore {
    inner: EmbeddedStore,
    writes: AtomicUsize,
    campaigns: AtomicUsize,
    lost: Mutex<Option<watch::Receiver<bool>>>,
}

impl TestStore {
    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl StateStore for TestStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        self.inner.list(prefix).await
    }
    async fn list_newest(
        &self,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        self.inner.list_newest(prefix, before, limit).await
    }
    async fn put_with(
        &self,
        fence: &Fence,
        key: &str,
        value: &[u8],
        expected: Option<i64>,
        extra: &[(String, Vec<u8>)],
    ) -> StoreResult<i64> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner
            .put_with(fence, key, value, expected, extra)
            .await
    }
    async fn put_bound(&self, fence: &Fence, key: &str, value: &[u8]) -> StoreResult<i64> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put_bound(fence, key, value).await
    }
    async fn delete(&self, fence: &Fence, key: &str) -> StoreResult<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(fence, key).await
    }
    async fn campaign(&self, me: &LeaderInfo) -> StoreResult<Leadership> {
        // The first campaign wins with a leadership the test can take
        // away; later ones wait for ever (another replica leads).
        if self.campaigns.fetch_add(1, Ordering::SeqCst) > 0 {
            std::future::pending::<()>().await;
        }
        let won = self.inner.campaign(me).await?;
        let lost = self
            .lost
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| watch::channel(false).1);
        let (_keep, deadline) =
            watch::channel(tokio::time::Instant::now() + Duration::from_secs(365 * 86400));
        std::mem::forget(_keep);
        Ok(Leadership::new(won.fence.clone(), lost, deadline))
    }
    async fn resign(&self, leadership: &Leadership) -> StoreResult<()> {
        self.inner.resign(leadership).await
    }
    async fn leader(&self) -> StoreResult<Option<LeaderInfo>> {
        self.inner.leader().await
    }
    fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl()
    }
}

fn config(schedules: &str) -> CoordinatorConfig {
    toml::from_str(&format!(
        "id = \"c1\"\nlisten = \"127.0.0.1:7443\"\n[tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1.key\"\n{schedules}"
    ))
    .unwrap()
}

struct Setup {
    coord: Arc<Coordinator>,
    store: Arc<TestStore>,
    lose: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn setup(schedules: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (lose, lost) = watch::channel(false);
    let store = Arc::new(TestStore {
        inner: EmbeddedStore::open(&dir.path().join("state.redb")).unwrap(),
        writes: AtomicUsize::new(0),
        campaigns: AtomicUsize::new(0),
        lost: Mutex::new(Some(lost)),
    });
    let coord = Arc::new(Coordinator::new(config(schedules), store.clone(), None));
    Setup {
        coord,
        store,
        lose,
        _dir: dir,
    }
}

/// The setup's coordinator, leading.
async fn leading(s: &Setup) -> Arc<Lead> {
    let leadership = s.store.campaign(&s.coord.me).await.unwrap();
    s.coord.take_lead(leadership).await.unwrap()
}

/// A connected agent of `region` serving `source`, and its command stream.
fn agent(
    coord: &Coordinator,
    region: &str,
    source: &str,
) -> tokio::sync::mpsc::Receiver<Result<seawall_proto::v1::CoordinatorMessage, tonic::Status>> {
    agent_with(coord, &format!("{region}-agent"), region, source, 16).1
}

fn backup_job(id: &str) -> JobRecord {
    JobRecord {
        level: Some(Level::Full),
        retries: 2,
        retry_backoff_ms: 1000,
        ..JobRecord::pending(id.into(), "eu".into(), "app".into(), JobKind::Backup)
    }
}

#[tokio::test(start_paused = true)]
async fn losing_the_lead_stops_every_worker_within_a_second_and_nothing_more_is_written() {
    // A schedule firing every second keeps the scheduler writing.
    let s = setup(
        "[[schedules]]\nname = \"often\"\nregion = \"eu\"\nsource = \"app\"\ncron = \"* * * * * *\"\n",
    );
    let leading = tokio::spawn(crate::server::lead_loop(s.coord.clone()));
    // The embedded store's I/O runs on blocking threads, which paused time
    // does not wait for: poll for the scheduler's writes instead.
    for _ in 0..600 {
        if s.store.writes() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.coord.lead().is_some());
    let names: Vec<String> = s
        .coord
        .workers
        .snapshot()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["dispatcher", "history", "scheduler"]);
    assert!(s.coord.workers.snapshot().iter().all(|w| w.running));
    assert!(s.store.writes() > 2, "the scheduler wrote nothing");

    s.lose.send(true).unwrap();
    let lost_at = tokio::time::Instant::now();
    while s.coord.workers.any_running() {
        assert!(
            lost_at.elapsed() < Duration::from_secs(1),
            "workers still running: {:?}",
            s.coord.workers.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.coord.lead().is_none());
    let written = s.store.writes();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        s.store.writes(),
        written,
        "a write was attempted after the lead was lost"
    );
    leading.abort();
}

#[tokio::test(start_paused = true)]
async fn a_job_is_dispatched_as_a_typed_operation_and_retried_only_when_a_retry_can_help() {
    let s = setup("");
    let lead = leading(&s).await;
    // No agent of the region: nothing is sent.
    s.coord
        .create_job(&lead, backup_job("j1"), "test")
        .await
        .unwrap();
    assert_eq!(s.coord.dispatch(&lead).await, 0);

    let mut commands = agent(&s.coord, "eu", "app");
    assert_eq!(s.coord.dispatch(&lead).await, 1);
    let sent = commands.recv().await.unwrap().unwrap();
    let Some(coordinator_message::Body::Assign(assign)) = sent.body else {
        panic!("not an assignment: {sent:?}")
    };
    let Some(operation::Kind::Backup(b)) = assign.operation.and_then(|o| o.kind) else {
        panic!("not a backup operation")
    };
    assert_eq!(
        (b.source.as_str(), b.level),
        ("app", BackupLevel::Full as i32)
    );
    assert_eq!(sent.epoch, lead.epoch());

    // An unreachable bucket: retried after the backoff, as attempt 2.
    let unreachable = AttemptFailure {
        message: "bucket unreachable".into(),
        kind: Some("unreachable".into()),
        retryable: true,
    };
    s.coord.job_failed(&lead, "j1", &unreachable).await.unwrap();
    let (job, _) = s.coord.active_job(&lead, "j1").unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 2));
    assert_eq!(
        s.coord.dispatch(&lead).await,
        0,
        "dispatched before its backoff"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.coord.dispatch(&lead).await, 1);

    // A wrong password: failed at once, attempts left or not.
    let wrong_key = AttemptFailure {
        message: "the password does not open the repository".into(),
        kind: Some("wrong_key".into()),
        retryable: false,
    };
    s.coord.job_failed(&lead, "j1", &wrong_key).await.unwrap();
    assert!(s.coord.active_job(&lead, "j1").is_none());
    let stored: JobRecord =
        serde_json::from_slice(&s.store.get("jobs/j1").await.unwrap().unwrap().value).unwrap();
    assert_eq!(stored.state, JobState::Failed);
    assert_eq!(stored.attempt, 2);
    assert_eq!(stored.error_kind.as_deref(), Some("wrong_key"));
    assert!(
        stored.history.last().unwrap().note.contains("not retried"),
        "{:?}",
        stored.history
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_takes_up_the_jobs_its_predecessor_left() {
    let s = setup("");
    let lead = leading(&s).await;
    s.coord
        .create_job(&lead, backup_job("left"), "test")
        .await
        .unwrap();
    let _commands = agent(&s.coord, "eu", "app");
    assert_eq!(s.coord.dispatch(&lead).await, 1);
    s.coord.step_down();

    // Another replica over the same store finds the running job and, when
    // its agent's hello does not list it, retries it.
    let next = Coordinator::new(config(""), s.store.clone(), None);
    let won = s.store.inner.campaign(&next.me).await.unwrap();
    let lead2 = next.take_lead(won).await.unwrap();
    assert!(lead2.epoch() > lead.epoch());
    let (job, _) = next
        .active_job(&lead2, "left")
        .expect("the job was not taken up");
    assert_eq!(job.state, JobState::Running);
    next.job_failed(
        &lead2,
        "left",
        &AttemptFailure::transient("the agent restarted while running it"),
    )
    .await
    .unwrap();
    let (job, _) = next.active_job(&lead2, "left").unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 2));
}

/// An agent session with a command queue of `capacity`, and its receiver.
fn agent_with(
    coord: &Coordinator,
    name: &str,
    region: &str,
    source: &str,
    capacity: usize,
) -> (
    Arc<Session>,
    tokio::sync::mpsc::Receiver<Result<seawall_proto::v1::CoordinatorMessage, tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let session = Arc::new(Session {
        session_id: next_session_id(),
        agent_id: name.into(),
        region: region.into(),
        sources: vec![source.into()],
        version: "test".into(),
        hostname: "h".into(),
        connected_ms: 0,
        last_heartbeat_ms: 0.into(),
        leased: false.into(),
        running: 0.into(),
        max_jobs: 0,
        outbox: tx,
        fingerprint: String::new(),
        cert_expires_ms: i64::MAX,
        ended: Default::default(),
        ready: true.into(),
        self_fenced: Vec::new(),
        check_files: Vec::new(),
    });
    coord.registry.insert(session.clone());
    (session, rx)
}

fn job_in(id: &str, region: &str) -> JobRecord {
    JobRecord::pending(id.into(), region.into(), "app".into(), JobKind::Backup)
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_reads_nothing_holds_up_no_other_regions_dispatch() {
    let s = setup("");
    let lead = leading(&s).await;
    // eu's agent has a queue of one, already full, and never reads it.
    let (stuck, _never_read) = agent_with(&s.coord, "db-1", "eu", "app", 1);
    stuck.outbox.try_send(Err(tonic::Status::ok(""))).unwrap();
    let (_us, mut us_commands) = agent_with(&s.coord, "db-2", "us", "app", 8);
    s.coord
        .create_job(&lead, job_in("eu-job", "eu"), "test")
        .await
        .unwrap();
    s.coord
        .create_job(&lead, job_in("us-job", "us"), "test")
        .await
        .unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(2), s.coord.dispatch(&lead))
        .await
        .expect("dispatch waited on the stuck agent");
    assert_eq!(sent, 1);
    assert!(us_commands.try_recv().is_ok());
    // The stuck agent's job was not recorded as running: it waits.
    let (eu, _) = s.coord.active_job(&lead, "eu-job").unwrap();
    assert_eq!(eu.state, JobState::Pending);
}

#[tokio::test(start_paused = true)]
async fn agents_of_the_same_name_in_two_regions_keep_their_own_jobs() {
    let s = setup("");
    let lead = leading(&s).await;
    let (eu, _eu_rx) = agent_with(&s.coord, "db-1", "eu", "app", 8);
    let (us, _us_rx) = agent_with(&s.coord, "db-1", "us", "app", 8);
    assert_eq!(s.coord.registry.len(), 2, "one replaced the other");
    let job = JobRecord {
        retries: 2,
        ..job_in("eu-job", "eu")
    };
    s.coord.create_job(&lead, job, "test").await.unwrap();
    assert_eq!(s.coord.dispatch(&lead).await, 1);
    let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
    assert_eq!(job.state, JobState::Running);

    // us/db-1 refuses eu/db-1's job, with a huge reason: ignored.
    let refusal = |reason: String| seawall_proto::v1::AgentMessage {
        body: Some(seawall_proto::v1::agent_message::Body::Refused(
            seawall_proto::v1::CommandRefused {
                job_id: "eu-job".into(),
                epoch: 1,
                newest_epoch: 0,
                reason,
            },
        )),
    };
    let written = s.store.writes();
    crate::api::agents::handle(&s.coord, &lead, &us, refusal("x".repeat(1 << 20))).await;
    assert_eq!(
        s.store.writes(),
        written,
        "a foreign refusal wrote something"
    );
    let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Running, 1));

    // Its own agent's refusal counts, its reason capped in the audit log.
    crate::api::agents::handle(&s.coord, &lead, &eu, refusal("y".repeat(1 << 20))).await;
    let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
    assert_eq!(job.state, JobState::Pending);
    let longest = s
        .store
        .list("audit/")
        .await
        .unwrap()
        .iter()
        .map(|e| e.value.len())
        .max()
        .unwrap();
    assert!(longest < 2048, "an audit line of {longest} bytes");
    assert!(job.error.unwrap().len() < 2048);
}

#[tokio::test(start_paused = true)]
async fn an_agent_flooding_results_for_another_agents_job_writes_two_audit_lines_and_is_cut_off() {
    let s = setup("");
    let lead = leading(&s).await;
    let (_eu, _eu_rx) = agent_with(&s.coord, "db-1", "eu", "app", 8);
    let (us, mut us_rx) = agent_with(&s.coord, "db-1", "us", "app", 8);
    s.coord
        .create_job(&lead, job_in("eu-job", "eu"), "test")
        .await
        .unwrap();
    assert_eq!(s.coord.dispatch(&lead).await, 1);
    let result = || seawall_proto::v1::AgentMessage {
        body: Some(seawall_proto::v1::agent_message::Body::Result(
            seawall_proto::v1::OperationResult {
                job_id: "eu-job".into(),
                epoch: lead.epoch(),
                status: seawall_proto::v1::OperationStatus::Succeeded as i32,
                ..Default::default()
            },
        )),
    };
    let audit_lines = || async { s.store.list("audit/").await.unwrap().len() };
    let before = audit_lines().await;
    let written = s.store.writes();
    // Before the fix: one durable audit line each, 5,800 in 20 s.
    let mut ended_with = None;
    for _ in 0..5_000 {
        crate::api::agents::handle(&s.coord, &lead, &us, result()).await;
        // What the agent is sent back (its results acknowledged, then why
        // its session ends) is read as a well-behaved stream would.
        while let Ok(m) = us_rx.try_recv() {
            if let Err(e) = m {
                ended_with = Some(e);
            }
        }
    }
    assert_eq!(audit_lines().await - before, 1, "one line for the first");
    assert_eq!(s.store.writes() - written, 1);
    assert!(us.ended.is_cancelled(), "the flooding session goes on");
    let status = ended_with.expect("no error sent to the flooding agent");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // The job is untouched; a minute on, one more line counts the rest.
    let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
    assert_eq!(job.state, JobState::Running);
    tokio::time::advance(Duration::from_secs(61)).await;
    crate::api::agents::handle(&s.coord, &lead, &us, result()).await;
    let lines = s.store.list("audit/").await.unwrap();
    assert_eq!(lines.len() - before, 2);
    let last = String::from_utf8_lossy(&lines.last().unwrap().value).into_owned();
    assert!(last.contains("refused 5000 results"), "{last}");
}

#[tokio::test(start_paused = true)]
async fn the_audit_listing_pages_newest_first_without_reading_the_whole_log() {
    use seawall_proto::v1::operator_service_server::OperatorService;
    let s = setup("");
    let lead = leading(&s).await;
    let before = s.store.list("audit/").await.unwrap().len();
    for i in 0..600 {
        s.coord.audit(&lead, "ops", format!("event {i:03}")).await;
        tokio::time::advance(Duration::from_millis(3)).await;
    }
    // Any replica answers from the store: one with an operator token.
    let reader = Coordinator::new(config(""), s.store.clone(), Some("a-token".into()));
    let api = crate::api::operator::OperatorApi::new(Arc::new(reader));
    let ask = |req: seawall_proto::v1::ListAuditRequest| {
        let mut req = tonic::Request::new(req);
        req.metadata_mut()
            .insert("authorization", "Bearer a-token".parse().unwrap());
        let api = &api;
        async move { api.list_audit(req).await.unwrap().into_inner().entries }
    };
    let page = |limit: u32, before: String| {
        ask(seawall_proto::v1::ListAuditRequest {
            limit,
            before,
            ..Default::default()
        })
    };
    let first = page(250, String::new()).await;
    assert_eq!(first.len(), 250);
    assert_eq!(first[0].event, "event 599");
    let second = page(10_000, first[249].key.clone()).await;
    assert_eq!(second.len(), 350 + before);
    assert_eq!(second[0].event, "event 349");
    assert_eq!(second[349].event, "event 000");
    // Only the last minute's lines (600 * 3 ms is 1.8 s, all of them).
    let since = crate::model::clock::now_ms() - 60_000;
    let recent = ask(seawall_proto::v1::ListAuditRequest {
        limit: 10_000,
        since_unix_ms: since,
        ..Default::default()
    })
    .await;
    assert!(recent.len() >= 600 && recent.iter().all(|e| e.at_unix_ms >= since));
}

#[tokio::test(start_paused = true)]
async fn a_late_result_after_a_timeout_is_recorded_not_dropped() {
    let s = setup("");
    let lead = leading(&s).await;
    let (eu, _rx) = agent_with(&s.coord, "db-1", "eu", "app", 8);
    let job = JobRecord {
        retries: 2,
        ..job_in("slow", "eu")
    };
    s.coord.create_job(&lead, job, "test").await.unwrap();
    assert_eq!(s.coord.dispatch(&lead).await, 1);
    // The leader gave up waiting and queued a retry...
    s.coord
        .job_failed(
            &lead,
            "slow",
            &AttemptFailure::transient("no news within job_timeout"),
        )
        .await
        .unwrap();
    // ...when the agent's real result arrives.
    let result = seawall_proto::v1::AgentMessage {
        body: Some(seawall_proto::v1::agent_message::Body::Result(
            seawall_proto::v1::OperationResult {
                job_id: "slow".into(),
                epoch: lead.epoch(),
                status: seawall_proto::v1::OperationStatus::Succeeded as i32,
                output: Some(seawall_proto::v1::operation_result::Output::Backup(
                    seawall_proto::v1::BackupOutput {
                        snapshot_id: "ab".repeat(32),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
    };
    crate::api::agents::handle(&s.coord, &lead, &eu, result).await;
    assert!(
        s.coord.active_job(&lead, "slow").is_none(),
        "the result was dropped"
    );
    let stored: JobRecord =
        serde_json::from_slice(&s.store.get("jobs/slow").await.unwrap().unwrap().value).unwrap();
    assert_eq!(stored.state, JobState::Succeeded);
    assert_eq!(s.store.list("backups/").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_drills_job_not_written_yet_is_waited_for_and_the_next_leader_writes_it() {
    use crate::drills::{journal, restore};
    use seawall_proto::v1::{Drill, FailoverStep};
    let s = setup("");
    let lead = leading(&s).await;
    let placeholder = |job: &str| FailoverStep {
        name: "files".into(),
        state: "pending".into(),
        evidence: [("job".to_string(), job.to_string())].into(),
        ..Default::default()
    };
    // A leader stopped between writing the journal and its job.
    let mut d = Drill {
        id: "d1".into(),
        kind: "restore".into(),
        state: journal::RUNNING.into(),
        started_unix_ms: crate::model::clock::now_ms(),
        steps: vec![placeholder("d1.files")],
        ..Default::default()
    };
    journal::save(&s.coord, &lead, &d, 0, None).await.unwrap();
    // Not there yet, so not gone: the step waits.
    assert!(!restore::advance(&s.coord, &lead, &mut d).await.unwrap());
    assert_eq!(d.steps[0].state, "pending");
    // Whoever sees the drill's slot next writes the missing job.
    let r = restore::Resolved {
        scenario: String::new(),
        service: "docs".into(),
        region: "eu".into(),
        sources: vec![("files".into(), "eu-agent".into())],
        point: "latest".into(),
        rto_ms: 60_000,
        rpo_ms: 60_000,
        check_file: None,
        deep: false,
        managed: false,
    };
    restore::start(&s.coord, &lead, &r, "d1".into(), "scheduler")
        .await
        .unwrap();
    let job = s
        .coord
        .store
        .get(&crate::model::records::job_key("d1.files"))
        .await
        .unwrap();
    assert!(job.is_some(), "the drill's job was not written");
    // A job still missing long after the drill began is gone.
    let mut old = Drill {
        started_unix_ms: crate::model::clock::now_ms() - 120_000,
        steps: vec![placeholder("d0.files")],
        ..d.clone()
    };
    assert!(restore::advance(&s.coord, &lead, &mut old).await.unwrap());
    assert_eq!(old.steps[0].state, "failed");
    assert!(
        old.steps[0].detail.contains("is gone"),
        "{:?}",
        old.steps[0]
    );
}
