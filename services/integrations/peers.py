"""The services integrations calls over gRPC: booking (teams, bookings, external blackouts), billing
(invoices, external payments), iam (the org's owners, to tell them of a revoked grant) and notify
(those emails), as typed stubs over channels opened once inside the running loop.

Integrations acts as itself on every call: inside `peers.acting(org_id)`, i.e.
`acting_as(service_context("integrations", org_id))`, so each answer is confined to that org."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cws.billing.v1 import billing_pb2_grpc
from cws.booking.v1 import booking_pb2_grpc
from cws.common.v1 import context_pb2
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from cws.notify.v1 import notify_pb2, notify_pb2_grpc
from google.protobuf import struct_pb2

from libs.common.context import service_context
from libs.common.grpc_client import Peer, acting_as, open_peer, peer_answers
from services.integrations.settings import IntegrationsSettings

if TYPE_CHECKING:
    from cws.billing.v1.billing_pb2_grpc import BillingServiceAsyncStub
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub

SERVICE = "integrations"
USERS_PAGE = 200


@dataclass
class Peers:
    booking: Peer[BookingServiceAsyncStub]
    billing: Peer[BillingServiceAsyncStub]
    iam: Peer[IamServiceAsyncStub]
    notify: Peer[NotifyServiceAsyncStub]

    @staticmethod
    @contextlib.contextmanager
    def acting(org_id: uuid.UUID | str, request_id: str = "") -> Iterator[context_pb2.RequestContext]:
        """Calls made inside act as integrations in `org_id`."""
        with acting_as(service_context(SERVICE, str(org_id), request_id)) as ctx:
            yield ctx

    async def owner_emails(self, org_id: uuid.UUID) -> list[str]:
        """The active OWNERs' addresses (the ADMINs' when the org has no owner with one)."""
        users: list[iam_pb2.User] = []
        with self.acting(org_id), peer_answers("iam"):
            offset = 0
            while True:
                page = await self.iam.stub.ListUsers(
                    iam_pb2.ListUsersRequest(limit=USERS_PAGE, offset=offset)
                )
                users.extend(page.users)
                offset += len(page.users)
                if not page.users or offset >= page.total:
                    break
        for role in ("OWNER", "ADMIN"):
            emails = sorted({u.email for u in users if u.role == role and u.active and u.email})
            if emails:
                return emails
        return []

    async def send_email(
        self, org_id: uuid.UUID, to: str, subject: str, text: str, email_type: str, dedupe_key: str
    ) -> bool:
        """One email through notify's outbox; `dedupe_key` makes a repeat one email. True if created."""
        payload = struct_pb2.Struct()
        payload.update({"to": to, "subject": subject, "text": text, "email_type": email_type})
        with self.acting(org_id), peer_answers("notify"):
            response = await self.notify.stub.Enqueue(
                notify_pb2.EnqueueRequest(kind="email", dedupe_key=dedupe_key, payload=payload)
            )
        return bool(response.created)

    async def close(self) -> None:
        for peer in (self.booking, self.billing, self.iam, self.notify):
            await peer.close()


def open_peers(settings: IntegrationsSettings) -> Peers:
    signer, deadline = settings.call_signer, settings.grpc_deadline_seconds
    return Peers(
        booking=open_peer(
            "booking",
            settings.booking_grpc_target,
            booking_pb2_grpc.BookingServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        billing=open_peer(
            "billing",
            settings.billing_grpc_target,
            billing_pb2_grpc.BillingServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        iam=open_peer(
            "iam",
            settings.iam_grpc_target,
            iam_pb2_grpc.IamServiceStub,
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
