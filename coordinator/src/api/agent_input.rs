//! Bounds on what an agent sends. An agent is trusted with its own region's
//! data, not with the coordinator's memory or store: every string and list
//! it supplies is cut here, as the message arrives, so no report, journal
//! entry, audit line or log can be made large by one agent (before, one
//! agent's 1 MiB probe answers made every service's replication report
//! too large for etcd).

use seawall_proto::v1::{
    agent_message, operation_result, store_position, store_report, ActionReply, AgentMessage,
    CanaryMarker, Divergence, DrillPhase, Hello, OperationResult, PostgresReplication, ProbeReply,
    RedisReplication, RepositoryReport, StorePosition, StoreReport,
};

/// Longest name an agent may give (a source, a job, a mirror, an object).
pub const MAX_NAME: usize = 256;
/// Longest position, state or kind word (an LSN, a link state).
pub const MAX_WORD: usize = 64;
/// Longest error or detail message kept.
pub const MAX_ERROR: usize = 4096;
/// Longest single warning, evidence value or gap problem kept.
pub const MAX_WARNING: usize = 1024;
/// Longest refusal reason kept.
pub const MAX_REASON: usize = 512;
/// Most warnings, problems or gaps kept of one answer (a count says how
/// many there were).
pub const MAX_FINDINGS: usize = 20;
/// Most standbys or replicas one primary may list.
pub const MAX_PEERS: usize = 32;
/// Most mirrors one repository may compare with.
pub const MAX_MIRRORS: usize = 8;
/// Most sources an agent may serve (a hello listing more is refused).
pub const MAX_SOURCES: usize = 1000;
/// Most sources a mirror's gaps may be said to hurt.
pub const MAX_ITEMS: usize = 64;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        *text = capped(text, max);
    }
}

fn cut_all(texts: &mut Vec<String>, count: usize, max: usize) {
    texts.truncate(count);
    for t in texts {
        cut(t, max);
    }
}

/// `msg` with every agent-supplied string and list within its bound.
pub fn bounded(mut msg: AgentMessage) -> AgentMessage {
    match &mut msg.body {
        // Checked whole by `oversized_hello` and refused, not cut.
        Some(agent_message::Body::Hello(_) | agent_message::Body::Heartbeat(_)) | None => {}
        Some(agent_message::Body::Progress(p)) => cut(&mut p.job_id, MAX_NAME),
        Some(agent_message::Body::Refused(r)) => {
            cut(&mut r.job_id, MAX_NAME);
            cut(&mut r.reason, MAX_REASON);
        }
        Some(agent_message::Body::Result(r)) => result(r),
        Some(agent_message::Body::ProbeReply(r)) => probe_reply(r),
        Some(agent_message::Body::ActionReply(r)) => action_reply(r),
    }
    msg
}

/// Why a hello is refused for its size: a hello is not cut, since a cut
/// list of running jobs or fenced sources would be a false one.
pub fn oversized_hello(h: &Hello) -> Option<&'static str> {
    if h.sources.len() > MAX_SOURCES
        || h.running_jobs.len() > 10_000
        || h.self_fenced.len() > MAX_SOURCES
        || h.check_files.len() > MAX_SOURCES
    {
        return Some("hello lists too many sources, jobs or fenced sources");
    }
    let too_long = h.version.len() > 128
        || h.hostname.len() > 255
        || h.sources
            .iter()
            .any(|s| s.name.len() > MAX_NAME || s.kind.len() > MAX_WORD)
        || h.running_jobs
            .iter()
            .chain(&h.self_fenced)
            .any(|j| j.len() > MAX_NAME)
        || h.check_files.iter().any(|f| f.len() > MAX_ERROR);
    too_long.then_some("hello carries an over-long version, hostname, source name, job id or path")
}

fn result(r: &mut OperationResult) {
    cut(&mut r.job_id, MAX_NAME);
    cut(&mut r.error, MAX_ERROR);
    cut_all(&mut r.warnings, MAX_FINDINGS, MAX_WARNING);
    match &mut r.output {
        None | Some(operation_result::Output::Retention(_)) => {}
        Some(operation_result::Output::Backup(b)) => {
            cut(&mut b.snapshot_id, MAX_NAME);
            cut(&mut b.backup_type, MAX_WORD);
        }
        Some(operation_result::Output::Verify(v)) => {
            cut_all(&mut v.problems, MAX_FINDINGS, MAX_WARNING)
        }
        Some(operation_result::Output::Mirror(m)) => {
            cut_all(&mut m.replaced, MAX_FINDINGS, MAX_NAME)
        }
        Some(operation_result::Output::SnapshotCopy(c)) => {
            cut(&mut c.snapshot, MAX_NAME);
            cut(&mut c.copy, MAX_NAME);
            cut(&mut c.region, MAX_WORD);
            cut_all(&mut c.deleted, MAX_FINDINGS, MAX_NAME);
        }
        Some(operation_result::Output::RestoreDrill(d)) => {
            cut(&mut d.source, MAX_NAME);
            cut(&mut d.source_kind, MAX_WORD);
            cut(&mut d.snapshot_id, MAX_NAME);
            // A drill has a handful of phases; more is not a drill's report.
            d.phases.truncate(MAX_FINDINGS);
            d.phases.iter_mut().for_each(phase);
            cut_all(&mut d.leftovers, MAX_FINDINGS, MAX_WARNING);
        }
    }
}

fn phase(p: &mut DrillPhase) {
    cut(&mut p.name, MAX_WORD);
    cut(&mut p.state, MAX_WORD);
    cut(&mut p.detail, MAX_ERROR);
    if p.evidence.len() > MAX_FINDINGS {
        // Kept in key order, so the same report keeps the same evidence.
        let mut keys: Vec<String> = p.evidence.keys().cloned().collect();
        keys.sort();
        for k in keys.into_iter().skip(MAX_FINDINGS) {
            p.evidence.remove(&k);
        }
    }
    p.evidence = std::mem::take(&mut p.evidence)
        .into_iter()
        .map(|(k, v)| (capped(&k, MAX_WORD), capped(&v, MAX_WARNING)))
        .collect();
}

fn probe_reply(r: &mut ProbeReply) {
    // One report per probe, one probe per source: more than the sources is
    // refused by the asker all the same (the counts must match).
    r.reports.truncate(MAX_SOURCES + 1);
    r.reports.iter_mut().for_each(store);
    if let Some(rep) = &mut r.repository {
        repository(rep);
    }
}

fn store(s: &mut StoreReport) {
    cut(&mut s.source, MAX_NAME);
    cut(&mut s.error, MAX_ERROR);
    cut(&mut s.canary_error, MAX_ERROR);
    if let Some(c) = &mut s.canary {
        canary(c);
    }
    match &mut s.replication {
        None => {}
        Some(store_report::Replication::Postgres(p)) => postgres(p),
        Some(store_report::Replication::Redis(r)) => redis(r),
    }
}

fn canary(c: &mut CanaryMarker) {
    cut(&mut c.service, MAX_NAME);
}

fn postgres(p: &mut PostgresReplication) {
    for s in [&mut p.current_lsn, &mut p.receive_lsn, &mut p.replay_lsn] {
        cut(s, MAX_WORD);
    }
    cut(&mut p.receiver, MAX_WARNING);
    p.standbys.truncate(MAX_PEERS);
    for s in &mut p.standbys {
        cut(&mut s.name, MAX_NAME);
        cut(&mut s.client_addr, MAX_NAME);
        for w in [
            &mut s.state,
            &mut s.sent_lsn,
            &mut s.flush_lsn,
            &mut s.replay_lsn,
        ] {
            cut(w, MAX_WORD);
        }
    }
}

fn redis(r: &mut RedisReplication) {
    cut(&mut r.master_address, MAX_NAME);
    cut(&mut r.link, MAX_WORD);
    r.replicas.truncate(MAX_PEERS);
    for s in &mut r.replicas {
        cut(&mut s.address, MAX_NAME);
        cut(&mut s.state, MAX_WORD);
    }
}

fn repository(r: &mut RepositoryReport) {
    cut(&mut r.error, MAX_ERROR);
    cut(&mut r.newest_wal, MAX_WORD);
    r.heads.truncate(MAX_SOURCES);
    for h in &mut r.heads {
        cut(&mut h.source, MAX_NAME);
        cut(&mut h.snapshot_id, MAX_NAME);
    }
    r.mirrors.truncate(MAX_MIRRORS);
    for m in &mut r.mirrors {
        cut(&mut m.mirror, MAX_NAME);
        cut(&mut m.error, MAX_ERROR);
        m.gaps.truncate(MAX_FINDINGS);
        for g in &mut m.gaps {
            cut(&mut g.object, MAX_NAME);
            cut(&mut g.problem, MAX_REASON);
        }
        cut_all(&mut m.sources_hurt, MAX_ITEMS, MAX_NAME);
    }
}

fn action_reply(r: &mut ActionReply) {
    cut(&mut r.error, MAX_ERROR);
    cut(&mut r.detail, MAX_ERROR);
    if let Some(p) = &mut r.position {
        position(p);
    }
    if let Some(d) = &mut r.divergence {
        divergence(d);
    }
}

fn position(p: &mut StorePosition) {
    if let Some(store_position::Kind::Postgres(pg)) = &mut p.kind {
        cut(&mut pg.lsn, MAX_WORD);
    }
}

fn divergence(d: &mut Divergence) {
    cut(&mut d.parted_at, MAX_WORD);
    cut(&mut d.end, MAX_WORD);
    cut(&mut d.error, MAX_ERROR);
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_proto::v1::{MirrorComparison, PostgresStandby, RepositoryGap, RestoreDrillOutput};

    fn size(msg: &AgentMessage) -> usize {
        prost::Message::encoded_len(msg)
    }

    #[test]
    fn a_probe_answer_of_a_mebibyte_is_cut_to_a_few_kilobytes_per_store() {
        let big = "x".repeat(300_000);
        let long = "y".repeat(300);
        let standby = PostgresStandby {
            name: long.clone(),
            client_addr: "10.0.0.1".into(),
            state: long.clone(),
            ..Default::default()
        };
        let report = StoreReport {
            source: "db".into(),
            error: big.clone(),
            replication: Some(store_report::Replication::Postgres(PostgresReplication {
                standbys: vec![standby; 2000],
                receiver: big.clone(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let gap = RepositoryGap {
            object: long.clone(),
            problem: "z".repeat(2000),
        };
        let msg = AgentMessage {
            body: Some(agent_message::Body::ProbeReply(ProbeReply {
                probe_id: 7,
                reports: vec![report],
                repository: Some(RepositoryReport {
                    mirrors: vec![
                        MirrorComparison {
                            gaps: vec![gap; 500],
                            sources_hurt: vec![long.clone(); 300],
                            ..Default::default()
                        };
                        30
                    ],
                    ..Default::default()
                }),
            })),
        };
        let before = size(&msg);
        let msg = bounded(msg);
        let after = size(&msg);
        assert!(before > 30 << 20, "{before}");
        assert!(after < 400 << 10, "{before} -> {after}");
        let Some(agent_message::Body::ProbeReply(r)) = &msg.body else {
            panic!("not a probe reply")
        };
        assert_eq!(r.probe_id, 7);
        let rep = &r.reports[0];
        assert!(rep.error.ends_with("bytes cut)"), "{}", &rep.error[4000..]);
        assert_eq!(rep.source, "db");
        let Some(store_report::Replication::Postgres(pg)) = &rep.replication else {
            panic!("replication lost")
        };
        assert_eq!(pg.standbys.len(), MAX_PEERS);
        assert_eq!(pg.standbys[0].client_addr, "10.0.0.1");
        let mirrors = &r.repository.as_ref().unwrap().mirrors;
        assert_eq!(mirrors.len(), MAX_MIRRORS);
        assert_eq!(mirrors[0].gaps.len(), MAX_FINDINGS);
    }

    #[test]
    fn a_drill_report_keeps_its_phases_and_loses_only_the_excess() {
        let big = "é".repeat(5_000);
        let phase = DrillPhase {
            name: "restore".into(),
            state: "done".into(),
            detail: big.clone(),
            evidence: (0..100)
                .map(|i| (format!("k{i:03}"), big.clone()))
                .collect(),
            ..Default::default()
        };
        let msg = bounded(AgentMessage {
            body: Some(agent_message::Body::Result(OperationResult {
                job_id: "j1".into(),
                warnings: vec![big.clone(); 1000],
                output: Some(operation_result::Output::RestoreDrill(RestoreDrillOutput {
                    phases: vec![phase; 100],
                    leftovers: vec![big.clone(); 1000],
                    ..Default::default()
                })),
                ..Default::default()
            })),
        });
        assert!(size(&msg) < 2 << 20, "{}", size(&msg));
        let Some(agent_message::Body::Result(r)) = &msg.body else {
            panic!("not a result")
        };
        assert_eq!(r.job_id, "j1");
        assert_eq!(r.warnings.len(), MAX_FINDINGS);
        let Some(operation_result::Output::RestoreDrill(d)) = &r.output else {
            panic!("output lost")
        };
        assert_eq!(d.phases.len(), MAX_FINDINGS);
        assert_eq!(d.phases[0].name, "restore");
        assert_eq!(d.phases[0].evidence.len(), MAX_FINDINGS);
        assert!(d.phases[0].evidence.contains_key("k000"));
        assert!(d.phases[0].detail.len() <= MAX_ERROR + 32);
    }

    #[test]
    fn an_action_answer_keeps_its_position_and_a_short_detail() {
        let msg = bounded(AgentMessage {
            body: Some(agent_message::Body::ActionReply(ActionReply {
                detail: "d".repeat(1 << 20),
                position: Some(StorePosition {
                    kind: Some(store_position::Kind::Postgres(
                        seawall_proto::v1::PostgresPosition {
                            lsn: "0/3000060".into(),
                            timeline: 2,
                        },
                    )),
                }),
                divergence: Some(Divergence {
                    error: "e".repeat(1 << 20),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
        assert!(size(&msg) < 16 << 10, "{}", size(&msg));
        let Some(agent_message::Body::ActionReply(r)) = &msg.body else {
            panic!("not an action reply")
        };
        assert!(matches!(
            &r.position.as_ref().unwrap().kind,
            Some(store_position::Kind::Postgres(p)) if p.lsn == "0/3000060"
        ));
    }

    #[test]
    fn capped_text_ends_on_a_character_boundary_and_says_what_it_cut() {
        assert_eq!(capped("short", 10), "short");
        let c = capped(&"é".repeat(10), 5);
        assert!(c.starts_with("éé…"), "{c}");
        assert!(c.ends_with("(16 bytes cut)"), "{c}");
    }
}
