//! Carries out a failover's actions on the agent's stores (fence, unfence,
//! catch up, promote, post-check, rejoin, rebuild) through the store's
//! provider, each within its deadline, each on a fresh connection (a
//! failover is rare; a kept connection may be the one the fence just
//! ended). The epoch was checked before this is reached.

use super::config::AgentConfig;
use crate::stores::{self, Done};
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{action_request::Action, ActionReply, ActionRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest deadline honoured, whatever the request says.
const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// A rebuild may copy a whole cluster (a base backup).
const MAX_REBUILD_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Runs one action and says how it went.
pub async fn answer(
    config: Arc<AgentConfig>,
    request: ActionRequest,
    tasks: &seawall_common::tasks::Tree,
) -> ActionReply {
    let cap = if matches!(request.action, Some(Action::Rebuild(_))) {
        MAX_REBUILD_DEADLINE
    } else {
        MAX_DEADLINE
    };
    let deadline = Duration::from_millis(u64::from(request.deadline_ms.max(100))).min(cap);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        deadline + Duration::from_secs(1),
        run(&config, &request, deadline, tasks),
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
            position: done.position,
            divergence: done.divergence,
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

async fn run(
    config: &AgentConfig,
    request: &ActionRequest,
    deadline: Duration,
    tasks: &seawall_common::tasks::Tree,
) -> Result<Done> {
    let Some(action) = &request.action else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an action request without an action",
        ));
    };
    let store = stores::open(config, &request.source)?;
    match action {
        Action::Fence(how) => store.fence(how, deadline).await,
        Action::Unfence(_) => store.unfence(deadline).await,
        Action::CatchUp(c) => store.catch_up(c.to.as_ref(), deadline).await,
        Action::Promote(_) => store.promote(deadline).await,
        Action::PostCheck(check) => {
            config.allowed_check_file(&check.check_file)?;
            store.post_check(check, deadline).await
        }
        Action::Rejoin(how) => store.demote(how, deadline).await,
        Action::Rebuild(how) => store.rebuild(how, deadline, tasks).await,
    }
}
