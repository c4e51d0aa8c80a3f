//! End-to-end tests: the real `seawall` binary against real servers (an
//! S3-compatible server and moto's server) that the tests start on loopback.
//! A missing server binary fails the test and names `scripts/setup.sh`.

#![allow(clippy::unwrap_used, missing_docs)]

mod link_cut;
mod support;
use support::{
    browser_fixture, etcd_fixture, fixtures, fleet_fixture, netns_fixture, pg_fixture, topology,
};

mod cert_rotation;
mod certs;
mod concurrency;
mod crash;
mod damage;
mod deploy;
mod docs;
mod drills;
mod failover;
mod fences;
mod file_metadata;
mod files;
mod fleet;
mod fleet_ha;
mod hostile_agent;
mod hostile_network;
mod mirror;
mod pages;
mod pg_file_level;
mod postgres;
mod redis;
mod replication;
mod replication_checks;
mod restore_safety;
mod retention;
mod secrets;
mod state_store;
mod storage_conformance;
