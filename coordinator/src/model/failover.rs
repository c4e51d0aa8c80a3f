//! The stored failover: the coordinator's own record of one failover, its
//! typed steps and the typed evidence each step gathered. It is kept as
//! JSON under `failovers/<id>` in the shape records have always had (step
//! names such as `"promote postgres"`, evidence as a flat string map such
//! as `postgres_fence_lsn`), so failovers stored by earlier versions still
//! load; in memory every step and every piece of evidence is typed, and
//! only this file knows the stored names.

use crate::model::topology::StoreKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Store prefix of the records.
pub const PREFIX: &str = "failovers/";

/// The key of failover `id`.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// One step of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The lag gate (a failback's: wait for the rebuilt standbys).
    Precheck,
    /// The old primary region's stores stop taking writes.
    Fence,
    /// A switchover's standbys replay up to the fenced position.
    CatchUp,
    /// The new primary region's store of this kind takes writes.
    Promote(StoreKind),
    /// The service's record answers the new region.
    Dns,
    /// The new primaries answer and pass their checks.
    PostCheck,
    /// The old primaries end as replicas (or stay fenced).
    Demote,
    /// A failback's first steps: the old region's store rebuilt as a standby.
    Rebuild(StoreKind),
    /// A switchover's last steps: the old primary follows the new one.
    Follow(StoreKind),
}

impl Step {
    /// The steps every failover has, in order, between a failback's
    /// rebuilds and a switchover's follows: one promotion per store kind.
    pub fn core() -> Vec<Step> {
        let mut steps = vec![Step::Precheck, Step::Fence, Step::CatchUp];
        steps.extend(StoreKind::ALL.map(Step::Promote));
        steps.extend([Step::Dns, Step::PostCheck, Step::Demote]);
        steps
    }

    /// Its stored (and shown) name.
    pub fn name(self) -> String {
        match self {
            Step::Precheck => "precheck".into(),
            Step::Fence => "fence".into(),
            Step::CatchUp => "catch up".into(),
            Step::Promote(kind) => format!("promote {}", kind.name()),
            Step::Dns => "dns".into(),
            Step::PostCheck => "post-check".into(),
            Step::Demote => "demote".into(),
            Step::Rebuild(kind) => format!("rebuild {}", kind.name()),
            Step::Follow(kind) => format!("follow {}", kind.name()),
        }
    }

    /// The step stored as `name`; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "precheck" => Step::Precheck,
            "fence" => Step::Fence,
            "catch up" => Step::CatchUp,
            "dns" => Step::Dns,
            "post-check" => Step::PostCheck,
            "demote" => Step::Demote,
            other => {
                let (verb, kind) = other.split_once(' ')?;
                let kind = StoreKind::from_name(kind)?;
                match verb {
                    "promote" => Step::Promote(kind),
                    "rebuild" => Step::Rebuild(kind),
                    "follow" => Step::Follow(kind),
                    _ => return None,
                }
            }
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepState {
    /// Not begun.
    #[default]
    Pending,
    /// Begun (and written) before it acts; a new leader repeats it.
    Running,
    /// Finished and did what it does.
    Done,
    /// Finished with nothing to do (no store of that kind, no DNS).
    Skipped,
    /// Failed for good: the failover failed with it.
    Failed,
}

impl StepState {
    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }

    fn parse(name: &str) -> Option<StepState> {
        [
            StepState::Pending,
            StepState::Running,
            StepState::Done,
            StepState::Skipped,
            StepState::Failed,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Where a failover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverState {
    /// Being driven.
    #[default]
    Running,
    /// Every step done.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Stopped by an operator before a step.
    Aborted,
}

impl FailoverState {
    /// Its stored (and shown) name.
    pub fn name(self) -> &'static str {
        match self {
            FailoverState::Running => "running",
            FailoverState::Succeeded => "succeeded",
            FailoverState::Failed => "failed",
            FailoverState::Aborted => "aborted",
        }
    }
}

/// A store's replication position as its agent reported it after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// PostgreSQL: the WAL position and, when known, the timeline.
    Postgres {
        /// `X/Y`, as PostgreSQL prints it.
        lsn: String,
        /// The timeline, when the agent reported one.
        timeline: Option<u32>,
    },
    /// Redis: the replication offset.
    Redis {
        /// Bytes of the replication stream.
        offset: i64,
    },
}

impl Position {
    /// Its store kind.
    pub fn kind(&self) -> StoreKind {
        match self {
            Position::Postgres { .. } => StoreKind::Postgres,
            Position::Redis { .. } => StoreKind::Redis,
        }
    }

    /// Bytes from `behind` up to this position (0 when `behind` is
    /// ahead); `None` when either does not parse or the kinds differ.
    pub fn bytes_after(&self, behind: &Position) -> Option<i64> {
        match (self, behind) {
            (Position::Postgres { lsn: a, .. }, Position::Postgres { lsn: b, .. }) => {
                let (a, b) = (crate::model::lsn::parse(a)?, crate::model::lsn::parse(b)?);
                Some((a - b).max(0))
            }
            (Position::Redis { offset: a }, Position::Redis { offset: b }) => Some((a - b).max(0)),
            _ => None,
        }
    }

    /// Writes it as `<kind>_<what>_lsn`/`_timeline`/`_offset`.
    fn store(&self, what: &str, into: &mut BTreeMap<String, String>) {
        match self {
            Position::Postgres { lsn, timeline } => {
                into.insert(format!("postgres_{what}_lsn"), lsn.clone());
                if let Some(t) = timeline {
                    into.insert(format!("postgres_{what}_timeline"), t.to_string());
                }
            }
            Position::Redis { offset } => {
                into.insert(format!("redis_{what}_offset"), offset.to_string());
            }
        }
    }

    /// Reads the position of `kind` written by [`Position::store`].
    fn load(kind: StoreKind, what: &str, from: &BTreeMap<String, String>) -> Option<Position> {
        match kind {
            StoreKind::Postgres => Some(Position::Postgres {
                lsn: from.get(&format!("postgres_{what}_lsn"))?.clone(),
                timeline: from
                    .get(&format!("postgres_{what}_timeline"))
                    .and_then(|t| t.parse().ok()),
            }),
            StoreKind::Redis => Some(Position::Redis {
                offset: from.get(&format!("redis_{what}_offset"))?.parse().ok()?,
            }),
        }
    }
}

/// Positions per store kind (one store of each kind per region).
pub type Positions = BTreeMap<StoreKind, Position>;

/// What a passed precheck recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrecheckEvidence {
    /// Bytes the standby trailed by (the worst store), when known.
    pub lag_bytes: Option<i64>,
    /// The loss the plan expected, in ms of writes, when known.
    pub expected_loss_ms: Option<i64>,
    /// Whether the old primary region's agents answered.
    pub from_reachable: bool,
}

/// What the fence step recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FenceEvidence {
    /// The fenced stores' positions at the fence.
    pub fenced: Positions,
    /// The stores left unfenced (unreachable, or the region declared down).
    pub unfenced: Vec<StoreKind>,
    /// When the unfenced stores had fenced themselves at the latest (their
    /// agents' lease lapsed): unix ms; None when nothing fences them.
    pub self_fenced_by_unix_ms: Option<i64>,
}

/// What a promotion, rebuild or follow recorded of its one store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreActEvidence {
    /// The store's position after it.
    pub position: Option<Position>,
    /// The store was found so already (a repeated step).
    pub already: bool,
    /// How long the agent took, when it said (rebuilds).
    pub took_ms: Option<i64>,
    /// A promotion: the newest moment before which every write the old
    /// primary acknowledged is in this store, read before it was promoted
    /// (unix ms), and what says so.
    pub newest_data: Option<(i64, String)>,
}

/// What the DNS step recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsEvidence {
    /// The value the record answers now.
    pub value: String,
    /// Route 53's change id, when a change was made.
    pub change_id: Option<String>,
}

/// The typed evidence of a step; which variant a step holds is fixed by
/// the step.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Evidence {
    /// Nothing recorded (pending, skipped, demote).
    #[default]
    None,
    /// [`Step::Precheck`].
    Precheck(PrecheckEvidence),
    /// [`Step::Fence`].
    Fence(FenceEvidence),
    /// [`Step::CatchUp`] and [`Step::PostCheck`]: each store's position.
    Positions(Positions),
    /// [`Step::Promote`], [`Step::Rebuild`], [`Step::Follow`].
    StoreAct(StoreActEvidence),
    /// [`Step::Dns`].
    Dns(DnsEvidence),
}

/// The infix of a step's stored position keys (`postgres_<what>_lsn`).
fn position_word(step: Step) -> &'static str {
    match step {
        Step::Fence => "fence",
        Step::CatchUp => "caught_up",
        Step::Promote(_) => "promoted",
        Step::PostCheck => "post_check",
        Step::Rebuild(_) | Step::Follow(_) => "rebuilt",
        Step::Precheck | Step::Dns | Step::Demote => "",
    }
}

impl Evidence {
    /// The flat map stored and shown for `step`.
    pub fn to_map(&self, step: Step) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let what = position_word(step);
        match self {
            Evidence::None => {}
            Evidence::Precheck(p) => {
                if let Some(b) = p.lag_bytes {
                    out.insert("lag_bytes".into(), b.to_string());
                }
                if let Some(ms) = p.expected_loss_ms {
                    out.insert("expected_loss_ms".into(), ms.to_string());
                }
                out.insert("from_reachable".into(), p.from_reachable.to_string());
            }
            Evidence::Fence(fe) => {
                for position in fe.fenced.values() {
                    position.store(what, &mut out);
                }
                for kind in &fe.unfenced {
                    out.insert(format!("{}_fenced", kind.name()), "false".into());
                }
                if let Some(by) = fe.self_fenced_by_unix_ms {
                    out.insert("self_fenced_by_unix_ms".into(), by.to_string());
                }
            }
            Evidence::Positions(positions) => {
                for position in positions.values() {
                    position.store(what, &mut out);
                }
            }
            Evidence::StoreAct(a) => {
                if let Some(position) = &a.position {
                    position.store(what, &mut out);
                }
                out.insert("already".into(), a.already.to_string());
                if let Some(ms) = a.took_ms {
                    out.insert("took_ms".into(), ms.to_string());
                }
                if let Some((at, basis)) = &a.newest_data {
                    out.insert("newest_data_unix_ms".into(), at.to_string());
                    out.insert("newest_data_basis".into(), basis.clone());
                }
            }
            Evidence::Dns(d) => {
                out.insert("value".into(), d.value.clone());
                if let Some(id) = &d.change_id {
                    out.insert("change_id".into(), id.clone());
                }
            }
        }
        out
    }

    /// Reads what [`Evidence::to_map`] wrote for `step` (an empty map is
    /// no evidence).
    pub fn from_map(step: Step, map: &BTreeMap<String, String>) -> Evidence {
        if map.is_empty() {
            return Evidence::None;
        }
        let what = position_word(step);
        let positions = || -> Positions {
            StoreKind::ALL
                .into_iter()
                .filter_map(|k| Some((k, Position::load(k, what, map)?)))
                .collect()
        };
        let number = |key: &str| map.get(key).and_then(|v| v.parse::<i64>().ok());
        match step {
            Step::Precheck => Evidence::Precheck(PrecheckEvidence {
                lag_bytes: number("lag_bytes"),
                expected_loss_ms: number("expected_loss_ms"),
                from_reachable: map.get("from_reachable").map(String::as_str) == Some("true"),
            }),
            Step::Fence => Evidence::Fence(FenceEvidence {
                fenced: positions(),
                unfenced: StoreKind::ALL
                    .into_iter()
                    .filter(|k| {
                        map.get(&format!("{}_fenced", k.name())).map(String::as_str)
                            == Some("false")
                    })
                    .collect(),
                self_fenced_by_unix_ms: number("self_fenced_by_unix_ms"),
            }),
            Step::CatchUp | Step::PostCheck => Evidence::Positions(positions()),
            Step::Promote(kind) | Step::Rebuild(kind) | Step::Follow(kind) => {
                Evidence::StoreAct(StoreActEvidence {
                    position: Position::load(kind, what, map),
                    already: map.get("already").map(String::as_str) == Some("true"),
                    took_ms: number("took_ms"),
                    newest_data: number("newest_data_unix_ms").map(|at| {
                        (
                            at,
                            map.get("newest_data_basis").cloned().unwrap_or_default(),
                        )
                    }),
                })
            }
            Step::Dns => Evidence::Dns(DnsEvidence {
                value: map.get("value").cloned().unwrap_or_default(),
                change_id: map.get("change_id").cloned(),
            }),
            Step::Demote => Evidence::None,
        }
    }
}

/// One step of a failover and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Which step.
    pub step: Step,
    /// Where it is.
    pub state: StepState,
    /// When it first began (ms since the epoch; 0 while pending).
    pub started_unix_ms: i64,
    /// When it finished (0 until then).
    pub ended_unix_ms: i64,
    /// What it did or why it waits, in words.
    pub detail: String,
    /// What it found.
    pub evidence: Evidence,
    /// Attempts so far.
    pub attempts: u32,
}

impl StepRecord {
    /// A step not begun.
    pub fn pending(step: Step) -> StepRecord {
        StepRecord {
            step,
            state: StepState::Pending,
            started_unix_ms: 0,
            ended_unix_ms: 0,
            detail: String::new(),
            evidence: Evidence::None,
            attempts: 0,
        }
    }
}

/// A step as stored: the names and the flat evidence map.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct StoredStep {
    name: String,
    state: String,
    started_unix_ms: i64,
    ended_unix_ms: i64,
    detail: String,
    evidence: BTreeMap<String, String>,
    attempts: u32,
}

impl Serialize for StepRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredStep {
            name: self.step.name(),
            state: self.state.name().into(),
            started_unix_ms: self.started_unix_ms,
            ended_unix_ms: self.ended_unix_ms,
            detail: self.detail.clone(),
            evidence: self.evidence.to_map(self.step),
            attempts: self.attempts,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StepRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepRecord, D::Error> {
        use serde::de::Error;
        let stored = StoredStep::deserialize(d)?;
        let step = Step::parse(&stored.name)
            .ok_or_else(|| D::Error::custom(format!("unknown failover step {:?}", stored.name)))?;
        let state = StepState::parse(&stored.state).ok_or_else(|| {
            D::Error::custom(format!("unknown failover step state {:?}", stored.state))
        })?;
        Ok(StepRecord {
            step,
            state,
            started_unix_ms: stored.started_unix_ms,
            ended_unix_ms: stored.ended_unix_ms,
            detail: stored.detail,
            evidence: Evidence::from_map(step, &stored.evidence),
            attempts: stored.attempts,
        })
    }
}

/// One failover: what was asked, every step, and the achieved figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverRecord {
    /// `<service>-<started ms>`.
    pub id: String,
    /// The service moved.
    pub service: String,
    /// The old primary region.
    pub from: String,
    /// The new primary region.
    pub to: String,
    /// A planned move: the old primary is reachable and its standbys catch up.
    pub switchover: bool,
    /// The operator accepted a loss beyond the lag gate.
    pub allow_data_loss: bool,
    /// Where it is.
    pub state: FailoverState,
    /// When it began (its precheck).
    pub started_unix_ms: i64,
    /// When it became final (0 until then).
    pub finished_unix_ms: i64,
    /// Who asked ("automatic" for the coordinator).
    pub requested_by: String,
    /// An operator asked it to stop before its next step.
    pub abort_requested: bool,
    /// Why it failed or stopped.
    pub error: String,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
    /// Bytes the standby trailed by when it began, when known.
    pub expected_loss_bytes: Option<i64>,
    /// The loss expected, in ms of writes, when known.
    pub expected_loss_ms: Option<i64>,
    /// Achieved: from the start to the post-checks passing.
    pub rto_ms: Option<i64>,
    /// Achieved: a bound on the writes lost, as time, never below what
    /// clients lost (failover/rpo.rs); None when nothing bounds it.
    pub rpo_ms: Option<i64>,
    /// What the RPO rests on, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rpo_basis: String,
    /// The loss measured when the old primary returned (failover/measured.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_measured_ms: Option<i64>,
    /// The same in words, per store kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rpo_measured: String,
    /// Achieved, when the old primary was reachable: WAL bytes the new
    /// primary did not have.
    pub lsn_gap_bytes: Option<i64>,
    /// The same for the Redis replication offset.
    pub offset_gap: Option<i64>,
    /// The leaders' epochs that drove it.
    pub epochs: Vec<u64>,
    /// Started by the coordinator when it declared the region down.
    pub automatic: bool,
    /// When the fault was first seen (the RTO of an automatic failover
    /// counts from then).
    pub detected_unix_ms: i64,
    /// An automatic failover started because this store kind of `from`
    /// failed while its agent still reported; empty when the region was
    /// declared down (its agents silent).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failed_store: String,
    /// A failback: its first steps rebuild `to`'s stores as standbys.
    pub failback: bool,
    /// A failback that stops once the standbys follow.
    pub standby_only: bool,
}

impl FailoverRecord {
    /// Whether nothing more happens to it.
    pub fn is_final(&self) -> bool {
        self.state != FailoverState::Running
    }

    /// Whether the coordinator started it because `from` was down as a
    /// whole (its agents silent): nothing there is asked to act.
    pub fn region_declared_down(&self) -> bool {
        self.automatic && self.failed_store.is_empty()
    }

    /// Its record of `step`, when it has that step.
    pub fn step(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step == step)
    }

    /// Whether `step` has begun.
    pub fn begun(&self, step: Step) -> bool {
        self.step(step)
            .is_some_and(|s| s.state != StepState::Pending)
    }

    /// Whether a promotion has begun (from then on the failover must finish).
    pub fn promoting(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.step, Step::Promote(_)) && s.state != StepState::Pending)
    }

    /// What the fence step recorded, when it has run.
    pub fn fence_evidence(&self) -> Option<&FenceEvidence> {
        match &self.step(Step::Fence)?.evidence {
            Evidence::Fence(f) => Some(f),
            _ => None,
        }
    }

    /// The position `step` recorded for `kind`, whichever evidence holds it.
    pub fn position_at(&self, step: Step, kind: StoreKind) -> Option<&Position> {
        match &self.step(step)?.evidence {
            Evidence::Fence(f) => f.fenced.get(&kind),
            Evidence::Positions(p) => p.get(&kind),
            Evidence::StoreAct(a) => a.position.as_ref().filter(|p| p.kind() == kind),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_name_reads_back_and_unknown_names_do_not() {
        let all = [
            Step::core(),
            StoreKind::ALL
                .iter()
                .flat_map(|&k| [Step::Rebuild(k), Step::Follow(k)])
                .collect(),
        ]
        .concat();
        for step in all {
            assert_eq!(Step::parse(&step.name()), Some(step), "{step}");
        }
        assert_eq!(Step::core()[3].name(), "promote postgres");
        assert_eq!(Step::Follow(StoreKind::Redis).name(), "follow redis");
        for bad in ["promote", "promote mysql", "rebuild  redis", "Fence", ""] {
            assert_eq!(Step::parse(bad), None, "{bad:?}");
        }
    }

    /// A record as an earlier version stored it (string names, flat
    /// evidence) loads typed and is stored again byte for byte the same.
    #[test]
    fn a_record_stored_by_an_earlier_version_loads_typed_and_round_trips() {
        let stored = serde_json::json!({
            "id": "app-1", "service": "app", "from": "west", "to": "east",
            "switchover": true, "allow_data_loss": false, "state": "succeeded",
            "started_unix_ms": 1, "finished_unix_ms": 9, "requested_by": "ops",
            "abort_requested": false, "error": "",
            "steps": [
                {"name": "precheck", "state": "done", "started_unix_ms": 1, "ended_unix_ms": 2,
                 "detail": "passed", "evidence": {"lag_bytes": "120", "from_reachable": "true"}, "attempts": 1},
                {"name": "fence", "state": "done", "started_unix_ms": 2, "ended_unix_ms": 3, "detail": "",
                 "evidence": {"postgres_fence_lsn": "0/3000060", "postgres_fence_timeline": "1",
                              "redis_fence_offset": "4242"}, "attempts": 1},
                {"name": "catch up", "state": "done", "started_unix_ms": 3, "ended_unix_ms": 4, "detail": "",
                 "evidence": {"postgres_caught_up_lsn": "0/3000060", "redis_caught_up_offset": "4242"}, "attempts": 1},
                {"name": "promote postgres", "state": "done", "started_unix_ms": 4, "ended_unix_ms": 5, "detail": "",
                 "evidence": {"postgres_promoted_lsn": "0/3000100", "postgres_promoted_timeline": "2",
                              "already": "false"}, "attempts": 2},
                {"name": "promote redis", "state": "skipped", "started_unix_ms": 5, "ended_unix_ms": 5,
                 "detail": "east has no redis store", "evidence": {}, "attempts": 1},
                {"name": "dns", "state": "done", "started_unix_ms": 5, "ended_unix_ms": 6, "detail": "",
                 "evidence": {"value": "10.0.0.2", "change_id": "C1"}, "attempts": 1},
                {"name": "post-check", "state": "done", "started_unix_ms": 6, "ended_unix_ms": 7, "detail": "",
                 "evidence": {"postgres_post_check_lsn": "0/3000200", "postgres_post_check_timeline": "2"}, "attempts": 1},
                {"name": "demote", "state": "done", "started_unix_ms": 7, "ended_unix_ms": 8, "detail": "",
                 "evidence": {}, "attempts": 1},
                {"name": "follow postgres", "state": "done", "started_unix_ms": 8, "ended_unix_ms": 9, "detail": "",
                 "evidence": {"postgres_rebuilt_lsn": "0/3000300", "already": "false", "took_ms": "812"}, "attempts": 1},
                {"name": "follow redis", "state": "pending", "started_unix_ms": 0, "ended_unix_ms": 0,
                 "detail": "", "evidence": {}, "attempts": 0}
            ],
            "expected_loss_bytes": 120, "expected_loss_ms": null, "rto_ms": 6, "rpo_ms": 0,
            "lsn_gap_bytes": 0, "offset_gap": 0, "epochs": [7], "automatic": false,
            "detected_unix_ms": 0, "failback": false, "standby_only": false
        });
        let f: FailoverRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(f.state, FailoverState::Succeeded);
        assert_eq!(f.steps[3].step, Step::Promote(StoreKind::Postgres));
        assert_eq!(
            f.position_at(Step::Fence, StoreKind::Postgres),
            Some(&Position::Postgres {
                lsn: "0/3000060".into(),
                timeline: Some(1)
            })
        );
        assert_eq!(
            f.position_at(Step::CatchUp, StoreKind::Redis),
            Some(&Position::Redis { offset: 4242 })
        );
        assert_eq!(
            f.steps[8].evidence,
            Evidence::StoreAct(StoreActEvidence {
                newest_data: None,
                position: Some(Position::Postgres {
                    lsn: "0/3000300".into(),
                    timeline: None
                }),
                already: false,
                took_ms: Some(812),
            })
        );
        assert!(f.fence_evidence().unwrap().unfenced.is_empty());
        assert_eq!(serde_json::to_value(&f).unwrap(), stored);
    }

    #[test]
    fn an_unfenced_store_and_a_gap_read_from_typed_positions() {
        let mut map = BTreeMap::new();
        map.insert("redis_fenced".to_string(), "false".to_string());
        map.insert("postgres_fence_lsn".to_string(), "0/5000000".to_string());
        let Evidence::Fence(fence) = Evidence::from_map(Step::Fence, &map) else {
            panic!("fence evidence expected");
        };
        assert_eq!(fence.unfenced, vec![StoreKind::Redis]);
        let promoted = Position::Postgres {
            lsn: "0/4FFFF00".into(),
            timeline: Some(2),
        };
        assert_eq!(
            fence.fenced[&StoreKind::Postgres].bytes_after(&promoted),
            Some(256)
        );
        assert_eq!(
            promoted.bytes_after(&fence.fenced[&StoreKind::Postgres]),
            Some(0)
        );
        assert_eq!(
            promoted.bytes_after(&Position::Redis { offset: 1 }),
            None,
            "positions of different kinds are not compared"
        );
    }

    #[test]
    fn a_record_with_an_unknown_step_does_not_load() {
        let stored =
            serde_json::json!({"id": "x", "steps": [{"name": "teleport", "state": "done"}]});
        let err = serde_json::from_value::<FailoverRecord>(stored).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown failover step \"teleport\""),
            "{err}"
        );
    }
}
