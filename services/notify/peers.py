"""The services notify calls over gRPC: IAM (org profiles, client portal tokens) and booking (upcoming
bookings), as typed stubs over channels opened once at start-up in the running loop.

Notify calls them on its own, never for a caller: each call is made inside
`acting_as(service_context("notify", org_id))`, which the signing interceptor turns into the call's
signed context (libs/common/grpc_client.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cws.booking.v1 import booking_pb2_grpc
from cws.iam.v1 import iam_pb2_grpc

from libs.common.grpc_client import Peer, open_peer
from services.notify.settings import NotifySettings

if TYPE_CHECKING:
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub


@dataclass
class Peers:
    iam: Peer[IamServiceAsyncStub]
    booking: Peer[BookingServiceAsyncStub]

    async def close(self) -> None:
        await self.iam.close()
        await self.booking.close()


def open_peers(settings: NotifySettings) -> Peers:
    signer, deadline = settings.call_signer, settings.grpc_deadline_seconds
    return Peers(
        iam=open_peer(
            "iam",
            settings.iam_grpc_target,
            iam_pb2_grpc.IamServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        booking=open_peer(
            "booking",
            settings.booking_grpc_target,
            booking_pb2_grpc.BookingServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
    )
