"""The services notify calls over gRPC, with channels opened once at start-up in the running loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cws.booking.v1 import booking_pb2_grpc
from cws.iam.v1 import iam_pb2_grpc

from libs.common.context import service_context
from libs.common.grpc_client import ServiceClient
from services.notify.settings import NotifySettings


@dataclass
class Peers:
    iam: ServiceClient
    booking: ServiceClient

    async def call_iam(self, method: str, request: Any, org_id: str) -> Any:
        """An IAM call in `org_id` as the notify service itself (consumers have no caller)."""
        return await self.iam.call(method, request, service_context("notify", org_id))

    async def call_booking(self, method: str, request: Any, org_id: str) -> Any:
        return await self.booking.call(method, request, service_context("notify", org_id))

    async def close(self) -> None:
        await self.iam.close()
        await self.booking.close()


def open_peers(settings: NotifySettings) -> Peers:
    secret, deadline = settings.internal_context_secret, settings.grpc_deadline_seconds
    return Peers(
        iam=ServiceClient(
            settings.iam_grpc_target, iam_pb2_grpc.IamServiceStub, secret=secret, deadline_seconds=deadline
        ),
        booking=ServiceClient(
            settings.booking_grpc_target,
            booking_pb2_grpc.BookingServiceStub,
            secret=secret,
            deadline_seconds=deadline,
        ),
    )
