//! Generated gRPC types and services (`proto/chronik.proto`).
#![allow(clippy::all, clippy::unwrap_used, missing_docs)]

tonic::include_proto!("chronik");
