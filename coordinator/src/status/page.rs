//! The status page's content: what the store and (on the leader) the live
//! sessions say now, gathered into one view, and that view as one HTML
//! page: each region and its agents, each service with its stores'
//! replication and its backups' age against the RPO, the failover running,
//! and the last drill of each scenario with its verdict and figures. Plain
//! HTML with inline styles and SVG bars; it reloads itself.

use crate::drills::report::{escape, span, when, STYLE};
use crate::jobs::Coordinator;
use crate::model::clock::now_ms;
use crate::model::failover::{FailoverRecord, StepState};
use crate::model::records::{AgentRecord, BackupRecord};
use crate::model::scenarios::ms;
use seawall_proto::v1::{Drill, ServiceReplication};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One agent as the page shows it.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// Its name.
    pub name: String,
    /// Its sources.
    pub sources: Vec<String>,
    /// Its version.
    pub version: String,
    /// Connected now (known on the leader), else as last registered.
    pub connected: Option<bool>,
    /// When it connected.
    pub since_ms: i64,
}

/// A backup source's newest backup against the service's RPO.
#[derive(Debug, Clone)]
pub struct BackupView {
    /// Region of the repository.
    pub region: String,
    /// The source.
    pub source: String,
    /// When its newest backup finished (None: never).
    pub newest_ms: Option<i64>,
}

/// One service: its objectives, replication as last checked, backups.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// RPO (ms).
    pub rpo_ms: i64,
    /// RTO (ms).
    pub rto_ms: i64,
    /// The replication checks' last report.
    pub replication: Option<ServiceReplication>,
    /// Its backups' newest, per source and region.
    pub backups: Vec<BackupView>,
}

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This replica.
    pub replica: String,
    /// Whether it leads.
    pub leading: bool,
    /// The leader's id, if one is known.
    pub leader: String,
    /// When the view was gathered.
    pub at_ms: i64,
    /// Region name, role, agents.
    pub regions: Vec<(String, String, Vec<AgentView>)>,
    /// Each service.
    pub services: Vec<ServiceView>,
    /// Failovers not finished.
    pub failovers: Vec<FailoverRecord>,
    /// The newest drill of each service's scenario (or kind, by hand).
    pub drills: Vec<Drill>,
}

/// Reads what the page shows.
pub async fn gather(coord: &Coordinator) -> Snapshot {
    let cfg = &coord.config;
    let leading = coord.lead().is_some();
    let leader = coord
        .store
        .leader()
        .await
        .ok()
        .flatten()
        .map(|l| l.id)
        .unwrap_or_default();
    let records: Vec<AgentRecord> = coord
        .store
        .list("agents/")
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect();
    let sessions = coord.registry.all();
    let mut regions: Vec<(String, String, Vec<AgentView>)> = cfg
        .regions
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                format!("{:?}", r.role).to_lowercase(),
                Vec::new(),
            )
        })
        .collect();
    for a in &records {
        let view = AgentView {
            name: a.agent_id.clone(),
            sources: a.sources.clone(),
            version: a.version.clone(),
            connected: leading.then(|| {
                sessions
                    .iter()
                    .any(|s| s.agent_id == a.agent_id && s.region == a.region)
            }),
            since_ms: a.connected_ms,
        };
        match regions.iter_mut().find(|(name, _, _)| *name == a.region) {
            Some((_, _, agents)) => agents.push(view),
            None => regions.push((a.region.clone(), "not in the topology".into(), vec![view])),
        }
    }
    let replication = crate::replication::stored(coord).await.unwrap_or_default();
    let backups: Vec<BackupRecord> = coord
        .store
        .list("backups/")
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect();
    let services = cfg
        .services
        .iter()
        .map(|s| {
            let mut views = Vec::new();
            let regions_with: Vec<String> = if s.repositories.is_empty() {
                cfg.regions
                    .iter()
                    .filter(|r| r.role == crate::model::topology::RegionRole::Primary)
                    .map(|r| r.name.clone())
                    .collect()
            } else {
                s.repositories.iter().map(|r| r.region.clone()).collect()
            };
            for source in s.backup_sources(&cfg.regions) {
                for region in &regions_with {
                    let newest = backups
                        .iter()
                        .filter(|b| b.source == source && &b.region == region)
                        .map(|b| b.finished_ms)
                        .max();
                    views.push(BackupView {
                        region: region.clone(),
                        source: source.clone(),
                        newest_ms: newest,
                    });
                }
            }
            ServiceView {
                name: s.name.clone(),
                rpo_ms: ms(s.rpo),
                rto_ms: ms(s.rto),
                replication: replication.iter().find(|r| r.service == s.name).cloned(),
                backups: views,
            }
        })
        .collect();
    let failovers = crate::failover::stored::all(coord)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !f.is_final())
        .collect();
    let mut newest: BTreeMap<(String, String), Drill> = BTreeMap::new();
    for d in crate::drills::journal::all(coord).await.unwrap_or_default() {
        let label = if d.scenario.is_empty() {
            format!("{} drill", d.kind)
        } else {
            d.scenario.clone()
        };
        // Newest first: the first of each is the one shown.
        newest.entry((d.service.clone(), label)).or_insert(d);
    }
    Snapshot {
        replica: coord.me.id.clone(),
        leading,
        leader,
        at_ms: now_ms(),
        regions,
        services,
        failovers,
        drills: newest.into_values().collect(),
    }
}

const PAGE_STYLE: &str = ".ok{color:#1a7f37;font-weight:700}.risk{color:#9a6700;font-weight:700}.broken{color:#cf222e;font-weight:700}\
.pill{display:inline-block;padding:0 .5em;border-radius:.3em;color:#fff;font-size:.85em;font-weight:700}\
.pill.met,.pill.ok{background:#1a7f37}.pill.missed,.pill.risk{background:#bf8700}.pill.failed,.pill.broken{background:#cf222e}.pill.running,.pill.unknown{background:#57606a}";

/// The class a verdict is shown with.
fn class(verdict: &str) -> &'static str {
    match verdict {
        "ok" | "met" => "ok",
        "at risk" | "missed" => "risk",
        "broken" | "failed" => "broken",
        _ => "unknown",
    }
}

/// A bar of `age` against `limit`: green within, amber past it.
fn age_bar(age_ms: i64, limit_ms: i64) -> String {
    let frac = if limit_ms > 0 {
        (age_ms as f64 / limit_ms as f64).min(2.0)
    } else {
        2.0
    };
    let width = (frac * 100.0).round();
    let colour = if age_ms <= limit_ms {
        "#1a7f37"
    } else {
        "#bf8700"
    };
    format!(
        "<svg width=\"200\" height=\"12\" role=\"img\" aria-label=\"age against the RPO\"><rect width=\"200\" height=\"12\" fill=\"#eaeef2\"/><rect width=\"{width}\" height=\"12\" fill=\"{colour}\"/><line x1=\"100\" x2=\"100\" y1=\"0\" y2=\"12\" stroke=\"#1b1f24\"/></svg>"
    )
}

/// The page for `s`, reloading every `refresh_secs`.
pub fn html(s: &Snapshot, refresh_secs: u64) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{refresh_secs}\"><title>Seawall status</title><style>{STYLE}{PAGE_STYLE}</style></head><body><h1>Seawall status</h1><p class=\"meta\">Replica <code>{}</code>{} &middot; {} &middot; reloads every {refresh_secs} s</p>",
        escape(&s.replica),
        if s.leading {
            " (leader)".to_string()
        } else if s.leader.is_empty() {
            ", no leader elected".to_string()
        } else {
            format!(", leader <code>{}</code>", escape(&s.leader))
        },
        when(s.at_ms)
    );
    // A failover in flight matters most.
    out.push_str("<h2>Failover</h2>");
    if s.failovers.is_empty() {
        out.push_str("<p id=\"failover\">None running.</p>");
    }
    for f in &s.failovers {
        let step = f
            .steps
            .iter()
            .find(|x| matches!(x.state, StepState::Running | StepState::Pending))
            .map(|x| x.step.name())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<p id=\"failover\" data-failover=\"{}\"><span class=\"pill running\">RUNNING</span> {} of <b>{}</b> from {} to {}, at step <b>{}</b> (since {})</p>",
            escape(&f.id),
            if f.failback { "failback" } else { "failover" },
            escape(&f.service),
            escape(&f.from),
            escape(&f.to),
            escape(&step),
            when(f.started_unix_ms)
        );
    }
    out.push_str("<h2>Services</h2>");
    for sv in &s.services {
        let (name, rpo, rto, rep, backups) = (
            &sv.name,
            &sv.rpo_ms,
            &sv.rto_ms,
            &sv.replication,
            &sv.backups,
        );
        let verdict = rep
            .as_ref()
            .map(|r| r.verdict.as_str())
            .unwrap_or("not checked");
        let _ = write!(
            out,
            "<h3 data-service=\"{n}\">{n} <span class=\"pill {c}\">{v}</span></h3><p class=\"meta\">RPO {} &middot; RTO {}{}</p>",
            span(*rpo),
            span(*rto),
            rep.as_ref()
                .map(|r| format!(
                    " &middot; replication checked {}{}",
                    when(r.checked_unix_ms),
                    r.exposure_ms
                        .map(|e| format!(", exposure {}", span(e)))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
            n = escape(name),
            c = class(verdict),
            v = escape(&verdict.to_uppercase()),
        );
        if let Some(r) = rep.as_ref().filter(|r| !r.stores.is_empty()) {
            out.push_str("<table><tr><th>Store</th><th>Region</th><th>Role</th><th>Lag</th><th>Verdict</th></tr>");
            for st in &r.stores {
                let lag = match (st.lag_bytes, st.lag_secs) {
                    (Some(b), Some(secs)) => format!("{b} bytes, {secs:.1} s"),
                    (Some(b), None) => format!("{b} bytes"),
                    (None, Some(secs)) => format!("{secs:.1} s"),
                    (None, None) => "-".into(),
                };
                let _ = write!(
                    out,
                    "<tr data-store=\"{}/{}\"><td>{} <code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    escape(&st.region),
                    escape(&st.source),
                    escape(&st.kind),
                    escape(&st.source),
                    escape(&st.region),
                    escape(&st.role),
                    escape(&lag),
                    class(&st.verdict),
                    escape(&st.verdict)
                );
            }
            out.push_str("</table>");
        }
        if !backups.is_empty() {
            out.push_str("<table><tr><th>Backup</th><th>Region</th><th>Newest</th><th>Age against the RPO</th></tr>");
            for b in backups {
                let (age, bar, cls) = match b.newest_ms {
                    Some(t) => {
                        let age = s.at_ms - t;
                        (
                            span(age),
                            age_bar(age, *rpo),
                            if age <= *rpo { "ok" } else { "risk" },
                        )
                    }
                    None => ("never".into(), age_bar(i64::MAX / 4, *rpo), "broken"),
                };
                let _ = write!(
                    out,
                    "<tr data-backup=\"{}/{}\"><td><code>{}</code></td><td>{}</td><td class=\"{cls}\">{age}</td><td>{bar}</td></tr>",
                    escape(&b.region),
                    escape(&b.source),
                    escape(&b.source),
                    escape(&b.region),
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h2>Drills</h2>");
    if s.drills.is_empty() {
        out.push_str("<p>No drill has run yet.</p>");
    } else {
        out.push_str("<table><tr><th>Service</th><th>Scenario</th><th>Verdict</th><th>RTO</th><th>RPO</th><th>When</th></tr>");
        for d in &s.drills {
            let verdict = if d.verdict.is_empty() {
                "running"
            } else {
                d.verdict.as_str()
            };
            let scenario = if d.scenario.is_empty() {
                format!("{} drill", d.kind)
            } else {
                d.scenario.clone()
            };
            let figure = |got: Option<i64>, goal: i64| {
                got.map(|g| format!("{} / {}", span(g), span(goal)))
                    .unwrap_or_else(|| format!("- / {}", span(goal)))
            };
            let _ = write!(
                out,
                "<tr data-drill=\"{}\"><td>{}</td><td><a href=\"/drills/{}\">{}</a></td><td><span class=\"pill {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&scenario),
                escape(&d.service),
                escape(&d.id),
                escape(&scenario),
                escape(verdict),
                escape(&verdict.to_uppercase()),
                figure(d.rto_ms, d.rto_objective_ms),
                figure(d.rpo_ms, d.rpo_objective_ms),
                when(d.started_unix_ms)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Regions</h2>");
    for (name, role, agents) in &s.regions {
        let _ = write!(
            out,
            "<h3 data-region=\"{n}\">{n} <span class=\"meta\">{}</span></h3>",
            escape(role),
            n = escape(name)
        );
        if agents.is_empty() {
            out.push_str("<p class=\"meta\">No agent has registered.</p>");
            continue;
        }
        out.push_str(
            "<table><tr><th>Agent</th><th>Sources</th><th>Version</th><th>State</th></tr>",
        );
        for a in agents {
            let state = match a.connected {
                Some(true) => format!(
                    "<span class=\"ok\">connected</span> since {}",
                    when(a.since_ms)
                ),
                Some(false) => "<span class=\"broken\">not connected</span>".to_string(),
                None => format!(
                    "registered {} (the leader knows whether it is connected)",
                    when(a.since_ms)
                ),
            };
            let _ = write!(
                out,
                "<tr data-agent=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
                escape(&a.name),
                escape(&a.name),
                escape(&a.sources.join(", ")),
                escape(&a.version)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}
