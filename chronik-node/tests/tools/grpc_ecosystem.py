"""A gRPC client that is not ours (grpcio) asks a Chronik node's standard
health service and lists and describes its services through server
reflection, without Chronik's proto file. Prints one JSON object.

Usage: grpc_ecosystem.py HOST:PORT
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(addr):
    channel = grpc.insecure_channel(addr)
    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in ["", "chronik.Chronik", "chronik.Admin"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    try:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        unknown = "OK"
    except grpc.RpcError as e:
        unknown = e.code().name

    db = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(db)
    services = sorted(db.get_services())
    methods = {}
    for name in services:
        sd = pool.FindServiceByName(name)
        methods[name] = [
            {"name": m.name, "input": m.input_type.full_name, "output": m.output_type.full_name}
            for m in sd.methods
        ]
    produce = pool.FindMessageTypeByName("chronik.ProduceRequest")
    print(
        json.dumps(
            {
                "health": statuses,
                "unknown_service": unknown,
                "services": services,
                "methods": methods,
                "produce_request_fields": [f.name for f in produce.fields],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
