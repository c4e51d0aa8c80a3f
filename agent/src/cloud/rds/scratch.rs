//! The tags that mark a scratch RDS instance (a restore drill's
//! point-in-time copy): that Seawall made it, which agent, and when it may
//! be deleted whatever its drill does. The agent's sweep reads them.

use super::api::InstanceState;

/// Tag: the instance is a scratch copy Seawall made ("true").
pub const SCRATCH: &str = "seawall:scratch";
/// Tag: the agent that made it (its id).
pub const AGENT: &str = "seawall:agent";
/// Tag: when it may be deleted whatever its drill does (unix seconds).
pub const EXPIRES: &str = "seawall:expires";
/// Tag: the agent's job that made it (its drill's job for one source).
pub const JOB: &str = "seawall:job";

fn tag<'a>(i: &'a InstanceState, key: &str) -> Option<&'a str> {
    i.tags
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Of `instances`, the scratch copies of agent `agent` to delete at
/// `now_secs`: those whose job is not among `running` (none runs when the
/// agent starts, so all of its own then), and the expired ones.
pub fn leftovers<'a>(
    instances: &'a [InstanceState],
    agent: &str,
    running: &[String],
    now_secs: i64,
) -> Vec<&'a InstanceState> {
    instances
        .iter()
        .filter(|i| tag(i, SCRATCH) == Some("true") && tag(i, AGENT) == Some(agent))
        .filter(|i| {
            let expired = tag(i, EXPIRES)
                .and_then(|e| e.parse::<i64>().ok())
                .is_none_or(|e| e <= now_secs);
            let running = tag(i, JOB).is_some_and(|j| running.iter().any(|r| r == j));
            expired || !running
        })
        .filter(|i| i.status != "deleting")
        .collect()
}

/// The tags of a scratch copy made by `agent`'s job `job`, deletable by
/// any sweep from `expires_unix_secs` on.
pub fn tags(agent: &str, job: &str, expires_unix_secs: i64) -> Vec<(String, String)> {
    [
        (SCRATCH, "true".to_string()),
        (AGENT, agent.to_string()),
        (JOB, job.to_string()),
        (EXPIRES, expires_unix_secs.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, tags: &[(&str, &str)]) -> InstanceState {
        InstanceState {
            id: id.into(),
            status: "available".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..InstanceState::default()
        }
    }

    #[test]
    fn only_the_agents_own_scratch_copies_are_swept_and_a_running_jobs_only_once_expired() {
        let all = vec![
            instance("orders-west", &[]),
            instance(
                "mine-running",
                &[
                    (SCRATCH, "true"),
                    (AGENT, "w1"),
                    (JOB, "d1.db"),
                    (EXPIRES, "2000"),
                ],
            ),
            instance(
                "mine-ended",
                &[
                    (SCRATCH, "true"),
                    (AGENT, "w1"),
                    (JOB, "d0.db"),
                    (EXPIRES, "2000"),
                ],
            ),
            instance(
                "mine-expired",
                &[
                    (SCRATCH, "true"),
                    (AGENT, "w1"),
                    (JOB, "d1.db"),
                    (EXPIRES, "500"),
                ],
            ),
            instance(
                "theirs",
                &[(SCRATCH, "true"), (AGENT, "e1"), (EXPIRES, "500")],
            ),
            instance("not-scratch", &[(AGENT, "w1"), (EXPIRES, "500")]),
        ];
        let ids = |v: Vec<&InstanceState>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(leftovers(&all, "w1", &["d1.db".to_string()], 1000)),
            vec!["mine-ended", "mine-expired"]
        );
        // At the agent's start no job runs: all of its own go.
        assert_eq!(
            ids(leftovers(&all, "w1", &[], 1000)),
            vec!["mine-running", "mine-ended", "mine-expired"]
        );
    }
}
