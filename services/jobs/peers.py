"""The services jobs call over gRPC (IAM for the org list, booking, billing, media, notify and integrations
for the work), as typed stubs over channels opened once inside the running loop. Media is None when
MEDIA_GRPC_TARGET is empty: media is not deployed (its jobs are skipped; an erasure has no photos to
delete); integrations likewise with INTEGRATIONS_GRPC_TARGET empty (gcal-sync and qbo-sync are skipped).

Every call acts as the jobs service itself: the runner makes each job's calls inside
`acting_as(service_context("jobs", org_id))` (execution.py), and the org listing acts with no org."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cws.billing.v1 import billing_pb2_grpc
from cws.booking.v1 import booking_pb2_grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from cws.integrations.v1 import integrations_pb2_grpc
from cws.media.v1 import media_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc

from libs.common.context import service_context
from libs.common.grpc_client import Peer, acting_as, open_peer
from services.jobs.settings import JobsSettings

if TYPE_CHECKING:
    from cws.billing.v1.billing_pb2_grpc import BillingServiceAsyncStub
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub
    from cws.integrations.v1.integrations_pb2_grpc import IntegrationsServiceAsyncStub
    from cws.media.v1.media_pb2_grpc import MediaServiceAsyncStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub

ORG_PAGE = 500


@dataclass
class Peers:
    iam: Peer[IamServiceAsyncStub]
    booking: Peer[BookingServiceAsyncStub]
    billing: Peer[BillingServiceAsyncStub]
    media: Peer[MediaServiceAsyncStub] | None
    notify: Peer[NotifyServiceAsyncStub]
    integrations: Peer[IntegrationsServiceAsyncStub] | None = None

    async def org_ids(self) -> AsyncIterator[str]:
        """Every org, keyset-paged through IAM's ListOrgs (a call only suite services may make)."""
        after = ""
        while True:
            with acting_as(service_context("jobs")):
                page = await self.iam.stub.ListOrgs(
                    iam_pb2.ListOrgsRequest(after_org_id=after, limit=ORG_PAGE)
                )
            for org in page.orgs:
                yield org.org_id
            if len(page.orgs) < ORG_PAGE:
                return
            after = page.orgs[-1].org_id

    async def close(self) -> None:
        for peer in (self.iam, self.booking, self.billing, self.media, self.notify, self.integrations):
            if peer is not None:
                await peer.close()


def open_peers(settings: JobsSettings) -> Peers:
    signer, deadline = settings.call_signer, settings.job_call_deadline_seconds
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
        billing=open_peer(
            "billing",
            settings.billing_grpc_target,
            billing_pb2_grpc.BillingServiceStub,
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
        notify=open_peer(
            "notify",
            settings.notify_grpc_target,
            notify_pb2_grpc.NotifyServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        ),
        integrations=open_peer(
            "integrations",
            settings.integrations_grpc_target,
            integrations_pb2_grpc.IntegrationsServiceStub,
            signer=signer,
            deadline_seconds=deadline,
        )
        if settings.integrations_grpc_target
        else None,
    )
