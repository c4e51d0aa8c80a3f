//! `seawall failover plan | run | status | list | abort`: a service's
//! primary moved to another region through the coordinator's workflow.
//! Plan, run and abort need the leader: a follower's refusal names it and
//! the command goes there.

use super::operator::{failed, leader_named, millis, when, Op};
use crate::args::{FailoverArgs, FailoverStartArgs, FailoverWhat, Global, OperatorArgs};
use seawall_proto::v1::*;
use std::time::Duration;

/// Runs the subcommand.
pub async fn run(g: &Global, a: FailoverArgs) -> anyhow::Result<u8> {
    match a.what {
        FailoverWhat::Plan(s) => plan(g, s).await,
        FailoverWhat::Run(s) => start(g, s).await,
        FailoverWhat::Status(s) => {
            let mut op = Op::connect(&s.op, &s.op.coordinator).await?;
            let id = s.id.unwrap_or_default();
            if s.watch {
                return watch(g, &mut op, &id, false).await;
            }
            let f = op
                .client
                .get_failover(op.req(GetFailoverRequest { id }))
                .await
                .map_err(failed)?
                .into_inner();
            show(g, &f)?;
            Ok(exit_code(&f))
        }
        FailoverWhat::List(l) => {
            let mut op = Op::connect(&l.op, &l.op.coordinator).await?;
            let r = op
                .client
                .list_failovers(op.req(ListFailoversRequest {
                    service: l.service.unwrap_or_default(),
                    limit: l.limit,
                }))
                .await
                .map_err(failed)?
                .into_inner();
            if g.json {
                crate::output::json(&r.failovers)?;
                return Ok(0);
            }
            crate::say!(
                "{:<32} {:<10} {:<12} {:<12} {:<10} {:<20} {:>8} {:>8}",
                "ID",
                "SERVICE",
                "FROM",
                "TO",
                "STATE",
                "STARTED",
                "RTO",
                "RPO"
            );
            for f in &r.failovers {
                crate::say!(
                    "{:<32} {:<10} {:<12} {:<12} {:<10} {:<20} {:>8} {:>8}",
                    f.id,
                    f.service,
                    f.from,
                    f.to,
                    f.state,
                    when(f.started_unix_ms),
                    millis(f.rto_ms),
                    millis(f.rpo_ms)
                );
            }
            Ok(0)
        }
        FailoverWhat::Abort(x) => {
            let req = AbortFailoverRequest {
                id: x.id.clone(),
                reason: x.reason.clone().unwrap_or_default(),
            };
            let (mut op, _) = to_leader(&x.op).await?;
            let f = op
                .client
                .abort_failover(op.req(req))
                .await
                .map_err(failed)?
                .into_inner();
            if g.json {
                crate::output::json(&f)?;
            } else if !g.quiet {
                crate::say!(
                    "failover {}: abort requested; it stops before its next step",
                    f.id
                );
            }
            Ok(0)
        }
    }
}

/// A connection to the leader (a follower names it), and its address.
pub(crate) async fn to_leader(a: &OperatorArgs) -> anyhow::Result<(Op, String)> {
    let mut op = Op::connect(a, &a.coordinator).await?;
    let status = op
        .client
        .status(op.req(StatusRequest {}))
        .await
        .map_err(failed)?
        .into_inner();
    if status.is_leader || status.leader_address.is_empty() {
        return Ok((op, a.coordinator.clone()));
    }
    let op = Op::connect(a, &status.leader_address).await?;
    Ok((op, status.leader_address))
}

fn request(s: &FailoverStartArgs) -> FailoverRequest {
    FailoverRequest {
        service: s.service.clone(),
        to: s.to.clone(),
        switchover: s.switchover,
        allow_data_loss: s.allow_data_loss,
        failback: s.failback,
        standby_only: s.standby_only,
    }
}

async fn plan(g: &Global, s: FailoverStartArgs) -> anyhow::Result<u8> {
    let (mut op, _) = to_leader(&s.op).await?;
    let p = match op.client.plan_failover(op.req(request(&s))).await {
        Ok(r) => r.into_inner(),
        Err(st) => {
            let leader = leader_named(&st).ok_or_else(|| failed(st))?;
            op = Op::connect(&s.op, &leader).await?;
            op.client
                .plan_failover(op.req(request(&s)))
                .await
                .map_err(failed)?
                .into_inner()
        }
    };
    if g.json {
        crate::output::json(&p)?;
    } else {
        crate::say!(
            "{} from {} to {}{}: {}",
            p.service,
            p.from,
            p.to,
            if p.switchover { " (switchover)" } else { "" },
            if p.refusals.is_empty() {
                "would run"
            } else {
                "REFUSED"
            }
        );
        crate::say!(
            "  lag {} bytes, {}; expected loss {}",
            p.lag_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "unknown".into()),
            p.lag_secs
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "unknown s".into()),
            millis(p.expected_loss_ms)
        );
        for n in &p.notes {
            crate::say!("  note: {n}");
        }
        for (i, step) in p.steps.iter().enumerate() {
            crate::say!("  {}. {step}", i + 1);
        }
        for r in &p.refusals {
            crate::say!("  refused: {r}");
        }
    }
    Ok(if p.refusals.is_empty() { 0 } else { 1 })
}

async fn start(g: &Global, s: FailoverStartArgs) -> anyhow::Result<u8> {
    let (mut op, _) = to_leader(&s.op).await?;
    let f = match op.client.start_failover(op.req(request(&s))).await {
        Ok(r) => r.into_inner(),
        Err(st) => {
            let leader = leader_named(&st).ok_or_else(|| failed(st))?;
            op = Op::connect(&s.op, &leader).await?;
            op.client
                .start_failover(op.req(request(&s)))
                .await
                .map_err(failed)?
                .into_inner()
        }
    };
    if !s.wait {
        if g.json {
            crate::output::json(&f)?;
        } else if !g.quiet {
            crate::say!(
                "{} {} started: `seawall failover status {} --watch` follows it",
                if f.failback { "failback" } else { "failover" },
                f.id,
                f.id
            );
        }
        return Ok(0);
    }
    watch(g, &mut op, &f.id, true).await
}

/// Prints the failover at every change until it ends or, with
/// `until_served`, until its post-check passed: the service is served
/// again then and the achieved figures are final; the old primary's
/// follow steps go on without the operator.
async fn watch(g: &Global, op: &mut Op, id: &str, until_served: bool) -> anyhow::Result<u8> {
    let mut last = String::new();
    loop {
        let f = op
            .client
            .get_failover(op.req(GetFailoverRequest { id: id.to_string() }))
            .await
            .map_err(failed)?
            .into_inner();
        let shown = serde_json::to_string(&f)?;
        let served = until_served && f.state == "running" && f.rto_ms.is_some();
        let ended = f.state != "running" || served;
        if shown != last && (!g.json || ended) {
            show(g, &f)?;
            last = shown;
        }
        if served && !g.json && !g.quiet {
            crate::say!(
                "  served from {} again; the remaining steps go on: `seawall failover status {} --watch` follows them",
                f.to, f.id
            );
        }
        if ended {
            return Ok(exit_code(&f));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn exit_code(f: &Failover) -> u8 {
    match f.state.as_str() {
        "succeeded" | "running" => 0,
        _ => 1,
    }
}

fn show(g: &Global, f: &Failover) -> anyhow::Result<()> {
    if g.json {
        return crate::output::json(f);
    }
    crate::say!(
        "{} {}: {} from {} to {}{}, {} (started {} by {})",
        if f.failback { "failback" } else { "failover" },
        f.id,
        f.service,
        f.from,
        f.to,
        if f.standby_only {
            " (standby only)"
        } else if f.switchover {
            " (switchover)"
        } else {
            ""
        },
        f.state.to_uppercase(),
        when(f.started_unix_ms),
        f.requested_by
    );
    if !f.failed_store.is_empty() {
        crate::say!(
            "  started because {}'s {} stopped answering while its agent reported",
            f.from,
            f.failed_store
        );
    }
    for s in &f.steps {
        let took = if s.ended_unix_ms > 0 && s.started_unix_ms > 0 {
            format!(
                "{:.2} s",
                (s.ended_unix_ms - s.started_unix_ms) as f64 / 1000.0
            )
        } else {
            String::new()
        };
        crate::say!("  {:<17} {:<8} {:>8}  {}", s.name, s.state, took, s.detail);
    }
    if !f.error.is_empty() {
        crate::say!("  error: {}", f.error);
    }
    if f.rto_ms.is_some() && !f.standby_only {
        crate::say!(
            "  achieved: RTO {}, RPO {}{}{}",
            millis(f.rto_ms),
            millis(f.rpo_ms),
            f.lsn_gap_bytes
                .map(|b| format!(", WAL gap {b} bytes"))
                .unwrap_or_default(),
            f.offset_gap
                .map(|o| format!(", Redis offset gap {o}"))
                .unwrap_or_default()
        );
        if !f.rpo_basis.is_empty() {
            crate::say!("  RPO basis: {}", f.rpo_basis);
        }
        if !f.rpo_measured.is_empty() {
            crate::say!(
                "  RPO measured when the old primary returned: {} ({})",
                millis(f.rpo_measured_ms),
                f.rpo_measured
            );
        }
    }
    Ok(())
}
