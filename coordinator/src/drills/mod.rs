//! Drills: restore and failover drills that prove, with numbers, that a
//! service comes back within its objectives. The scenarios themselves (the
//! runbook's objectives table, each row's drill) are configuration, in
//! `model::scenarios`; `schedule.rs` fires the scheduled ones;
//! `verdict.rs` judges a drill's figures against them; `report.rs` renders
//! a drill's journal as the page a person reads; `journal.rs` keeps the
//! records, `launch.rs` starts a drill from a request, `restore.rs` runs
//! restore drills through the agents' jobs, `failover.rs` runs a switchover
//! and failback as a drill, and `worker.rs` moves running drills on and
//! settles them.

pub mod failover;
pub mod journal;
pub mod launch;
pub mod metrics;
pub mod report;
pub mod restore;
pub mod schedule;
pub mod verdict;
pub mod worker;
