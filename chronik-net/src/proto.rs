//! Generated gRPC types and services (`proto/chronik.proto`).
#![allow(clippy::all, clippy::unwrap_used, missing_docs)]

tonic::include_proto!("chronik");

/// The encoded descriptors of `proto/chronik.proto`, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chronik_descriptor.bin"));
