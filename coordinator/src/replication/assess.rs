//! From what the stores answered to a verdict per store and per service.
//! Pure: the worker gathers the answers, this decides. A store that did not
//! answer is "broken" with its last known position, never "no lag"; a
//! figure past the RPO is "at risk".

use super::kinds::Finding;
use crate::model::topology::{RegionConfig, RegionRole, ServiceConfig, StoreConfig, StoreKind};
use seawall_proto::v1::{RepositoryReplication, ServiceReplication, StoreReplication, StoreReport};

/// All is well.
pub const OK: &str = "ok";
/// A figure passed the RPO.
pub const AT_RISK: &str = "at risk";
/// A store cannot play its part (unreachable, link down, wrong role).
pub const BROKEN: &str = "broken";
/// Never checked.
pub const UNKNOWN: &str = "unknown";

/// How bad a verdict is, for ordering and for the gauge (0 ok, 1 at risk,
/// 2 broken, 3 unknown).
pub fn severity(verdict: &str) -> u8 {
    match verdict {
        OK => 0,
        AT_RISK => 1,
        BROKEN => 2,
        _ => 3,
    }
}

/// What one store said this round.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its replication state (and the canary written, on a primary), or
    /// why it could not be read.
    pub answer: Result<StoreReport, String>,
    /// When the answer came.
    pub at_ms: i64,
    /// The canary read (standbys of a service with canaries), and when.
    pub canary: Option<(Result<StoreReport, String>, i64)>,
}

/// How far a store trails, in milliseconds: the worse of its replay lag
/// and its newest canary's age (none when neither is known).
pub fn behind_ms(s: &StoreReplication) -> Option<i64> {
    [
        s.lag_secs.map(|x| (x * 1000.0) as i64),
        s.canary_exposure_ms,
    ]
    .into_iter()
    .flatten()
    .max()
}

fn report_of(r: &Result<StoreReport, String>) -> Result<&StoreReport, String> {
    match r {
        Ok(rep) if rep.error.is_empty() => Ok(rep),
        Ok(rep) => Err(rep.error.clone()),
        Err(e) => Err(e.clone()),
    }
}

fn secs(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(
        ms.max(0) as u64 / 1000 * 1000,
    ))
    .to_string()
}

/// The service's replication from this round's answers (`seen`, one per
/// store in `service.stores` order) and the previous report.
pub fn assess(
    regions: &[RegionConfig],
    service: &ServiceConfig,
    seen: &[Seen],
    previous: Option<&ServiceReplication>,
    canary_written: Option<(u64, i64)>,
    repositories: Vec<RepositoryReplication>,
    now_ms: i64,
) -> ServiceReplication {
    let rpo_ms = service.rpo.as_millis() as i64;
    let before = |st: &StoreConfig| -> Option<&StoreReplication> {
        previous?.stores.iter().find(|p| {
            p.region == st.region
                && p.agent == st.agent
                && p.source == st.source
                && p.kind == st.kind.name()
        })
    };
    // The primaries' positions, which the standbys are measured against.
    let primary_of = |kind: StoreKind| -> Option<&StoreReport> {
        service.stores.iter().zip(seen).find_map(|(st, s)| {
            (st.kind == kind
                && crate::model::topology::store_role(regions, st) == Some(RegionRole::Primary))
            .then(|| report_of(&s.answer).ok())
            .flatten()
        })
    };
    // A managed primary's control-plane view, also from an answer whose
    // SQL side failed.
    let primary_managed = |kind: StoreKind| -> Option<&seawall_proto::v1::ManagedStore> {
        service.stores.iter().zip(seen).find_map(|(st, s)| {
            (st.kind == kind
                && crate::model::topology::store_role(regions, st) == Some(RegionRole::Primary))
            .then(|| s.answer.as_ref().ok()?.managed.as_ref())
            .flatten()
        })
    };
    let mut stores = Vec::new();
    for (st, s) in service.stores.iter().zip(seen) {
        let role = crate::model::topology::store_role(regions, st);
        let mut out = StoreReplication {
            region: st.region.clone(),
            role: if role == Some(RegionRole::Primary) {
                "primary"
            } else {
                "standby"
            }
            .into(),
            kind: st.kind.name().into(),
            agent: st.agent.clone(),
            source: st.source.clone(),
            verdict: OK.into(),
            ..Default::default()
        };
        let prev = before(st);
        let mut verdict = OK;
        let mut worse = |v: &'static str, why: String, reasons: &mut Vec<String>| {
            if severity(v) > severity(verdict) {
                verdict = v;
            }
            reasons.push(why);
        };
        let mut reasons = Vec::new();
        match report_of(&s.answer) {
            Err(e) => {
                // Where it stood last is kept: "broken at 0/3000060".
                if let Some(p) = prev {
                    out.position = p.position.clone();
                    out.answered_unix_ms = p.answered_unix_ms;
                }
                worse(BROKEN, format!("unreachable: {e}"), &mut reasons);
            }
            Ok(rep) => {
                out.answered_unix_ms = s.at_ms;
                out.took_ms = rep.took_ms;
                let primary_side = role == Some(RegionRole::Primary);
                let rules = super::kinds::rules(st.kind);
                let judged = if primary_side {
                    let standbys_expected = service.stores.iter().any(|o| {
                        o.kind == st.kind
                            && crate::model::topology::store_role(regions, o)
                                == Some(RegionRole::Standby)
                    });
                    rules.judge_primary(rep, standbys_expected)
                } else {
                    rules.judge_standby(rep, primary_of(st.kind))
                };
                out.position = judged.position;
                out.lag_bytes = judged.lag_bytes;
                out.lag_secs = judged.lag_secs;
                for finding in judged.findings {
                    match finding {
                        Finding::Broken(why) => worse(BROKEN, why, &mut reasons),
                        Finding::Note(why) => reasons.push(why),
                    }
                }
                rules.keep_detail(rep, &mut out);
                if primary_side && service.canary {
                    if !rep.canary_error.is_empty() {
                        worse(
                            AT_RISK,
                            format!("canary not written: {}", rep.canary_error),
                            &mut reasons,
                        );
                    } else if let Some(m) = &rep.canary {
                        out.canary_seq = m.seq;
                    }
                }
            }
        }
        if let Some(m) = s.answer.as_ref().ok().and_then(|r| r.managed.as_ref()) {
            let primary_side = role == Some(RegionRole::Primary);
            let judged =
                super::kinds::managed::judge(m, primary_side, primary_managed(st.kind), now_ms);
            for finding in judged {
                match finding {
                    Finding::Broken(why) => worse(BROKEN, why, &mut reasons),
                    Finding::Note(why) => reasons.push(why),
                }
            }
            // Its SQL side did not answer: the metric still bounds the lag.
            if !primary_side && out.lag_secs.is_none() && report_of(&s.answer).is_err() {
                if let Some((bound, words)) = super::kinds::managed::lag_bound(m, now_ms) {
                    out.lag_secs = Some(bound);
                    reasons.push(words);
                }
            }
            out.managed = Some(m.clone());
        }
        if let Some((read, read_at)) = &s.canary {
            match report_of(read) {
                Err(e) => reasons.push(format!("canary not read: {e}")),
                Ok(rep) if !rep.canary_error.is_empty() => {
                    reasons.push(format!("canary not read: {}", rep.canary_error))
                }
                Ok(rep) => match &rep.canary {
                    None => {
                        // Nothing visible yet: the exposure is at least the
                        // time since canaries began.
                        reasons.push("no canary has arrived yet".into());
                    }
                    Some(m) => {
                        out.canary_seq = m.seq;
                        out.canary_exposure_ms = Some((read_at - m.written_unix_ms).max(0));
                        out.canary_delay_ms = match prev {
                            Some(p) if p.canary_seq == m.seq => p.canary_delay_ms,
                            _ => Some((read_at - m.written_unix_ms).max(0)),
                        };
                    }
                },
            }
        }
        if role != Some(RegionRole::Primary) && behind_ms(&out).is_none() {
            // Not measured this round (no answer in time, the primary
            // gone): what it lacked at the last measure, plus every write
            // since, is still a bound; "unknown" would hold up a failover
            // that figure allows.
            let last = prev.and_then(|p| behind_ms(p).zip(previous.map(|r| r.checked_unix_ms)));
            if let Some((ms, at)) = last {
                let aged = ms + (now_ms - at).max(0);
                out.canary_exposure_ms = Some(aged);
                reasons.push(format!(
                    "not measured this round: {} behind when last measured, {} ago, so at most {}",
                    secs(ms),
                    secs((now_ms - at).max(0)),
                    secs(aged)
                ));
            }
        }
        if let Some(ms) = behind_ms(&out) {
            if ms > rpo_ms {
                worse(
                    AT_RISK,
                    format!("{} behind, over the RPO of {}", secs(ms), secs(rpo_ms)),
                    &mut reasons,
                );
            }
        }
        out.verdict = verdict.into();
        out.reasons = reasons;
        stores.push(out);
    }
    let verdict = stores
        .iter()
        .map(|s| s.verdict.as_str())
        .chain(repositories.iter().map(|r| r.verdict.as_str()))
        .max_by_key(|v| severity(v))
        .unwrap_or(OK)
        .to_string();
    let exposure_ms = stores
        .iter()
        .filter(|s| s.role == "standby")
        .filter_map(behind_ms)
        .max();
    ServiceReplication {
        service: service.name.clone(),
        verdict,
        rpo_ms,
        rto_ms: service.rto.as_millis() as i64,
        exposure_ms,
        checked_unix_ms: now_ms,
        stores,
        canary_seq: canary_written.map(|c| c.0).unwrap_or(0),
        canary_written_unix_ms: canary_written.map(|c| c.1).unwrap_or(0),
        repositories,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topology::{ServiceConfig, StoreConfig};
    use seawall_proto::v1::{
        store_report::Replication, CanaryMarker, PostgresReplication, RedisReplication,
    };
    use std::time::Duration;

    fn topology() -> (Vec<RegionConfig>, ServiceConfig) {
        let regions = vec![
            RegionConfig {
                name: "west".into(),
                role: RegionRole::Primary,
            },
            RegionConfig {
                name: "east".into(),
                role: RegionRole::Standby,
            },
        ];
        let store = |region: &str, kind| StoreConfig {
            region: region.into(),
            kind,
            agent: "a".into(),
            source: "s".into(),
            address: None,
        };
        let service = ServiceConfig {
            name: "shop".into(),
            rpo: Duration::from_secs(10),
            rto: Duration::from_secs(60),
            canary: true,
            stores: vec![
                store("west", StoreKind::Postgres),
                store("east", StoreKind::Postgres),
                store("west", StoreKind::Redis),
                store("east", StoreKind::Redis),
            ],
            repositories: Vec::new(),
            backups: Vec::new(),
            max_lag_bytes: 16 << 20,
            max_lag: None,
            failover_unfenced: false,
            catch_up_timeout: std::time::Duration::from_secs(30),
            rebuild_timeout: std::time::Duration::from_secs(3600),
            fence: crate::model::topology::FenceMode::Standby,
            check_file: None,
            dns: None,
            auto_failover: None,
        };
        (regions, service)
    }

    fn pg(primary: bool, lsn_text: &str) -> StoreReport {
        StoreReport {
            replication: Some(Replication::Postgres(PostgresReplication {
                in_recovery: !primary,
                current_lsn: if primary {
                    lsn_text.into()
                } else {
                    String::new()
                },
                replay_lsn: if primary {
                    String::new()
                } else {
                    lsn_text.into()
                },
                receiver: if primary {
                    String::new()
                } else {
                    "streaming".into()
                },
                last_replay_age_secs: Some(42.0),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn redis(master: bool, offset: i64, link: &str) -> StoreReport {
        StoreReport {
            replication: Some(Replication::Redis(RedisReplication {
                master,
                offset,
                link: link.into(),
                master_address: "10.0.0.1:6379".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn seen(answer: Result<StoreReport, String>) -> Seen {
        Seen {
            answer,
            at_ms: 1_000,
            canary: None,
        }
    }

    /// Both kinds' primaries and standbys answering, the standbys caught up.
    fn caught_up() -> Vec<Seen> {
        vec![
            seen(Ok(pg(true, "0/2000000"))),
            seen(Ok(pg(false, "0/2000000"))),
            seen(Ok(redis(true, 10, ""))),
            seen(Ok(redis(false, 10, "up"))),
        ]
    }

    #[test]
    fn lag_is_measured_against_the_primary_and_judged_against_the_rpo() {
        let (regions, service) = topology();
        let mut standby_pg = seen(Ok(pg(false, "0/1000000")));
        let canary = |written| StoreReport {
            canary: Some(CanaryMarker {
                service: "shop".into(),
                seq: 7,
                written_unix_ms: written,
            }),
            ..Default::default()
        };
        standby_pg.canary = Some((Ok(canary(900)), 1_000));
        let all = vec![
            seen(Ok(pg(true, "0/1000100"))),
            standby_pg,
            seen(Ok(redis(true, 5000, ""))),
            seen(Ok(redis(false, 4000, "up"))),
        ];
        let r = assess(
            &regions,
            &service,
            &all,
            None,
            Some((7, 900)),
            Vec::new(),
            1_000,
        );
        assert_eq!(r.verdict, OK, "{r:?}");
        assert_eq!(r.stores[1].lag_bytes, Some(0x100));
        // Bytes behind but no replay_lag from the primary: seconds unknown,
        // not the standby's time since its last replayed commit.
        assert_eq!(r.stores[1].lag_secs, None);
        assert_eq!(r.stores[1].canary_exposure_ms, Some(100));
        assert_eq!(r.stores[3].lag_bytes, Some(1000));

        // The canary 20 s old on a 10 s RPO: at risk, saying by how much.
        let mut late = all.clone();
        late[1].canary = Some((Ok(canary(900)), 20_900));
        let r = assess(
            &regions,
            &service,
            &late,
            None,
            Some((9, 20_000)),
            Vec::new(),
            20_900,
        );
        assert_eq!(r.verdict, AT_RISK);
        assert!(
            r.stores[1]
                .reasons
                .iter()
                .any(|x| x.contains("over the RPO of 10s")),
            "{:?}",
            r.stores[1].reasons
        );
        assert_eq!(r.exposure_ms, Some(20_000));

        // With the primary's replay_lag for this standby, seconds are known.
        let mut timed = all.clone();
        if let Ok(p) = &mut timed[0].answer {
            if let Some(Replication::Postgres(pg)) = &mut p.replication {
                pg.standbys.push(seawall_proto::v1::PostgresStandby {
                    replay_lsn: "0/1000000".into(),
                    replay_lag_secs: Some(1.5),
                    ..Default::default()
                });
            }
        }
        let r = assess(
            &regions,
            &service,
            &timed,
            None,
            Some((7, 900)),
            Vec::new(),
            1_000,
        );
        assert_eq!(r.stores[1].lag_secs, Some(1.5));
    }

    #[test]
    fn an_unreachable_store_is_broken_with_its_last_position_never_zero_lag() {
        let (regions, service) = topology();
        let first = caught_up();
        let before = assess(&regions, &service, &first, None, None, Vec::new(), 1_000);
        let mut now = first.clone();
        now[3] = seen(Err("agent east/a is not connected: unreachable".into()));
        let mut stopped = pg(false, "0/2000000");
        if let Some(Replication::Postgres(p)) = &mut stopped.replication {
            p.receiver = String::new();
        }
        now[1] = seen(Ok(stopped));
        let r = assess(
            &regions,
            &service,
            &now,
            Some(&before),
            None,
            Vec::new(),
            2_000,
        );
        assert_eq!(r.verdict, BROKEN);
        assert_eq!(r.stores[3].lag_bytes, None);
        assert_eq!(r.stores[3].position, "10");
        assert!(r.stores[3].reasons[0].starts_with("unreachable"));
        assert!(r.stores[1]
            .reasons
            .iter()
            .any(|x| x.contains("not streaming")));

        let mut down = first.clone();
        down[3] = seen(Ok(redis(false, 8, "down")));
        let r = assess(&regions, &service, &down, None, None, Vec::new(), 2_000);
        assert_eq!(r.stores[3].verdict, BROKEN);
        assert!(
            r.stores[3].reasons[0].contains("is down (last offset 8)"),
            "{:?}",
            r.stores[3].reasons
        );

        let mut promoted = first;
        promoted[1] = seen(Ok(pg(true, "0/3000000")));
        let r = assess(&regions, &service, &promoted, None, None, Vec::new(), 2_000);
        assert!(r.stores[1].reasons[0].contains("not in recovery"));
    }

    #[test]
    fn a_standby_not_measured_this_round_keeps_its_last_figure_aged_never_unknown() {
        let (regions, service) = topology();
        let mut first = caught_up();
        let canary = StoreReport {
            canary: Some(CanaryMarker {
                service: "shop".into(),
                seq: 7,
                written_unix_ms: 500,
            }),
            ..Default::default()
        };
        first[1].canary = Some((Ok(canary), 1_000));
        let before = assess(&regions, &service, &first, None, None, Vec::new(), 1_000);
        assert_eq!(behind_ms(&before.stores[1]), Some(500));
        // The west is gone and the east's answers come too late.
        let late = |why: &str| seen(Err(why.into()));
        let now = vec![
            late("agent west/a did not answer"),
            late("agent east/a: deadline"),
            late("agent west/a did not answer"),
            late("agent east/a: deadline"),
        ];
        let r = assess(
            &regions,
            &service,
            &now,
            Some(&before),
            None,
            Vec::new(),
            4_000,
        );
        assert_eq!(r.stores[1].canary_exposure_ms, Some(3_500), "{r:?}");
        assert!(
            r.stores[1]
                .reasons
                .iter()
                .any(|x| x.contains("not measured this round")),
            "{:?}",
            r.stores[1].reasons
        );
        // Round after round it only grows, and the service's exposure with it.
        let again = assess(&regions, &service, &now, Some(&r), None, Vec::new(), 5_000);
        assert_eq!(again.stores[1].canary_exposure_ms, Some(4_500));
        assert!(again.exposure_ms >= Some(4_500));
        // A primary gets no such figure.
        assert_eq!(again.stores[0].canary_exposure_ms, None);
        // With nothing ever measured, it stays unknown.
        let never = assess(&regions, &service, &now, None, None, Vec::new(), 5_000);
        assert_eq!(behind_ms(&never.stores[1]), None);
    }
}
