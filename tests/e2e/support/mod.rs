//! What every end-to-end test stands on: the real servers started on
//! loopback (S3, PostgreSQL, Redis, etcd, moto, a browser), the fleet of
//! coordinator replicas and agents, network namespaces, and the topology
//! builder that writes the coordinator's `[[regions]]`, `[[services]]` and
//! `[[scenarios]]`.

pub mod browser_fixture;
pub mod etcd_fixture;
pub mod fixtures;
pub mod fleet_fixture;
pub mod netns_fixture;
pub mod pg_fixture;
pub mod topology;
