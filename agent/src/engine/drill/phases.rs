//! A drill's phases: each timed from its start to its end, with what it
//! found in words and as evidence (snapshot ids, LSNs, counts).

use seawall_common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;

/// The phase ran to its end.
pub const DONE: &str = "done";
/// The phase failed; its detail says why.
pub const FAILED: &str = "failed";

/// One timed phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// choose, scratch, restore, check, teardown.
    pub name: String,
    /// Start (ms since the epoch).
    pub started_unix_ms: i64,
    /// End.
    pub ended_unix_ms: i64,
    /// done | failed.
    pub state: String,
    /// What it did or why it failed.
    pub detail: String,
    /// What it found.
    pub evidence: BTreeMap<String, String>,
}

/// The phases so far.
#[derive(Debug, Default)]
pub struct Phases(Vec<Phase>);

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Phases {
    /// Runs one phase; its output is the value, a detail and evidence. None
    /// when it failed (recorded as failed with the error).
    pub async fn run<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = Result<(T, String, BTreeMap<String, String>)>>,
    ) -> Option<T> {
        let started = now();
        let outcome = work.await;
        let ended = now();
        match outcome {
            Ok((value, detail, evidence)) => {
                self.0.push(Phase {
                    name: name.into(),
                    started_unix_ms: started,
                    ended_unix_ms: ended,
                    state: DONE.into(),
                    detail,
                    evidence,
                });
                Some(value)
            }
            Err(e) => {
                self.0.push(Phase {
                    name: name.into(),
                    started_unix_ms: started,
                    ended_unix_ms: ended,
                    state: FAILED.into(),
                    detail: e.to_string(),
                    evidence: BTreeMap::new(),
                });
                None
            }
        }
    }

    /// Records a phase that failed before it could start.
    pub fn failed_now(&mut self, name: &str, e: &Error) {
        let at = now();
        self.0.push(Phase {
            name: name.into(),
            started_unix_ms: at,
            ended_unix_ms: at,
            state: FAILED.into(),
            detail: e.to_string(),
            evidence: BTreeMap::new(),
        });
    }

    /// Adds a phase measured elsewhere.
    pub fn push(&mut self, p: Phase) {
        self.0.push(p);
    }

    /// The phases, in order.
    pub fn into_vec(self) -> Vec<Phase> {
        self.0
    }
}

/// Evidence from pairs.
pub fn evidence<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
