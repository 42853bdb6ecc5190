//! The gRPC ecosystem services on the client port: the standard health
//! service (`grpc.health.v1.Health`) and server reflection (v1 and
//! v1alpha), so load balancers, Kubernetes probes and generic gRPC tools
//! (grpcurl, Postman, grpcio's reflection client) work without our proto.
//!
//! Health per service name: `""` (the node as a whole) and
//! `chronik.Chronik` are SERVING while the node has its metadata, knows a
//! metadata leader and is not draining; `chronik.Admin` is SERVING while
//! the server runs (read-only admin calls stay open during a drain).

use crate::gate::RequestGate;
use std::sync::Arc;
use tokio::sync::watch;
use tonic_health::ServingStatus;

/// How often the health status is re-evaluated (draining has no event).
const HEALTH_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// `router` with the health and reflection services added; starts the
/// task that keeps the health status current until `stop` flips.
pub(crate) fn add_services(
    router: tonic::transport::server::Router,
    mut ready: watch::Receiver<bool>,
    gate: Arc<RequestGate>,
    mut stop: watch::Receiver<bool>,
) -> Result<tonic::transport::server::Router, tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let serving = *ready.borrow_and_update() && !gate.is_closed();
            if last != Some(serving) {
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in ["", "chronik.Chronik"] {
                    reporter.set_service_status(name, status).await;
                }
                reporter
                    .set_service_status("chronik.Admin", ServingStatus::Serving)
                    .await;
                last = Some(serving);
            }
            tokio::select! {
                _ = stop.changed() => return,
                changed = ready.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(HEALTH_POLL) => {}
            }
        }
    });
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(router
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha))
}
