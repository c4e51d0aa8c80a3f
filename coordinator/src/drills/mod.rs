//! Drills: restore and failover drills that prove, with numbers, that a
//! service comes back within its objectives. `scenarios.rs` maps the
//! runbook's objectives table onto the drill that exercises each row;
//! `verdict.rs` judges a drill's figures against them; `report.rs` renders
//! a drill's journal as the page a person reads.

pub mod report;
pub mod scenarios;
pub mod verdict;
