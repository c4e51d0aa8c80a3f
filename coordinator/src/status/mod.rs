//! The status page: `page.rs` gathers and renders what a person checks
//! first (regions and agents, each service's stores and backups against
//! its RPO, the failover running, the last drill of each scenario), and
//! `server.rs` serves it, with the drills' report pages, over HTTPS to
//! operators only.

pub mod page;
pub mod server;
