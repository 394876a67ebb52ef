"""The gateway's gRPC clients, created once at start-up inside the running loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc
from cws.booking.v1 import booking_pb2_grpc
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from cws.iam.v1 import iam_pb2_grpc
from cws.jobs.v1 import jobs_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import HTTPConnection

from gateway.principal import Principal, context_for
from gateway.problems import from_grpc
from gateway.settings import GatewaySettings
from libs.common.grpc_client import ServiceClient


@dataclass
class Backend:
    name: str
    client: ServiceClient
    ops: ops_pb2_grpc.OpsServiceStub
    health: health_pb2_grpc.HealthStub

    async def call(
        self, conn: HTTPConnection, method: str, request: Any, principal: Principal | None = None
    ) -> Any:
        try:
            return await self.client.call(method, request, context_for(conn, principal))
        except grpc.aio.AioRpcError as error:
            raise from_grpc(error, self.name) from None

    async def readiness(self, timeout: float = 2.0) -> dict[str, Any]:
        """The service's own checks, plus its gRPC health status; never raises."""
        started = time.perf_counter()
        try:
            health, ready = await asyncio.gather(
                self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout),
                self.ops.GetReadiness(ops_pb2.GetReadinessRequest(), timeout=timeout),
            )
            return {
                "reachable": True,
                "serving": health.status == health_pb2.HealthCheckResponse.SERVING,
                "checks": [MessageToDict(c, preserving_proto_field_name=True) for c in ready.checks],
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        except grpc.aio.AioRpcError as error:
            return {
                "reachable": False,
                "serving": False,
                "checks": [],
                "error": error.code().name,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }


def make_backend(name: str, target: str, stub_factory: Any, secret: str, deadline: float) -> Backend:
    client = ServiceClient(target, stub_factory, secret=secret, deadline_seconds=deadline)
    return Backend(
        name, client, ops_pb2_grpc.OpsServiceStub(client.channel), health_pb2_grpc.HealthStub(client.channel)
    )


@dataclass
class Backends:
    iam: Backend
    booking: Backend
    notify: Backend
    jobs: Backend

    def all(self) -> list[Backend]:
        return [self.iam, self.booking, self.notify, self.jobs]

    async def close(self) -> None:
        for backend in self.all():
            await backend.client.close()


def build_backends(settings: GatewaySettings) -> Backends:
    secret, deadline = settings.internal_context_secret, settings.grpc_deadline_seconds
    return Backends(
        iam=make_backend("iam", settings.iam_grpc_target, iam_pb2_grpc.IamServiceStub, secret, deadline),
        booking=make_backend(
            "booking", settings.booking_grpc_target, booking_pb2_grpc.BookingServiceStub, secret, deadline
        ),
        notify=make_backend(
            "notify", settings.notify_grpc_target, notify_pb2_grpc.NotifyServiceStub, secret, deadline
        ),
        jobs=make_backend("jobs", settings.jobs_grpc_target, jobs_pb2_grpc.JobsServiceStub, secret, deadline),
    )
