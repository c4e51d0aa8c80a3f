//! `seawall drill restore | failover | run | show | list | report`: drills through the
//! coordinator. Starting one needs the leader (a follower names it); the
//! journal is read from any replica, and the report page is rendered here
//! from it, the same page the coordinator serves.

use super::failover::to_leader;
use super::operator::{failed, leader_named, millis, when, Op};
use crate::args::{DrillArgs, DrillWhat, Global, OperatorArgs};
use anyhow::Context;
use seawall_proto::v1::*;
use std::time::Duration;

/// Runs the subcommand.
pub async fn run(g: &Global, a: DrillArgs) -> anyhow::Result<u8> {
    match a.what {
        DrillWhat::Restore(r) => {
            let req = DrillRequest {
                service: r.service,
                kind: if r.rds { "rds-pitr" } else { "restore" }.into(),
                region: r.region.unwrap_or_default(),
                point: r.point,
                deep: r.deep,
                ..Default::default()
            };
            start(g, &r.op, req, r.wait).await
        }
        DrillWhat::Failover(f) => {
            let req = DrillRequest {
                service: f.service,
                kind: "failover".into(),
                region: f.to.unwrap_or_default(),
                ..Default::default()
            };
            start(g, &f.op, req, f.wait).await
        }
        DrillWhat::Run(r) => {
            let req = DrillRequest {
                scenario: r.scenario,
                ..Default::default()
            };
            start(g, &r.op, req, r.wait).await
        }
        DrillWhat::Show(s) => {
            let mut op = Op::connect(&s.op, &s.op.coordinator).await?;
            let d = get(&mut op, s.id.unwrap_or_default()).await?;
            show(g, &d)?;
            Ok(exit_code(&d))
        }
        DrillWhat::List(l) => {
            let mut op = Op::connect(&l.op, &l.op.coordinator).await?;
            let r = op
                .client
                .list_drills(op.req(ListDrillsRequest {
                    service: l.service.unwrap_or_default(),
                    limit: l.limit,
                }))
                .await
                .map_err(failed)?
                .into_inner();
            if g.json {
                crate::output::json(&r.drills)?;
                return Ok(0);
            }
            crate::say!(
                "{:<36} {:<10} {:<18} {:<8} {:<9} {:<20} {:>8} {:>8}",
                "ID",
                "SERVICE",
                "SCENARIO",
                "KIND",
                "VERDICT",
                "STARTED",
                "RTO",
                "RPO"
            );
            for d in &r.drills {
                crate::say!(
                    "{:<36} {:<10} {:<18} {:<8} {:<9} {:<20} {:>8} {:>8}",
                    d.id,
                    d.service,
                    if d.scenario.is_empty() {
                        "-"
                    } else {
                        &d.scenario
                    },
                    d.kind,
                    if d.verdict.is_empty() {
                        &d.state
                    } else {
                        &d.verdict
                    },
                    when(d.started_unix_ms),
                    millis(d.rto_ms),
                    millis(d.rpo_ms)
                );
            }
            Ok(0)
        }
        DrillWhat::Report(r) => {
            let mut op = Op::connect(&r.op, &r.op.coordinator).await?;
            let d = get(&mut op, r.id.unwrap_or_default()).await?;
            let page = seawall_coordinator::drills::report::html(&d);
            std::fs::write(&r.html, page)
                .with_context(|| format!("writing the report to {}", r.html.display()))?;
            if !g.quiet {
                crate::say!(
                    "drill {} ({}) written to {}",
                    d.id,
                    if d.verdict.is_empty() {
                        &d.state
                    } else {
                        &d.verdict
                    },
                    r.html.display()
                );
            }
            Ok(0)
        }
    }
}

async fn get(op: &mut Op, id: String) -> anyhow::Result<Drill> {
    Ok(op
        .client
        .get_drill(op.req(GetDrillRequest { id }))
        .await
        .map_err(failed)?
        .into_inner())
}

async fn start(g: &Global, a: &OperatorArgs, req: DrillRequest, wait: bool) -> anyhow::Result<u8> {
    let (mut op, _) = to_leader(a).await?;
    let d = match op.client.start_drill(op.req(req.clone())).await {
        Ok(r) => r.into_inner(),
        Err(st) => {
            let leader = leader_named(&st).ok_or_else(|| failed(st))?;
            op = Op::connect(a, &leader).await?;
            op.client
                .start_drill(op.req(req))
                .await
                .map_err(failed)?
                .into_inner()
        }
    };
    if !wait {
        if g.json {
            crate::output::json(&d)?;
        } else if !g.quiet {
            crate::say!(
                "{} drill {} started: `seawall drill show {}` reads its journal",
                d.kind,
                d.id,
                d.id
            );
        }
        return Ok(0);
    }
    let mut last = String::new();
    loop {
        let d = get(&mut op, d.id.clone()).await?;
        let shown = serde_json::to_string(&d)?;
        let ended = d.state != "running";
        if shown != last && (!g.json || ended) && (ended || !g.quiet) {
            show(g, &d)?;
            last = shown;
        }
        if ended {
            return Ok(exit_code(&d));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// 0 when the objectives were met (or it still runs), else 1.
fn exit_code(d: &Drill) -> u8 {
    match (d.state.as_str(), d.verdict.as_str()) {
        ("running", _) | (_, "met") => 0,
        _ => 1,
    }
}

fn show(g: &Global, d: &Drill) -> anyhow::Result<()> {
    if g.json {
        return crate::output::json(d);
    }
    crate::say!(
        "{} drill {}: {}{} in {}, {} (started {} by {})",
        d.kind,
        d.id,
        d.service,
        if d.scenario.is_empty() {
            String::new()
        } else {
            format!(" ({})", d.scenario)
        },
        d.region,
        if d.verdict.is_empty() {
            d.state.to_uppercase()
        } else {
            d.verdict.to_uppercase()
        },
        when(d.started_unix_ms),
        d.requested_by
    );
    for s in &d.steps {
        let took = if s.ended_unix_ms > 0 && s.started_unix_ms > 0 {
            format!(
                "{:.2} s",
                (s.ended_unix_ms - s.started_unix_ms) as f64 / 1000.0
            )
        } else {
            String::new()
        };
        crate::say!("  {:<28} {:<8} {:>9}  {}", s.name, s.state, took, s.detail);
    }
    if d.state != "running" {
        crate::say!(
            "  achieved: RTO {} (objective {}), RPO {} (objective {})",
            millis(d.rto_ms),
            millis(Some(d.rto_objective_ms)),
            millis(d.rpo_ms),
            millis(Some(d.rpo_objective_ms))
        );
        for r in &d.reasons {
            crate::say!("  {r}");
        }
    }
    Ok(())
}
