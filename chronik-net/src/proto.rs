//! Generated gRPC types and services (`proto/chronik.proto`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("chronik");
