"""The services media calls over gRPC: booking (does a booking exist in the org, who is assigned to
it) and notify (a worker told a retake is needed), as typed stubs over channels opened once at start-up.

Media calls them on its own, never as its caller: each call is made inside
`acting_as(service_context("media", org_id))`, so the signed context names media (a service key may
claim no one else) and booking still confines the answer to that org: another org's booking is
NOT_FOUND, exactly as for the caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc

from libs.common.context import service_context
from libs.common.grpc_client import Peer, acting_as, open_peer, peer_answers
from services.media.settings import MediaSettings

if TYPE_CHECKING:
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub


@dataclass(frozen=True)
class BookingFacts:
    """What media needs to know of a booking: that it exists in the org, and who works it."""

    booking_id: uuid.UUID
    status: str
    worker_ids: frozenset[str]


@dataclass
class Peers:
    booking: Peer[BookingServiceAsyncStub]
    notify: Peer[NotifyServiceAsyncStub]

    async def booking_facts(self, org_id: uuid.UUID, booking_id: uuid.UUID) -> BookingFacts:
        """The booking in `org_id`; NotFound (booking_not_found) when it is not the org's."""
        with (
            acting_as(service_context("media", str(org_id))),
            peer_answers("booking", refused_means_not_found=True),
        ):
            response = await self.booking.stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id=str(booking_id))
            )
        return BookingFacts(
            booking_id=booking_id,
            status=response.booking.status,
            worker_ids=frozenset(response.booking.worker_ids),
        )

    async def close(self) -> None:
        await self.booking.close()
        await self.notify.close()


def open_peers(settings: MediaSettings) -> Peers:
    signer, deadline = settings.call_signer, settings.grpc_deadline_seconds
    return Peers(
        booking=open_peer(
            "booking",
            settings.booking_grpc_target,
            booking_pb2_grpc.BookingServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        notify=open_peer(
            "notify",
            settings.notify_grpc_target,
            notify_pb2_grpc.NotifyServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
    )
