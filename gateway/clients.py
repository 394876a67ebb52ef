"""The gateway's gRPC clients, created once at start-up inside the running loop.

Each backend is a typed stub over a channel with two interceptors: libs/common's, which signs the
request context and applies the deadline, and `ProblemInterceptor`, which turns a service's error
status into the Problem+JSON the caller gets. Routes receive the stubs through gateway/stubs.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

import grpc
from cws.billing.v1 import billing_pb2_grpc
from cws.booking.v1 import booking_pb2_grpc
from cws.common.v1 import ops_pb2, ops_pb2_grpc, privacy_pb2_grpc, views_pb2_grpc
from cws.iam.v1 import iam_pb2_grpc
from cws.integrations.v1 import integrations_pb2_grpc
from cws.jobs.v1 import jobs_pb2_grpc
from cws.media.v1 import media_pb2_grpc
from cws.notify.v1 import notify_pb2_grpc
from google.protobuf.json_format import MessageToDict
from grpc.aio._interceptor import UnaryUnaryCallResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.problems import from_grpc
from gateway.settings import GatewaySettings
from libs.common.grpc_client import Peer, StubT, open_peer

if TYPE_CHECKING:
    from cws.billing.v1.billing_pb2_grpc import BillingServiceAsyncStub
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub
    from cws.common.v1.privacy_pb2_grpc import PrivacyServiceAsyncStub
    from cws.common.v1.views_pb2_grpc import ViewsServiceAsyncStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub
    from cws.integrations.v1.integrations_pb2_grpc import IntegrationsServiceAsyncStub
    from cws.jobs.v1.jobs_pb2_grpc import JobsServiceAsyncStub
    from cws.media.v1.media_pb2_grpc import MediaServiceAsyncStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub


class ProblemInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A failed call raises the ProblemError for its status (gateway/problems.py), naming the service."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise from_grpc(error, self.service) from None


class StreamProblemInterceptor(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """The same for client-streaming calls (media's upload). A class of its own: grpc.aio files an
    interceptor under the first call shape it implements only. The answer is awaited here and handed
    on as an already-answered call, which is what grpc.aio awaits next."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            raise from_grpc(error, self.service) from None
        return UnaryUnaryCallResponse(response)


class ServerStreamProblemInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The same for server-streaming calls (media's OpenPhotoLink): an error read from the stream
    raises the ProblemError for its status. The messages are handed on as an iterator; closing it
    early (the HTTP client went away) cancels the call."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)

        async def messages() -> AsyncIterator[Any]:
            try:
                async for message in call:
                    yield message
            except grpc.aio.AioRpcError as error:
                raise from_grpc(error, self.service) from None
            finally:
                call.cancel()  # a no-op once the call is done

        return messages()


@dataclass
class Backend(Generic[StubT]):
    """One service: its typed stub, and the health and ops probes of /readyz (which carry no context)."""

    peer: Peer[StubT]
    ops: ops_pb2_grpc.OpsServiceAsyncStub  # unsigned probes (readiness)
    health: Any  # grpc_health ships no type stubs
    # The same OpsService on the signing channel, for what needs a caller (feature flags).
    signed_ops: ops_pb2_grpc.OpsServiceAsyncStub
    # The services' shares of the suite-wide views and of the data-protection playbook (issue 13),
    # on the signing channel. Only VIEW_SOURCES serve them (Backends.views/privacy).
    views: ViewsServiceAsyncStub
    privacy: PrivacyServiceAsyncStub

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def stub(self) -> StubT:
        return self.peer.stub

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

    async def close(self) -> None:
        await self.peer.close()


def make_backend(
    name: str, target: str, stub_class: Callable[[grpc.aio.Channel], StubT], settings: GatewaySettings
) -> Backend[StubT]:
    peer = open_peer(
        name,
        target,
        stub_class,
        signer=settings.call_signer,
        deadline_seconds=settings.grpc_deadline_seconds,
        interceptors=[
            ProblemInterceptor(name),
            StreamProblemInterceptor(name),
            ServerStreamProblemInterceptor(name),
        ],
    )
    return Backend(
        peer,
        ops_pb2_grpc.OpsServiceStub(peer.plain_channel),
        health_pb2_grpc.HealthStub(peer.plain_channel),
        ops_pb2_grpc.OpsServiceStub(peer.channel),
        views_pb2_grpc.ViewsServiceStub(peer.channel),
        privacy_pb2_grpc.PrivacyServiceStub(peer.channel),
    )


# The services that serve ViewsService and PrivacyService, in the order their answers are merged.
VIEW_SOURCES = ("iam", "booking", "billing", "media", "notify")


@dataclass
class Backends:
    iam: Backend[IamServiceAsyncStub]
    booking: Backend[BookingServiceAsyncStub]
    billing: Backend[BillingServiceAsyncStub]
    media: Backend[MediaServiceAsyncStub]
    notify: Backend[NotifyServiceAsyncStub]
    jobs: Backend[JobsServiceAsyncStub]
    # None when INTEGRATIONS_GRPC_TARGET is empty: not deployed here (its routes answer 503 saying so,
    # and /readyz does not wait for it).
    integrations: Backend[IntegrationsServiceAsyncStub] | None

    def all(self) -> list[Backend[Any]]:
        optional = [self.integrations] if self.integrations is not None else []
        return [self.iam, self.booking, self.billing, self.media, self.notify, self.jobs, *optional]

    def views(self) -> dict[str, ViewsServiceAsyncStub]:
        """ViewsService of every service that serves it, by service name."""
        return {name: getattr(self, name).views for name in VIEW_SOURCES}

    def privacy(self) -> dict[str, PrivacyServiceAsyncStub]:
        """PrivacyService of every service that serves it, by service name."""
        return {name: getattr(self, name).privacy for name in VIEW_SOURCES}

    async def close(self) -> None:
        for backend in self.all():
            await backend.close()


def build_backends(settings: GatewaySettings) -> Backends:
    return Backends(
        iam=make_backend("iam", settings.iam_grpc_target, iam_pb2_grpc.IamServiceStub, settings),
        booking=make_backend(
            "booking", settings.booking_grpc_target, booking_pb2_grpc.BookingServiceStub, settings
        ),
        billing=make_backend(
            "billing", settings.billing_grpc_target, billing_pb2_grpc.BillingServiceStub, settings
        ),
        media=make_backend("media", settings.media_grpc_target, media_pb2_grpc.MediaServiceStub, settings),
        notify=make_backend(
            "notify", settings.notify_grpc_target, notify_pb2_grpc.NotifyServiceStub, settings
        ),
        jobs=make_backend("jobs", settings.jobs_grpc_target, jobs_pb2_grpc.JobsServiceStub, settings),
        integrations=make_backend(
            "integrations",
            settings.integrations_grpc_target,
            integrations_pb2_grpc.IntegrationsServiceStub,
            settings,
        )
        if settings.integrations_grpc_target
        else None,
    )
