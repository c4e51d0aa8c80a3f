//! Carries out a failover's actions on the agent's stores (fence, catch
//! up, promote, post-check, rejoin), each within its deadline, each on a
//! fresh connection (a failover is rare; a kept connection may be the one
//! the fence just ended). The epoch was checked before this is reached.

use super::config::AgentConfig;
use crate::engine::operation::SourceSpec;
use crate::engine::postgres::check::{check_postgres, ChecksFile, Depth};
use crate::engine::postgres::conn;
use crate::engine::postgres::rebuild::{
    memory_path, pg_rebuild, start_server, stop_server, stopped_by_fence, RebuildOptions, Server,
};
use crate::engine::postgres::tools::PgTools;
use crate::engine::promotion::{self, Done};
use crate::engine::redis::{connect::Endpoint, RedisTls};
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{action_request::Action, ActionReply, ActionRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest deadline honoured, whatever the request says.
const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// A rebuild may copy a whole cluster (a base backup).
const MAX_REBUILD_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Redis writes stay paused this long when the request names no time.
const DEFAULT_PAUSE: Duration = Duration::from_secs(300);

/// Runs one action and says how it went.
pub async fn answer(config: Arc<AgentConfig>, request: ActionRequest) -> ActionReply {
    let cap = if matches!(request.action, Some(Action::Rebuild(_))) {
        MAX_REBUILD_DEADLINE
    } else {
        MAX_DEADLINE
    };
    let deadline = Duration::from_millis(u64::from(request.deadline_ms.max(100))).min(cap);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        deadline + Duration::from_secs(1),
        run(&config, &request, deadline),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Unreachable,
            format!("{} did not finish within {deadline:?}", request.source),
        ))
    });
    let took_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
    match outcome {
        Ok(done) => ActionReply {
            action_id: request.action_id,
            already_done: done.already,
            detail: done.detail,
            lsn: done.lsn,
            timeline: done.timeline,
            offset: done.offset,
            took_ms,
            ..Default::default()
        },
        Err(e) => ActionReply {
            action_id: request.action_id,
            error: e.to_string(),
            error_kind: super::result::wire_kind(e.kind()) as i32,
            took_ms,
            ..Default::default()
        },
    }
}

async fn run(config: &AgentConfig, request: &ActionRequest, deadline: Duration) -> Result<Done> {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == request.source)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("this agent has no source {:?}", request.source),
            )
        })?;
    let Some(action) = &request.action else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an action request without an action",
        ));
    };
    match &source.kind {
        SourceSpec::Postgres { dsn, pg_bin, .. } => {
            let server = Server {
                dsn: dsn.clone(),
                control: source.server.clone(),
                tools: PgTools {
                    bin_dir: pg_bin.clone(),
                },
                memory: memory_path(&config.state_dir, &source.name),
            };
            if let Action::Rebuild(r) = action {
                // Its own task: a rebuild cut short half-way (the reply's
                // deadline) would leave a stopped server behind; it goes
                // on, and a repeated request waits for it.
                let (host, port) = host_port(&r.primary)?;
                let opts = RebuildOptions {
                    server,
                    primary_host: host,
                    primary_port: port,
                    rewind_only: r.rewind_only,
                    deadline,
                };
                return tokio::spawn(async move { pg_rebuild(&opts).await })
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, format!("the rebuild stopped: {e}")))?;
            }
            // A server a fence stopped: a promotion (the unfence of a
            // failover that promoted nothing) starts it again; a rejoin
            // leaves it down.
            if stopped_by_fence(&server) {
                match action {
                    Action::Promote(_) => start_server(&server, deadline).await?,
                    Action::Rejoin(_) | Action::Fence(_) => {
                        return Ok(Done {
                            already: true,
                            detail: "stopped by the fence: stays down until failback".into(),
                            ..Done::default()
                        })
                    }
                    _ => {}
                }
            }
            let client = conn::connect(dsn).await?;
            match action {
                Action::Fence(f) => {
                    let mut done = promotion::pg_fence(&client).await?;
                    if f.stop_postgres {
                        drop(client);
                        let how = stop_server(&server, deadline).await?;
                        done.detail.push_str(&format!("; {how}"));
                    }
                    Ok(done)
                }
                Action::CatchUp(c) => promotion::pg_catch_up(&client, &c.lsn, deadline).await,
                Action::Promote(_) => promotion::pg_promote(&client, deadline).await,
                Action::PostCheck(p) => {
                    let mut done = promotion::pg_post_check(&client, &p.service).await?;
                    if !p.check_file.is_empty() {
                        let checks = ChecksFile::load(Path::new(&p.check_file))?;
                        let tools = PgTools {
                            bin_dir: pg_bin.clone(),
                        };
                        let report = check_postgres(dsn, &checks, Depth::Counted, &tools).await?;
                        let failed: Vec<String> = report
                            .checks
                            .iter()
                            .filter(|c| !c.ok)
                            .map(|c| format!("{}: {}", c.name, c.detail))
                            .collect();
                        if !failed.is_empty() {
                            return Err(Error::new(
                                ErrorKind::Corrupt,
                                format!(
                                    "the check file {} fails on the promoted server: {}",
                                    p.check_file,
                                    failed.join("; ")
                                ),
                            ));
                        }
                        done.detail.push_str(&format!(
                            "; check file {}: {} check(s) passed",
                            p.check_file,
                            report.checks.len()
                        ));
                    }
                    Ok(done)
                }
                Action::Rejoin(_) => promotion::pg_rejoin(&client).await,
                Action::Rebuild(_) => unreachable_rebuild(),
            }
        }
        SourceSpec::Redis { url, .. } => {
            let endpoint = Endpoint::new(url, &RedisTls::default())?;
            let mut con = endpoint.connection().await?;
            match action {
                Action::Fence(f) => {
                    let pause = match f.redis_pause_ms {
                        0 => DEFAULT_PAUSE,
                        ms => Duration::from_millis(u64::from(ms)),
                    };
                    promotion::redis_fence(&mut con, pause).await
                }
                Action::CatchUp(c) => promotion::redis_catch_up(&mut con, c.offset, deadline).await,
                Action::Promote(_) => promotion::redis_promote(&mut con).await,
                Action::PostCheck(p) => promotion::redis_post_check(&mut con, &p.service).await,
                Action::Rejoin(r) => promotion::redis_rejoin(&mut con, &r.redis_master).await,
                Action::Rebuild(r) => promotion::redis_follow(&mut con, &r.primary, deadline).await,
            }
        }
        SourceSpec::Files { .. } => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a files source: nothing to fence or promote",
                request.source
            ),
        )),
    }
}

/// A rebuild is answered before the PostgreSQL connection is made.
fn unreachable_rebuild() -> Result<Done> {
    Err(Error::new(
        ErrorKind::InvalidInput,
        "a rebuild request reached the wrong handler",
    ))
}

/// `host:port` of a store's address.
fn host_port(address: &str) -> Result<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{address:?} is not host:port (the store's address in the topology)"),
            )
        })
}
