//! How connections reach the services: TLS with certificates reloaded from
//! disk, a cap on connections and a deadline on handshakes (so idle or slow
//! sockets cannot exhaust the replica), and a gate that refuses anonymous
//! and revoked callers before any request body is read.

pub mod gate;
pub mod listener;
pub mod metrics;
pub mod server_tls;
