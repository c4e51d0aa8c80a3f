//! RDS for PostgreSQL: the instance a source names (`config`), the RDS and
//! CloudWatch calls made of it (`api`), and the tags that mark the scratch
//! instances Seawall makes (`scratch`).

pub mod api;
pub mod config;
pub mod scratch;
