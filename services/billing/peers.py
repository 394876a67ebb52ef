"""The services billing calls over gRPC: iam (an org's name and time zone when its event has not
arrived), booking (the price and client of a completed booking, the backfill's list of completed
bookings), notify (invoice emails) and media (the stored bytes the usage report checks; None when
MEDIA_GRPC_TARGET is empty: media is not deployed), as typed stubs over channels opened once at start-up.

Billing calls them on its own, never for a caller: each call is made inside
`acting_as(service_context("billing", org_id))`, which the signing interceptor turns into the call's
signed context (libs/common/grpc_client.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cws.booking.v1 import booking_pb2_grpc
from cws.iam.v1 import iam_pb2_grpc
from cws.media.v1 import media_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc

from libs.common.grpc_client import Peer, open_peer
from services.billing.settings import BillingSettings

if TYPE_CHECKING:
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub
    from cws.media.v1.media_pb2_grpc import MediaServiceAsyncStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub


@dataclass
class Peers:
    iam: Peer[IamServiceAsyncStub]
    booking: Peer[BookingServiceAsyncStub]
    notify: Peer[NotifyServiceAsyncStub]
    media: Peer[MediaServiceAsyncStub] | None = None

    async def close(self) -> None:
        await self.iam.close()
        await self.booking.close()
        await self.notify.close()
        if self.media is not None:
            await self.media.close()


def open_peers(settings: BillingSettings) -> Peers:
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
        notify=open_peer(
            "notify",
            settings.notify_grpc_target,
            notify_pb2_grpc.NotifyServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        media=open_peer(
            "media",
            settings.media_grpc_target,
            media_pb2_grpc.MediaServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        )
        if settings.media_grpc_target
        else None,
    )
