//! Seawall's gRPC contract, generated from `proto/seawall/v1/`.

#![allow(missing_docs, clippy::all)]

pub mod codec;
pub mod kinds;

/// Version 1 of the contract.
pub mod v1 {
    tonic::include_proto!("seawall.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("seawall_v1_descriptor");
}
