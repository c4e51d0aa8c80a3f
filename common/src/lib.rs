//! Seawall's shared foundation: the repository format (chunker, blobs, packs,
//! index, trees, snapshots, locks), the storage backends it lives on, and the
//! crypto that keeps it private, and the TLS identities of the daemons. Agents and the CLI build on these types; the
//! format itself is specified in `docs/repository-format.md`.

pub mod aws;
pub mod chunker;
pub mod crypto;
pub mod duration;
pub mod error;
pub mod id;
pub mod metrics_endpoint;
pub mod percent;
pub mod point;
pub mod repo;
pub mod secret;
pub mod storage;
pub mod tasks;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
pub use id::Id;
pub use repo::Repository;
