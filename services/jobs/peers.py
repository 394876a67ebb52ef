"""The services jobs call over gRPC (IAM for the org list, booking and notify for the work), with
channels opened once inside the running loop. Every call acts as the jobs service itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cws.booking.v1 import booking_pb2_grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc

from libs.common.context import service_context
from libs.common.grpc_client import ServiceClient
from services.jobs.settings import JobsSettings

ORG_PAGE = 500


@dataclass
class Peers:
    iam: ServiceClient
    booking: ServiceClient
    notify: ServiceClient

    async def call_booking(self, method: str, request: Any, org_id: str = "") -> Any:
        return await self.booking.call(method, request, service_context("jobs", org_id))

    async def call_notify(self, method: str, request: Any, org_id: str = "") -> Any:
        return await self.notify.call(method, request, service_context("jobs", org_id))

    async def org_ids(self) -> AsyncIterator[str]:
        """Every org, keyset-paged through IAM's ListOrgs (a call only suite services may make)."""
        after = ""
        while True:
            page = await self.iam.call(
                "ListOrgs",
                iam_pb2.ListOrgsRequest(after_org_id=after, limit=ORG_PAGE),
                service_context("jobs"),
            )
            for org in page.orgs:
                yield org.org_id
            if len(page.orgs) < ORG_PAGE:
                return
            after = page.orgs[-1].org_id

    async def close(self) -> None:
        for client in (self.iam, self.booking, self.notify):
            await client.close()


def open_peers(settings: JobsSettings) -> Peers:
    secret, deadline = settings.internal_context_secret, settings.job_call_deadline_seconds

    def client(target: str, stub: Any) -> ServiceClient:
        return ServiceClient(target, stub, secret=secret, deadline_seconds=deadline)

    return Peers(
        iam=client(settings.iam_grpc_target, iam_pb2_grpc.IamServiceStub),
        booking=client(settings.booking_grpc_target, booking_pb2_grpc.BookingServiceStub),
        notify=client(settings.notify_grpc_target, notify_pb2_grpc.NotifyServiceStub),
    )
