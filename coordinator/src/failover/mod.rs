//! Failover: moving a service's primary to another region as one fenced,
//! resumable workflow. A failover is a record in the store
//! (`failovers/<id>`) with its steps; the leader's `failover` worker drives
//! every running one a step at a time, writing each step's start and end
//! (fenced by its epoch), so a new leader resumes where its predecessor
//! stopped and repeats at most the step that was in flight (every step is
//! idempotent).

pub mod auto;
pub mod dns;
pub mod plan;
pub mod primaries;
pub mod rejoin;
pub mod start;
pub mod steps;
