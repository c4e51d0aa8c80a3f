//! Store actions sent to an agent during a failover or a rejoin, and why
//! one did not happen, typed so a step decides on a kind and never on a
//! message's text.

use crate::jobs::{Coordinator, Lead};
use crate::model::failover::Position;
use crate::model::topology::StoreConfig;
use seawall_proto::v1::{
    action_request::Action, coordinator_message, store_position, ActionReply, ActionRequest,
    CoordinatorMessage, ErrorKind, PostgresPosition, RedisPosition, StorePosition,
};
use std::time::Duration;

/// Why a store action did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    /// The agent is not connected, its stream closed, or it did not
    /// answer in time: the store was not reached.
    #[error("{0}")]
    AgentSilent(String),
    /// The agent answered: the store refused or failed, of this kind.
    #[error("{message}")]
    Store {
        /// The agent's classification.
        kind: ErrorKind,
        /// The store's words, with which store it was.
        message: String,
    },
}

impl ActionError {
    /// Whether the store could not be reached at all (its agent silent,
    /// or the agent could not connect to it).
    pub fn unreachable(&self) -> bool {
        match self {
            ActionError::AgentSilent(_) => true,
            ActionError::Store { kind, .. } => *kind == ErrorKind::Unreachable,
        }
    }

    /// Whether another attempt, without an operator's change, can succeed:
    /// an unreachable store, a lock held by someone else, a busy agent.
    pub fn retryable(&self) -> bool {
        self.unreachable()
            || matches!(
                self,
                ActionError::Store {
                    kind: ErrorKind::Locked | ErrorKind::Busy,
                    ..
                }
            )
    }
}

/// Sends `action` for `store` to its agent and waits for the answer.
pub async fn act(
    coord: &Coordinator,
    lead: &Lead,
    store: &StoreConfig,
    action: Action,
    deadline: Duration,
) -> Result<ActionReply, ActionError> {
    let session = crate::fleet::pending::session_of(&coord.registry, &store.region, &store.agent)
        .map_err(|e| ActionError::AgentSilent(e.to_string()))?;
    let reply = coord
        .actions
        .request(
            &session,
            |id| CoordinatorMessage {
                epoch: lead.epoch(),
                body: Some(coordinator_message::Body::Action(ActionRequest {
                    action_id: id,
                    deadline_ms: crate::fleet::pending::deadline_ms(deadline),
                    source: store.source.clone(),
                    action: Some(action),
                })),
            },
            deadline + Duration::from_secs(2),
        )
        .await
        .map_err(|e| {
            ActionError::AgentSilent(format!("agent {}/{}: {e}", store.region, store.agent))
        })?;
    if reply.error.is_empty() {
        return Ok(reply);
    }
    Err(ActionError::Store {
        kind: ErrorKind::try_from(reply.error_kind).unwrap_or(ErrorKind::Unspecified),
        message: format!(
            "{} ({}/{}): {}",
            store.kind.name(),
            store.agent,
            store.source,
            reply.error
        ),
    })
}

/// Where the store stands after an action, as its agent reported it.
pub fn position_of(reply: &ActionReply) -> Option<Position> {
    Some(match reply.position.as_ref()?.kind.as_ref()? {
        store_position::Kind::Postgres(p) => Position::Postgres {
            lsn: p.lsn.clone(),
            timeline: (p.timeline > 0).then_some(p.timeline),
        },
        store_position::Kind::Redis(r) => Position::Redis { offset: r.offset },
    })
}

/// The wire form of a position (a catch-up's target).
pub fn wire_position(p: &Position) -> StorePosition {
    StorePosition {
        kind: Some(match p {
            Position::Postgres { lsn, timeline } => {
                store_position::Kind::Postgres(PostgresPosition {
                    lsn: lsn.clone(),
                    timeline: timeline.unwrap_or(0),
                })
            }
            Position::Redis { offset } => {
                store_position::Kind::Redis(RedisPosition { offset: *offset })
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_cross_the_wire_both_ways() {
        for p in [
            Position::Postgres {
                lsn: "0/3000060".into(),
                timeline: Some(2),
            },
            Position::Postgres {
                lsn: "0/3000060".into(),
                timeline: None,
            },
            Position::Redis { offset: 77 },
        ] {
            let reply = ActionReply {
                position: Some(wire_position(&p)),
                ..Default::default()
            };
            assert_eq!(position_of(&reply), Some(p));
        }
        assert_eq!(position_of(&ActionReply::default()), None);
    }

    #[test]
    fn retries_follow_the_kind_not_the_words() {
        let store = |kind| ActionError::Store {
            kind,
            message: "unreachable, locked, busy".into(),
        };
        assert!(ActionError::AgentSilent("x".into()).unreachable());
        assert!(store(ErrorKind::Unreachable).unreachable());
        assert!(!store(ErrorKind::Locked).unreachable());
        for kind in [ErrorKind::Unreachable, ErrorKind::Locked, ErrorKind::Busy] {
            assert!(store(kind).retryable(), "{kind:?}");
        }
        for kind in [
            ErrorKind::Denied,
            ErrorKind::InvalidInput,
            ErrorKind::Conflict,
            ErrorKind::Unspecified,
        ] {
            assert!(!store(kind).retryable(), "{kind:?}");
        }
    }
}
