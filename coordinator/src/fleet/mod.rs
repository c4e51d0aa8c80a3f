//! Layer 2: the fleet of agents as the replica sees it. Who is connected
//! ([`registry`]), requests sent down their streams and the answers waited
//! for ([`pending`]), operator and agent identities ([`auth`]), revoked
//! certificates ([`revocation`]), what agents sent that they may not
//! ([`offences`]), and the task tree every background worker runs in
//! ([`workers`]).

pub mod auth;
pub mod metrics;
pub mod offences;
pub mod pending;
pub mod registry;
pub mod revocation;
pub mod workers;
