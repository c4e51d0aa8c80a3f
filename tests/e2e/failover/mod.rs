//! Failover across two "regions" on this machine: a PostgreSQL primary with
//! a `pg_basebackup -R` standby, a Redis master with a replica, one agent
//! per region, a dev coordinator with the topology, and moto's server for
//! Route 53, RDS and ElastiCache (through the real aws-sdk clients). Load generators write
//! to the primaries while the failover runs; what they saw acknowledged is
//! checked in the new primaries. One file per kind of scenario; the world
//! they share is set up in `world.rs`.

mod aurora;
mod elasticache;
mod load;
mod rds;
mod route53;
mod world;
mod writable;

mod alias;
mod dns;
mod leaders;
mod switchover;
mod unplanned;
