//! Failover: moving a service's primary to another region as one fenced,
//! resumable workflow. A failover is a record in the store
//! (`failovers/<id>`, [`record`]) with its typed steps; the leader's
//! `failover` worker ([`driver`]) drives every running one a step at a
//! time ([`steps`]), writing each step's start and end (fenced by its
//! epoch), so a new leader resumes where its predecessor stopped and
//! repeats at most the step that was in flight (every step is idempotent).
//! The achieved figures are reckoned in [`outcome`].

pub mod action;
pub mod auto;
pub mod dns;
pub mod driver;
pub mod measured;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod rejoin;
pub mod rpo;
pub mod self_fence;
pub mod start;
pub mod steps;
pub mod stored;
