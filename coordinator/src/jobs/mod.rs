//! Layer 3: the replica and what it leads. [`coordinator`] holds the
//! replica's shared state and its lead; [`lifecycle`] is the job state
//! machine (create, settle, retry, cancel); [`dispatch`] hands due jobs to
//! agents; [`scheduler`] makes the jobs (and fires the slots registered by
//! higher layers, such as drills) that cron asks for.

pub mod coordinator;
pub mod dispatch;
pub mod lifecycle;
pub mod metrics;
pub mod scheduler;

pub use coordinator::{Coordinator, Lead};
pub use lifecycle::AttemptFailure;
