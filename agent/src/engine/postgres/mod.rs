//! The PostgreSQL source: logical dumps, physical base backups, the WAL
//! archive with its push and fetch commands, point-in-time restore and
//! integrity checks.

pub mod archive;
pub mod check;
pub mod checked;
pub mod conn;
pub mod continuity;
pub mod datadir;
pub mod logical;
pub mod physical;
pub mod receive;
pub mod recovery;
pub mod spool;
pub mod tables;
pub mod tls;
pub mod tools;
pub mod unpack;
pub mod walcmd;
pub mod walname;

pub use datadir::{backup_datadir, DatadirOptions};
pub use logical::{backup_logical, restore_logical, LogicalOptions, LogicalRestoreOptions};
pub use physical::{backup_physical, PhysicalOptions};
pub use recovery::{restore_physical, PitrOptions, RecoveryTarget};
pub use tools::PgTools;
