//! Mutual TLS between agents, coordinators and operators: identities
//! carried in certificates, the files each holder keeps, and the private CA
//! `seawall certs` runs.

pub mod certinfo;
pub mod files;
pub mod identity;
pub mod issue;
pub mod watch;

pub use files::{TlsFiles, TlsPem};
pub use identity::{check_label, Identity};
pub use watch::WatchedTls;
